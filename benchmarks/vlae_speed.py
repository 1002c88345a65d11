"""VLAE sampling: PixelCNN ancestral sampling time for 64 images of 28x28 (the training step is
measured by ``vlae_step.py``).

Sampling is measured for kvae's sampler (one compiled ``tf.while_loop``, each step recomputing
only the band of rows inside the receptive field) against a naive baseline that recomputes the
full network for every pixel in an eager Python loop, in the same run, on the same trained-free
network and noise (both give the same images; checked); kvae's sampler is timed over
``--repeats`` calls after a tracing call (median and spread), the eager baseline once (it takes
minutes).

    python benchmarks/vlae_speed.py [--n 64] [--repeats 5] [--out results.json]
"""
import argparse
import os
import sys
import time

import numpy as np
import tensorflow as tf


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402
from _report import emit  # noqa: E402


def naive_sample(network, cond, uniform):
    """Pixel by pixel, full network each time, eager (the baseline)."""
    n, h, w, c = uniform.shape
    x = np.zeros(uniform.shape, np.float32)
    for r in range(h):
        for col in range(w):
            p = tf.sigmoid(network(tf.constant(x), cond)[:, r, col, :]).numpy()
            x[:, r, col, :] = (uniform[:, r, col, :] < p).astype(np.float32)
    return x


def main():
    import keras

    import kvae
    from kvae.nn.pixelcnn import compiled_ancestral_sample

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--out")
    args = p.parse_args()
    keras.utils.set_random_seed(0)
    model = kvae.VLAE(input_shape=(28, 28, 1), network="mlp", conditioning="every_layer")  # the paper's
    # sizes (latent 64, 4 x MADE(640^3), 6 x 3x3 PixelCNN) in the configuration its JSON was measured with
    model(np.zeros((2, 28, 28, 1), "float32"))
    net = model.likelihood.network
    cond = tf.random.normal((args.n, 28, 28, 4), seed=1)
    uniform = tf.random.uniform((args.n, 28, 28, 1), seed=2)
    timed = _timing.interleaved_calls({"kvae_compiled_band": lambda: compiled_ancestral_sample(net, cond, uniform)
                                       .numpy()}, args.repeats)
    ours = compiled_ancestral_sample(net, cond, uniform).numpy()
    start = time.perf_counter()
    naive = naive_sample(net, cond, uniform.numpy())
    naive_seconds = time.perf_counter() - start
    median = timed["kvae_compiled_band"]["calls"]["median"]
    report = {
        "benchmark": "vlae_sampling",
        "model": "VLAE, paper sizes (PixelCNN 6 x 3x3, 12 filters)",
        "sampling": {"images": args.n, "shape": [28, 28, 1], "kvae_compiled_band": timed["kvae_compiled_band"],
                     "naive_eager_full_seconds": naive_seconds, "speedup_over_median": naive_seconds / median,
                     "identical_images": bool(np.array_equal(ours, naive))},
        "machine": _timing.machine(),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
