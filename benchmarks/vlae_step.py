"""VLAE training step: kvae's ``fit`` against the same network trained by a hand-written Keras
``train_step``, plus kvae under XLA and under ``mixed_bfloat16``, interleaved in one process.

The baseline (:class:`HandWrittenVLAE`) calls the *same Keras layers* (kvae's encoder network,
posterior head, MADEs, decoder network and masked convolutions are plain Keras layers) and writes
the objective directly in TensorFlow: reparameterised Gaussian, Bernoulli log-likelihood of the
PixelCNN logits, log q(z|x) and the MAF prior's inverse pass and log-determinant by hand, the
VLAE's free-bits floor, Adamax 2e-3 with the 0.998 weight average.  No TFP distribution, bijector
or model machinery.  Before timing, the two losses are checked equal on the same weights and noise,
so the baseline computes what kvae computes.

    python benchmarks/vlae_step.py [--quick] [--data-dir DIR] [--out vlae_step.json]
"""
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _handwritten  # noqa: E402
import _timing  # noqa: E402

#: The configuration vlae_step.json was measured with: MLP encoder, the z map seen by every masked layer
#: (VLAE's defaults before the ResNet encoder and input conditioning; the pretrained VLAE's).
MEASURED_CONFIG = dict(network="mlp", conditioning="every_layer")


def hand_written_vlae(model):
    """A Keras model training ``model``'s layers with a hand-written VLAE objective."""
    import tensorflow as tf

    floor = model.free_bits_per_dim * model.latent_dim
    half_log_2pi = 0.5 * math.log(2 * math.pi)

    def per_example_loss(x, eps):
        loc, scale = model.posterior(model.encoder_network(x, training=True), training=True)
        z = loc + scale * eps
        (cond,) = model.likelihood.raw_params(model.decoder_network(z, training=True), split=False)
        logits = model.likelihood.network(x, cond)
        log_px = tf.reduce_sum(logits * x - tf.nn.relu(logits) - tf.nn.softplus(-tf.abs(logits)), [1, 2, 3])
        log_q = tf.reduce_sum(-0.5 * tf.square(eps) - tf.math.log(scale) - half_log_2pi, -1)
        u, log_det = z, 0.0
        for made in reversed(model.prior.mades):  # the MAF's inverse: the last step is undone first
            shift, log_scale = made(u)
            u = (u - shift) * tf.exp(-log_scale)
            log_det -= tf.reduce_sum(log_scale, -1)
        log_p = tf.reduce_sum(-0.5 * tf.square(u) - half_log_2pi, -1) + log_det
        kl = log_q - log_p
        kl = tf.where(tf.reduce_mean(kl) >= floor, kl, floor * tf.ones_like(kl))
        return -log_px + kl

    parts = [model.encoder_network, model.posterior, model.decoder_network, model.likelihood, *model.prior.mades]
    return _handwritten.keras_model(model, parts, per_example_loss, "hand_written_vlae")


loss_parity = _handwritten.loss_parity


def _images(data_dir, n):
    import kvae
    from kvae.data import datasets as data

    try:
        return data.load("binarized_mnist", "train", data_dir).arrays()[0][:n], "binarized_mnist"
    except kvae.errors.DataError:
        rng = np.random.RandomState(0)
        return (rng.uniform(size=(n, 28, 28, 1)) < 0.13).astype("float32"), "random binary 28x28 (no data file)"


def run(quick=False, data_dir=None, blocks=None, steps_per_block=None):
    import keras
    import tensorflow as tf

    import kvae

    blocks = blocks or (2 if quick else 8)
    steps_per_block = steps_per_block or (3 if quick else 10)
    x, source = _images(data_dir, 2000)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(100, drop_remainder=True).repeat()

    def vlae(policy="float32", jit=False):
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(policy)
        try:
            keras.utils.set_random_seed(0)
            m = kvae.VLAE(input_shape=(28, 28, 1), **MEASURED_CONFIG)
            m.compile(optimizer=keras.optimizers.Adamax(2e-3, use_ema=True, ema_momentum=0.998), jit_compile=jit)
            m(x[:2])
            return m
        finally:
            keras.mixed_precision.set_global_policy(previous)

    kvae_model = vlae()
    base_net = vlae()  # its own weights: the baseline trains a separate copy of the same layers
    baseline = hand_written_vlae(base_net)
    baseline.compile(optimizer=keras.optimizers.Adamax(2e-3, use_ema=True, ema_momentum=0.998))
    baseline(x[:2])
    parity, scale = loss_parity(base_net, baseline, x[:50])
    models = {"kvae": kvae_model, "baseline": baseline, "kvae_xla": vlae(jit=True),
              "kvae_mixed_bfloat16": vlae("mixed_bfloat16")}
    timed = _timing.interleaved_fit(models, ds, blocks, steps_per_block)
    per_step = timed["kvae"]["steps"]["median"]
    # an independent clock: one fit call of n steps, wall time / n (no per-batch callback)
    import time

    n = 5 if quick else 30
    start = time.perf_counter()
    kvae_model.fit(ds, epochs=1, steps_per_epoch=n, verbose=0)
    whole_fit = (time.perf_counter() - start) / n
    from _profile import profile

    xb = x[:100]
    profiles = {"kvae": profile(lambda: kvae_model.train_on_batch(xb), repeats=2 if quick else 5),
                "baseline": profile(lambda: baseline.train_on_batch(xb), repeats=2 if quick else 5)}
    return {
        "benchmark": "vlae_step",
        "profile_train_step": profiles,
        "model": "VLAE, paper sizes (latent 64, AF prior 4 x MADE 640x3, PixelCNN 6 x 3x3, 12 filters), batch 100",
        "data": source,
        "baseline": "same Keras layers, objective hand-written in TensorFlow (no TFP, no kvae model machinery)",
        "loss_parity_max_abs": parity, "loss_mean_abs": scale,
        "results": timed,
        "ratio_kvae_over_baseline": _timing.ratio(timed, "kvae", "baseline"),
        "ratio_xla_over_kvae": _timing.ratio(timed, "kvae_xla", "kvae"),
        "ratio_bfloat16_over_kvae": _timing.ratio(timed, "kvae_mixed_bfloat16", "kvae"),
        "target_ratio": 1.10,
        "epoch_seconds_50k_from_median_step": per_step * 500,
        "independent_check": {"steps": n, "fit_wall_seconds_per_step": whole_fit,
                              "ratio_to_per_batch_median": whole_fit / per_step},
    }


if __name__ == "__main__":
    _timing.main(run, __doc__)
