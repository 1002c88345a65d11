"""The importance-sampled NLL of the ladder VAE with a PixelCNN decoder (the long run's configuration)
in one process of cpu_count threads (``kvae evaluate``) against ``--nll-jobs 2`` (two worker processes
of cpu_count/2 threads, :mod:`kvae.evaluation.parallel`), alternated in ``--repeats`` rounds.

Steady state: examples per second between the first and the last batch handed back (the workers'
start-up, TensorFlow's import and the model's load, is reported apart as the time to the first
batch).  The model's weights are its initial ones: the cost does not depend on them.

    python benchmarks/evaluate_jobs.py [--quick] [--out benchmarks/evaluate_jobs.json]
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402

CONFIG = dict(groups=3, channels=64, latent_channels=32, blocks=2, pixelcnn_layers=6)


def timed(compute, n):
    """(seconds to the first batch, examples per second after it) of ``compute(progress)``."""
    marks = []
    start = time.perf_counter()
    compute(lambda done, total: marks.append((time.perf_counter(), done)))
    (t0, n0), (t1, n1) = marks[0], marks[-1]
    return t0 - start, (n1 - n0) / (t1 - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: small k, one round")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "evaluate_jobs.json"))
    args = p.parse_args(argv)
    from kvae.evaluation.parallel import parallel_log_likelihood
    from kvae.training.runs import build_model

    k, n, batch, repeats = (20, 20, 5, 1) if args.quick else (500, 60, 10, args.repeats)
    x = (np.random.default_rng(0).random((n, 28, 28, 1)) < 0.3).astype("float32")
    model = build_model("lvae", (28, 28, 1), **CONFIG)
    model.log_likelihood(x[:batch], k=k, batch_size=batch)  # traces
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        for _ in range(repeats):
            one = timed(lambda progress: model.log_likelihood(x, k=k, batch_size=batch, progress=progress), n)
            two = timed(lambda progress: parallel_log_likelihood(path, x, k=k, batch_size=batch, jobs=2,
                                                                 progress=progress), n)
            rounds.append({"one_process": {"first_batch_s": one[0], "examples_per_s": one[1]},
                           "two_processes": {"first_batch_s": two[0], "examples_per_s": two[1]}})
    med = {side: {key: float(np.median([r[side][key] for r in rounds])) for key in ("first_batch_s", "examples_per_s")}
           for side in ("one_process", "two_processes")}
    report = {"benchmark": "evaluate_jobs", "quick": args.quick, "machine": _timing.machine(),
              "config": {**CONFIG, "k": k, "examples": n, "batch_size": batch, "repeats": repeats},
              "rounds": rounds, "median": med,
              "speedup": med["two_processes"]["examples_per_s"] / med["one_process"]["examples_per_s"],
              "command": "python benchmarks/evaluate_jobs.py --out benchmarks/evaluate_jobs.json"}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({"median": med, "speedup": report["speedup"]}, indent=1))


if __name__ == "__main__":
    main()
