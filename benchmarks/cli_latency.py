"""Wall time of ``kvae --help`` against a bare interpreter start, in the same run.

    python benchmarks/cli_latency.py --out benchmarks/cli_latency.json

Each command is a fresh ``python`` process (as a user's shell starts it); the two commands run in
interleaved rounds so that both see the same machine load.  Reported: the median and the 10th and
90th percentiles of ``--repeats`` rounds, and kvae's median minus the bare interpreter's
(what kvae itself adds).  The tests check the mechanism instead (``kvae --help`` imports neither
TensorFlow, Keras nor NumPy: tests/cli/test_boundaries.py).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _report import emit  # noqa: E402
from _timing import commit  # noqa: E402

ROOT = os.path.join(HERE, "..")
COMMANDS = {
    "python_baseline": ["-c", "pass"],
    "kvae_help": ["-c", "import sys, kvae_cli; sys.exit(kvae_cli.main())", "--help"],
}


def _time(args, env):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], capture_output=True, env=env, cwd=ROOT)
    spent = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{args} exited with {done.returncode}: {done.stderr.decode()[-500:]}")
    return spent


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--warmup", type=int, default=2, help="rounds run first and not counted (file cache)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.abspath(ROOT), os.environ.get("PYTHONPATH", "")]))
    times = {name: [] for name in COMMANDS}
    for round_ in range(args.warmup + args.repeats):
        for name, cmd in COMMANDS.items():
            spent = _time(cmd, env)
            if round_ >= args.warmup:
                times[name].append(spent)
    results = {name: {"median_s": statistics.median(t), "p10_s": float(np.percentile(t, 10)),
                      "p90_s": float(np.percentile(t, 90)), "n": len(t)} for name, t in times.items()}
    base = results["python_baseline"]["median_s"]
    results["kvae_help"]["median_over_baseline_s"] = results["kvae_help"]["median_s"] - base
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    emit({"benchmark": "cli_latency", "date": time.strftime("%Y-%m-%d"), "commit": commit(), "repeats": args.repeats,
          "machine": f"{os.cpu_count()} CPUs", "load_average_at_start": load,
          "command": "python benchmarks/cli_latency.py --out benchmarks/cli_latency.json",
          "results": results}, args.out)


if __name__ == "__main__":
    main()
