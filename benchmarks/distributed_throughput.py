"""Training throughput (examples/s) on 1 device vs MirroredStrategy over 2 logical CPU devices,
each with and without XLA, for kvae's VAE (MLP 784-500-500-50, global batch 200).

On a 2-core CPU the two "devices" share the same cores, so the scaling figure measures the
overhead of the distributed step (splitting, all-reduce), not a speed-up.  All four configurations
train in interleaved blocks of 10 steps, each step timed on its own (median and spread).  Prints JSON.

    python benchmarks/distributed_throughput.py [--steps 100] [--out results.json]
"""
import argparse
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402
from _report import emit  # noqa: E402


def main():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np

    import kvae

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--out")
    args = p.parse_args()
    n = args.steps * args.batch_size
    x = (np.random.RandomState(0).uniform(size=(n, 28, 28, 1)) < 0.13).astype("float32")
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    models, results = {}, {}
    for name, strategy in (("1_device", tf.distribute.get_strategy()), ("2_replicas", mirrored)):
        for jit in (False, True):
            key = f"{name}{'_xla' if jit else ''}"
            with strategy.scope():
                model = kvae.VAE(input_shape=(28, 28, 1), latent_dim=50, hidden=(500, 500), seed=0)
                model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
            try:
                model.fit(x[:3 * args.batch_size], batch_size=args.batch_size, epochs=1, verbose=0)  # trace
            except Exception as err:  # XLA + MirroredStrategy over logical CPUs is not supported by TF
                results[key] = {"error": f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"}
                continue
            models[key] = model
    ds = tf.data.Dataset.from_tensor_slices(x).batch(args.batch_size, drop_remainder=True).repeat()
    blocks = max(2, args.steps // 10)
    timed = _timing.interleaved_fit(models, ds, blocks, 10)
    for key, r in timed.items():
        r["examples_per_second_from_median_step"] = args.batch_size / r["steps"]["median"]
        results[key] = r

    def ratio(a, b):
        if "steps" in results.get(a, {}) and "steps" in results.get(b, {}):
            return results[b]["steps"]["median"] / results[a]["steps"]["median"]
        return None

    report = {"benchmark": "distributed_throughput", "steps": args.steps, "global_batch": args.batch_size,
              "results": results, "scaling_2_over_1": ratio("2_replicas", "1_device"),
              "xla_speedup_1_device": ratio("1_device_xla", "1_device"),
              "note": "2 logical devices on the same 2 CPU cores: the ratio measures overhead, not speed-up",
              "machine": _timing.machine()}
    emit(report, args.out)


if __name__ == "__main__":
    main()
