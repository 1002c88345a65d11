"""The importance-sampled NLL of the ladder VAE with a PixelCNN decoder (the long run's configuration)
in one process of cpu_count threads (``kvae evaluate``) against ``--nll-jobs 2`` (two worker processes
of cpu_count/2 threads, :mod:`kvae.evaluation.parallel`), alternated in ``--repeats`` rounds.

Steady state: examples per second between the ``jobs``-th and the last batch handed back (:func:`steady_rate`;
the workers' start-up, TensorFlow's import and the model's load, is reported apart as the time to the
first batch).  The model's weights are its initial ones: the cost does not depend on them.

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


def steady_rate(marks, jobs):
    """Examples per second after start-up from ``marks`` [(time, examples done)], one per batch handed
    back by ``jobs`` processes working side by side.

    Counted from the ``jobs``-th mark: the batches the other processes hand back just after the first
    were computed alongside it, before its time, so counting them from the first mark would overstate
    the rate of ``jobs`` > 1 processes (two in step: by a factor (B - 1) / (B - 2) for B batches)."""
    if len(marks) <= jobs:
        raise ValueError(f"{len(marks)} batches: a steady rate of {jobs} processes needs more than {jobs}")
    (t0, n0), (t1, n1) = marks[jobs - 1], marks[-1]
    return (n1 - n0) / (t1 - t0)


def timed(compute, jobs):
    """(seconds to the first batch, steady examples per second) of ``compute(progress)`` in ``jobs``
    processes."""
    marks = []
    start = time.perf_counter()
    compute(lambda done, total: marks.append((time.perf_counter(), done)))
    return marks[0][0] - start, steady_rate(marks, jobs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: small k, one round")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "evaluate_jobs.json"))
    args = p.parse_args(argv)
    from kvae.evaluation.parallel import parallel_log_likelihood
    from kvae.training.runs import build_model

    k, n, batch, repeats = (20, 20, 5, 1) if args.quick else (500, 80, 10, args.repeats)
    x = (np.random.default_rng(0).random((n, 28, 28, 1)) < 0.3).astype("float32")
    model = build_model("lvae", (28, 28, 1), **CONFIG)
    model.log_likelihood(x[:batch], k=k, batch_size=batch)  # traces
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        for _ in range(repeats):
            one = timed(lambda progress: model.log_likelihood(x, k=k, batch_size=batch, progress=progress), 1)
            two = timed(lambda progress: parallel_log_likelihood(path, x, k=k, batch_size=batch, jobs=2,
                                                                 progress=progress), 2)
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
