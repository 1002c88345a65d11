"""Importance-sampled NLL: kvae's ``model.log_likelihood`` against a direct loop over the same
chunks of samples, compiled as a graph (``tf.function``) and with XLA (``jit_compile=True``),
interleaved in one process, at k = 200 and k = 5000.

The model is the MLP VAE 784-500-500-50 (the shipped ``vae-binarized-mnist`` weights when present,
else a freshly initialised one).  The baseline calls the same Keras layers inside one
``tf.function`` per chunk (with and without ``jit_compile``) (encode, reparameterise, decode, Bernoulli and
Gaussian log-densities written out, logsumexp), with kvae's chunk size, and combines chunks with
logaddexp.  Both estimates are reported (they differ by Monte-Carlo noise only).

    python benchmarks/is_eval.py [--quick] [--data-dir DIR] [--out is_eval.json]
"""
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402


def direct_nll(model, jit=True):
    """A function (x, k, seed) -> -log p̂(x) per example, written directly with the model's layers."""
    import tensorflow as tf

    d = model.latent_dim
    half_log_2pi = 0.5 * math.log(2 * math.pi)

    @tf.function(jit_compile=jit, reduce_retracing=True)
    def chunk(x, m, seed):
        loc, scale = model.posterior(model.encoder_network(x))
        eps = tf.random.stateless_normal(tf.concat([[m], tf.shape(loc)], 0), seed)
        z = loc + scale * eps
        (logits,) = model.likelihood.raw_params(model.decoder_network(tf.reshape(z, [-1, d])))
        logits = tf.reshape(logits, tf.concat([[m, tf.shape(x)[0]], tf.shape(x)[1:]], 0))
        log_px = tf.reduce_sum(logits * x - tf.nn.relu(logits) - tf.nn.softplus(-tf.abs(logits)), [2, 3, 4])
        log_pz = tf.reduce_sum(-0.5 * tf.square(z) - half_log_2pi, -1)
        log_qz = tf.reduce_sum(-0.5 * tf.square(eps) - tf.math.log(scale) - half_log_2pi, -1)
        return tf.reduce_logsumexp(log_px + log_pz - log_qz, 0)

    def nll(x, k, seed=0, batch_size=100, max_elements=2**23):
        out = []
        for start in range(0, len(x), batch_size):
            xb = tf.constant(x[start:start + batch_size], tf.float32)
            size = int(np.prod(xb.shape[1:]))
            step = int(max(1, min(k, max_elements // (xb.shape[0] * size))))
            total = None
            for i, lo in enumerate(range(0, k, step)):
                m = min(step, k - lo)
                lse = chunk(xb, tf.constant(m), tf.constant([seed, start * 1_000_003 + i], tf.int32))
                total = lse if total is None else tf.experimental.numpy.logaddexp(total, lse)
            out.append(-(total - math.log(k)))
        return tf.concat(out, 0).numpy()

    return nll


def _setup(data_dir, n):
    import keras

    import kvae
    from kvae.data import datasets as data
    from kvae.pretrained import store as pretrained

    try:
        x = data.load("binarized_mnist", "valid", data_dir).arrays()[0][:n]
        source = "binarized_mnist valid"
    except kvae.errors.DataError:
        x = (np.random.RandomState(0).uniform(size=(n, 28, 28, 1)) < 0.13).astype("float32")
        source = "random binary 28x28 (no data file)"
    if "vae-binarized-mnist" in pretrained.names():
        return pretrained.load("vae-binarized-mnist"), x, source, "pretrained vae-binarized-mnist"
    keras.utils.set_random_seed(0)
    model = kvae.VAE(input_shape=(28, 28, 1), latent_dim=50, hidden=(500, 500), seed=0)
    model(x[:2])
    return model, x, source, "freshly initialised MLP VAE 784-500-500-50"


def run(quick=False, data_dir=None, profile=True):
    model, x, source, weights = _setup(data_dir, 100)
    direct, xla = direct_nll(model, jit=False), direct_nll(model, jit=True)
    report = {"benchmark": "is_eval", "model": weights, "data": source, "cases": {}}
    for k, n, repeats in ((200, 100, 8), (5000, 100, 3)):
        if quick:
            n, repeats = 10, 2
        xs = x[:n]
        timed = _timing.interleaved_calls({
            "kvae": lambda: model.log_likelihood(xs, k=k, seed=0).numpy(),
            "direct_graph": lambda: direct(xs, k, seed=0),
            "direct_xla": lambda: xla(xs, k, seed=0),
        }, repeats)
        ours = -model.log_likelihood(xs, k=k, seed=0).numpy()
        theirs = direct(xs, k, seed=0)
        report["cases"][f"k{k}"] = {
            "k": k, "examples": n, "results": timed,
            "ratio_kvae_over_direct_graph": _timing.ratio(timed, "kvae", "direct_graph", key="calls"),
            "ratio_kvae_over_direct_xla": _timing.ratio(timed, "kvae", "direct_xla", key="calls"),
            "nll_kvae": float(ours.mean()), "nll_direct": float(theirs.mean()),
            "nll_difference_standard_error": float(np.std(ours - theirs) / math.sqrt(n)),
        }
    report["target_ratio"] = 1.10
    if profile:
        from _profile import profile as prof

        xs = x[:10 if quick else 100]
        report["profile_k200"] = {"kvae": prof(lambda: model.log_likelihood(xs, k=200, seed=0).numpy()),
                                  "direct_graph": prof(lambda: direct(xs, 200, seed=0))}
    return report


if __name__ == "__main__":
    _timing.main(run, __doc__)
