"""Training throughput (examples/s) on 1 device vs MirroredStrategy over 2 logical CPU devices,
each with and without XLA, for kvae's VAE (MLP 784-500-500-50, global batch 200).

On a 2-core CPU the two "devices" share the same cores, so the scaling figure measures the
overhead of the distributed step (splitting, all-reduce), not a speed-up.  Prints JSON.

    python benchmarks/distributed_throughput.py [--steps 100] [--out results.json]
"""
import argparse
import os
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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
    results = {}
    for name, strategy in (("1_device", tf.distribute.get_strategy()), ("2_replicas", mirrored)):
        for jit in (False, True):
            key = f"{name}{'_xla' if jit else ''}"
            with strategy.scope():
                model = kvae.VAE(input_shape=(28, 28, 1), latent_dim=50, hidden=(500, 500), seed=0)
                model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
            ds = tf.data.Dataset.from_tensor_slices(x).batch(args.batch_size).prefetch(2)
            try:
                model.fit(ds.take(3), epochs=1, verbose=0)  # trace
            except Exception as err:  # XLA + MirroredStrategy over logical CPUs is not supported by TF
                results[key] = {"error": f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"}
                continue
            start = time.perf_counter()
            model.fit(ds, epochs=1, verbose=0)
            seconds = time.perf_counter() - start
            results[key] = {"examples_per_second": n / seconds, "seconds": seconds}
    def ratio(a, b):
        if "examples_per_second" in results[a] and "examples_per_second" in results[b]:
            return results[a]["examples_per_second"] / results[b]["examples_per_second"]
        return None

    report = {"benchmark": "distributed_throughput", "steps": args.steps, "global_batch": args.batch_size,
              "results": results, "scaling_2_over_1": ratio("2_replicas", "1_device"),
              "xla_speedup_1_device": ratio("1_device_xla", "1_device"),
              "note": "2 logical devices on the same 2 CPU cores: the ratio measures overhead, not speed-up",
              "machine": {"cpus": os.cpu_count()}}
    emit(report, args.out)


if __name__ == "__main__":
    main()
