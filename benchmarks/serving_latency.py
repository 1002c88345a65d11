"""Decode latency and throughput: the ONNX runtime (kvae_serve) vs the SavedModel vs Keras predict.

For a VAE with the MNIST network (MLP 784-500-500-50, Bernoulli decoder): decode latency at
batch 1 (median and p99 over ``--repeats`` calls) and throughput at batch 1024, for
onnxruntime through kvae_serve, ``tf.saved_model.load`` signatures and ``model.predict`` on a
Keras decoder, in one run; plus the full PixelCNN sampler (ONNX Loop) for 64 images of 28x28
from a VLAE bundle.  Target: ONNX at least 2x faster than the SavedModel at batch 1.

    python benchmarks/serving_latency.py [--repeats 300] [--out results.json]
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "export"))


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402
from _report import emit  # noqa: E402


def _latencies(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times = np.asarray(times) * 1000.0
    return {"median_ms": float(np.median(times)), "p99_ms": float(np.percentile(times, 99))}


def _throughput(fn, n, repeats=7):
    """Examples per second at the median of ``repeats`` timed calls (after a warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n / float(np.median(times))


def main():
    import keras
    import tensorflow as tf

    import kvae
    from kvae.export import bundle as export
    from kvae_serve import Bundle

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--out")
    args = p.parse_args()
    tmp = tempfile.mkdtemp()
    model = kvae.VAE(input_shape=(28, 28, 1), latent_dim=50, hidden=(500, 500), seed=0)
    path = os.path.join(tmp, "vae")
    export.export(model, path, check=False)
    bundle = Bundle(path)
    loaded = tf.saved_model.load(os.path.join(path, "savedmodel", "1"))
    sig = loaded.signatures["decode"]

    class Decoder(keras.Model):  # the decode endpoint as a Keras model, for model.predict
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def call(self, z):
            return tf.sigmoid(self.vae.decode_params(z)[0])

    keras_decoder = Decoder(model)
    results = {}
    for batch in (1, 1024):
        z = np.random.RandomState(0).normal(size=(batch, 50)).astype(np.float32)
        zt = tf.constant(z)
        fns = {
            "onnx_runtime": lambda: bundle.decode(z),
            "savedmodel": lambda: sig(z=zt),
            "keras_predict": lambda: keras_decoder.predict(z, batch_size=batch, verbose=0),
        }
        for name, fn in fns.items():
            key = f"batch{batch}"
            results.setdefault(name, {})
            if batch == 1:
                results[name][key] = _latencies(fn, args.repeats)
            else:
                results[name][key] = {"examples_per_second": _throughput(fn, batch)}
    vlae = kvae.VLAE(input_shape=(28, 28, 1), latent_dim=64, flow_steps=2, flow_hidden=(256, 256), seed=0,
                     network="mlp", conditioning="every_layer")  # as measured in its JSON
    vpath = os.path.join(tmp, "vlae")
    export.export(vlae, vpath, check=False)
    vb = Bundle(vpath)
    start = time.perf_counter()
    vb.sample(64, seed=0)
    onnx_sampler = time.perf_counter() - start
    report = {
        "benchmark": "serving_latency",
        "decode": results,
        "onnx_over_savedmodel_speedup_batch1":
            results["savedmodel"]["batch1"]["median_ms"] / results["onnx_runtime"]["batch1"]["median_ms"],
        "target_speedup": 2.0,
        "pixelcnn_onnx_sampler_64x28x28_seconds": onnx_sampler,
        "machine": _timing.machine(),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
