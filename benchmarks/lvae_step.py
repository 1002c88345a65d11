"""Ladder VAE training step: kvae's ``fit`` against the same network trained by a hand-written Keras
``train_step``, interleaved in one process (the configuration of the long run in apps/long_runs).

The baseline (:class:`HandWrittenLVAE`) calls the *same Keras layers* (kvae's bottom-up path, the
posterior's heads, the top-down path's prior heads, projections, gated residual blocks and
upsamplings, the likelihood's projection, the learned top prior's weights) and writes the objective
directly in TensorFlow: the precision-weighted merge, the reparameterised draws, each group's
closed-form Gaussian KL and the Bernoulli log-likelihood.  No TFP distribution, no ``Terms``,
``LatentGroup`` or model machinery.  Before timing, the two per-example losses are checked equal on
the same weights and noise, so the baseline computes what kvae computes.

    python benchmarks/lvae_step.py [--quick] [--data-dir DIR] [--out lvae_step.json]
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _handwritten  # noqa: E402
import _timing  # noqa: E402

#: the long run's model (apps/long_runs/lvae-binarized-mnist.json) without the KL warm-up (beta = 1 in both)
CONFIG = dict(groups=3, channels=64, latent_channels=32, blocks=2)


def hand_written_lvae(model):
    """A Keras model training ``model``'s layers with a hand-written ladder-VAE objective."""
    import tensorflow as tf

    top_down, heads = model.decoder_network, model.posterior.heads
    shapes = [tuple(s) for s in model.group_shapes]
    sizes = [int(np.prod(s)) for s in shapes]

    def positive(raw):
        return tf.nn.softplus(raw) + 1e-3

    def per_example_loss(x, eps):
        features = model.encoder_network(x, training=True)  # bottom group first
        noise = tf.split(eps, sizes, axis=-1)
        n = tf.shape(x)[0]
        h, kl = None, 0.0
        for i, shape in enumerate(shapes):  # top group first
            j = len(shapes) - 1 - i
            mu_hat, raw = tf.split(heads[j](features[j]), 2, axis=-1)
            s_hat = positive(raw)
            if i == 0:
                mu_p = tf.broadcast_to(model.prior.top_loc, tf.shape(mu_hat))
                s_p = tf.broadcast_to(positive(model.prior.top_raw_scale), tf.shape(mu_hat))
                mu_q, s_q = mu_hat, s_hat
            else:
                mu_p, raw_p = tf.split(top_down.prior_heads[i](h), 2, axis=-1)
                s_p = positive(raw_p)
                prec_hat, prec_p = s_hat ** -2, s_p ** -2
                var_q = 1.0 / (prec_hat + prec_p)
                mu_q, s_q = (mu_hat * prec_hat + mu_p * prec_p) * var_q, tf.sqrt(var_q)
            z = mu_q + s_q * tf.reshape(noise[i], [n, *shape])
            kl += tf.reduce_sum(tf.math.log(s_p) - tf.math.log(s_q)
                                + (tf.square(s_q) + tf.square(mu_q - mu_p)) / (2.0 * tf.square(s_p)) - 0.5,
                                axis=[1, 2, 3])
            z_feat = top_down.z_in[i](z)
            h = z_feat if h is None else h + z_feat
            for block in top_down.blocks[i]:
                h = block(h)
            h = top_down.up[i](tf.nn.elu(h))
            th, tw = top_down.target_size(i)
            h = h[:, :th, :tw, :]
        (logits,) = model.likelihood(h, training=True)
        log_px = tf.reduce_sum(logits * x - tf.nn.relu(logits) - tf.nn.softplus(-tf.abs(logits)), [1, 2, 3])
        return -log_px + kl

    parts = [model.encoder_network, model.posterior, top_down, model.likelihood, model.prior]
    return _handwritten.keras_model(model, parts, per_example_loss, "hand_written_lvae")


loss_parity = _handwritten.loss_parity


def run(quick=False, data_dir=None, blocks=None, steps_per_block=None):
    import keras
    import tensorflow as tf

    import kvae
    from vlae_step import _images

    blocks = blocks or (2 if quick else 6)
    steps_per_block = steps_per_block or (2 if quick else 6)
    x, source = _images(data_dir, 1000)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(100, drop_remainder=True).repeat()

    def lvae():
        keras.utils.set_random_seed(0)
        m = kvae.LadderVAE(input_shape=(28, 28, 1), seed=0, **CONFIG)
        m.compile(optimizer=keras.optimizers.Adamax(2e-3, use_ema=True, ema_momentum=0.999))
        return m

    kvae_model = lvae()
    base_net = lvae()  # its own weights: the baseline trains a separate copy of the same layers
    baseline = hand_written_lvae(base_net)
    baseline.compile(optimizer=keras.optimizers.Adamax(2e-3, use_ema=True, ema_momentum=0.999))
    baseline(x[:2])
    parity, scale = loss_parity(base_net, baseline, x[:20])
    timed = _timing.interleaved_fit({"kvae": kvae_model, "baseline": baseline}, ds, blocks, steps_per_block)
    return {
        "benchmark": "lvae_step",
        "model": ("LadderVAE, the long run's sizes (3 groups of 32 channels at 14x14, 7x7, 4x4; 64-channel paths; "
                  "2 gated residual blocks per group and path), batch 100, Adamax 2e-3 with the 0.999 average"),
        "data": source,
        "baseline": "same Keras layers, objective hand-written in TensorFlow (no TFP, no kvae model machinery)",
        "loss_parity_max_abs": parity, "loss_mean_abs": scale,
        "results": timed,
        "ratio_kvae_over_baseline": _timing.ratio(timed, "kvae", "baseline"),
        "target_ratio": 1.10,
        "epoch_seconds_50k_from_median_step": timed["kvae"]["steps"]["median"] * 500,
    }


if __name__ == "__main__":
    _timing.main(run, __doc__)
