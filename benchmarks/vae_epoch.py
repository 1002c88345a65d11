"""MLP VAE training step: kvae's VAE against a minimal hand-written Keras 3 ``train_step`` of the
same network, each with and without XLA, interleaved in one process, one step timed at a time.

Both train an MLP VAE (784-500-500-50, Bernoulli decoder, Adam 1e-3, batch 100) on static
binarised MNIST (``--data-dir`` / ``$KVAE_DATA_DIR``; random binary images otherwise).  Reports
per configuration the median step and its spread after warm-up, the seconds per 50000-image
epoch that the median implies, and the ratios kvae / baseline (target <= 1.05).

    python benchmarks/vae_epoch.py [--quick] [--data-dir DIR] [--out results.json]
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402


def _baseline_model(input_shape, latent_dim, hidden):
    """The minimal Keras 3 VAE a user would write by hand: Dense layers, reparameterisation,
    Bernoulli log-likelihood and closed-form Gaussian KL, averaged over the batch."""
    import keras
    import tensorflow as tf

    class HandWrittenVAE(keras.Model):
        def __init__(self):
            super().__init__()
            self.enc = keras.Sequential([keras.layers.Flatten()] + [keras.layers.Dense(h, activation="relu")
                                                                     for h in hidden]
                                        + [keras.layers.Dense(2 * latent_dim)])
            self.dec = keras.Sequential([keras.layers.Dense(h, activation="relu") for h in reversed(hidden)]
                                        + [keras.layers.Dense(int(np.prod(input_shape)))])
            self.seed_gen = keras.random.SeedGenerator(0)
            self.tracker = keras.metrics.Mean(name="loss")

        @property
        def metrics(self):
            return [self.tracker]

        def call(self, x):
            return self.dec(tf.split(self.enc(x), 2, axis=-1)[0])

        def train_step(self, x):
            x = tf.cast(x, tf.float32)
            flat = tf.reshape(x, [tf.shape(x)[0], -1])
            with tf.GradientTape() as tape:
                mu, raw = tf.split(self.enc(x), 2, axis=-1)
                sigma = tf.nn.softplus(raw) + 1e-4
                z = mu + sigma * keras.random.normal(tf.shape(mu), seed=self.seed_gen)
                logits = self.dec(z)
                rec = -tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=flat, logits=logits), -1)
                kl = tf.reduce_sum(0.5 * (mu**2 + sigma**2 - 1.0) - tf.math.log(sigma), -1)
                loss = tf.reduce_mean(kl - rec)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            self.tracker.update_state(loss)
            return {"loss": self.tracker.result()}

    model = HandWrittenVAE()
    model(tf.zeros((1,) + tuple(input_shape)))
    return model


def run(quick=False, data_dir=None, latent_dim=50, hidden=(500, 500), batch_size=100):
    import keras
    import tensorflow as tf

    import kvae
    from kvae.data import datasets as data

    try:
        x = data.load("binarized_mnist", "train", data_dir).arrays()[0][:5000]
        source = "binarized_mnist"
    except kvae.errors.DataError:
        x = (np.random.RandomState(0).uniform(size=(5000, 28, 28, 1)) < 0.13).astype("float32")
        source = "random binary 28x28 (no data file)"
    ds = tf.data.Dataset.from_tensor_slices(x).batch(batch_size, drop_remainder=True).repeat()
    models = {}
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        ours = kvae.VAE(input_shape=(28, 28, 1), latent_dim=latent_dim, hidden=hidden, seed=0)
        ours.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
        base = _baseline_model((28, 28, 1), latent_dim, hidden)
        base.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
        suffix = "_xla" if jit else ""
        models["kvae" + suffix], models["baseline" + suffix] = ours, base
    timed = _timing.interleaved_fit(models, ds, 3 if quick else 20, 5 if quick else 25)
    for r in timed.values():
        r["epoch_seconds_50k_from_median_step"] = r["steps"]["median"] * 50000 / batch_size
    return {
        "benchmark": "vae_epoch", "data": source,
        "network": f"MLP {hidden}, latent {latent_dim}, batch {batch_size}",
        "results": timed,
        "ratio_kvae_over_baseline": _timing.ratio(timed, "kvae", "baseline"),
        "ratio_kvae_over_baseline_xla": _timing.ratio(timed, "kvae_xla", "baseline_xla"),
        "ratio_xla_over_graph_kvae": _timing.ratio(timed, "kvae_xla", "kvae"),
        "target_ratio": 1.05,
    }


if __name__ == "__main__":
    _timing.main(run, __doc__)
