"""VLAE speed: training seconds per epoch, and PixelCNN sampling time for 64 images of 28x28.

Sampling is measured for kvae's sampler (one compiled ``tf.while_loop``, each step recomputing
only the band of rows inside the receptive field) against a naive baseline that recomputes the
full network for every pixel in an eager Python loop, in the same run, on the same trained-free
network and noise (both give the same images; checked).  Training time per epoch is measured
over ``--steps`` steps after a warm-up step and scaled to a 50000-example epoch at batch 100.

    python benchmarks/vlae_speed.py [--data-dir DIR] [--steps 30] [--out results.json]
"""
import argparse
import os
import sys
import time

import numpy as np
import tensorflow as tf


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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
    from kvae import data
    from kvae.layers.pixelcnn import compiled_ancestral_sample

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("KVAE_DATA_DIR"))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--out")
    args = p.parse_args()
    keras.utils.set_random_seed(0)
    model = kvae.VLAE(input_shape=(28, 28, 1))  # the paper's sizes: latent 64, 4 x MADE(640^3), 6 x 3x3 PixelCNN
    model.compile(optimizer=keras.optimizers.Adamax(2e-3))
    try:
        x = data.load("binarized_mnist", "train", args.data_dir).arrays()[0][:100 * (args.steps + 1)]
    except kvae.errors.DataError:
        x = (np.random.RandomState(0).uniform(size=(100 * (args.steps + 1), 28, 28, 1)) < 0.13).astype("float32")
    model.fit(x[:100], batch_size=100, epochs=1, verbose=0)  # trace
    start = time.perf_counter()
    model.fit(x[100:], batch_size=100, epochs=1, verbose=0)
    step_seconds = (time.perf_counter() - start) / args.steps

    net = model.likelihood.network
    cond = tf.random.normal((args.n, 28, 28, 4), seed=1)
    uniform = tf.random.uniform((args.n, 28, 28, 1), seed=2)
    compiled_ancestral_sample(net, cond, uniform)  # trace once
    start = time.perf_counter()
    ours = compiled_ancestral_sample(net, cond, uniform).numpy()
    ours_seconds = time.perf_counter() - start
    start = time.perf_counter()
    naive = naive_sample(net, cond, uniform.numpy())
    naive_seconds = time.perf_counter() - start
    report = {
        "benchmark": "vlae_speed",
        "model": "VLAE, paper sizes (latent 64, AF prior 4 x MADE 640x3, PixelCNN 6 x 3x3, 12 filters)",
        "train_step_seconds_batch100": step_seconds,
        "train_seconds_per_epoch_50k": step_seconds * 500,
        "sampling": {"images": args.n, "shape": [28, 28, 1], "kvae_compiled_band_seconds": ours_seconds,
                     "naive_eager_full_seconds": naive_seconds, "speedup": naive_seconds / ours_seconds,
                     "identical_images": bool(np.array_equal(ours, naive))},
        "machine": {"cpus": os.cpu_count()},
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
