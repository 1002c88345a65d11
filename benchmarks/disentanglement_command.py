"""Wall time of the disentanglement command of issue 31, per phase, and the shared code cache
against encoding every drawn image, in the same run.

    python benchmarks/disentanglement_command.py --out benchmarks/disentanglement_command.json

1. The command, as a user runs it (two fresh ``python -m kvae.cli`` processes; the benchmark and they
   run at niceness ``--nice``, 5 by default, as the background trainings here run at 10)::

       kvae train --model factorvae --dataset dsprites --network conv --limit 20000 --epochs 1 --out R
       kvae evaluate R --disentanglement --json e.json

   Reported: each process's wall time and CPU time (user + system, with its worker processes: what
   a busy machine does not inflate as much), the evaluate JSON's ``disentanglement_seconds`` (per metric)
   and ``disentanglement_encoding`` (images requested / rendered and encoded, seconds rendering and
   encoding), which metric keys the JSON holds, and the load average before and after.
   ``--previous JSON`` keeps an earlier report's phases beside the new ones (before/after).
2. ``--compare-train`` / ``--compare-test`` points (default 500 / 250; 0: skipped): ``disentanglement.evaluate`` on
   the trained model with the cache and without it (every drawn image rendered and encoded where it
   is drawn: the previous behaviour), interleaved ``--repeats`` times; their seconds and the largest
   difference of any metric between the two.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
from _report import emit  # noqa: E402
from _timing import commit, machine  # noqa: E402

TRAIN = ["train", "--model", "factorvae", "--dataset", "dsprites", "--network", "conv", "--limit", "20000",
         "--epochs", "1"]


def _run(args):
    """(wall seconds, CPU seconds) of ``python -m kvae.cli ARGS``, the CPU time (user + system) of the
    process and the worker processes it waited for; raises with its stderr's tail on failure."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kvae.cli", *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"kvae {args[0]} failed:\n{done.stderr[-2000:]}")
    return seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def compare_cache(run_dir, num_train, num_test, repeats, seed=0):
    """Cached vs uncached ``disentanglement.evaluate`` on the trained model (interleaved)."""
    from kvae.data import datasets
    from kvae.evaluation import disentanglement, metrics
    from kvae.training import runs

    model, _ = runs.load_run(run_dir)
    source = datasets.load("dsprites", "test").source
    represent = metrics.representation(model, batch_size=2048, seed=seed)
    times, results = {True: [], False: []}, {}
    for _ in range(repeats):
        for cache in (False, True):
            start = time.perf_counter()
            results[cache] = disentanglement.evaluate(source, represent, seed=seed, num_train=num_train,
                                                      num_test=num_test, num_variance_estimate=num_train,
                                                      n_jobs=-1, cache=cache)
            times[cache].append(time.perf_counter() - start)
    keys = [k for k in results[True] if isinstance(results[True][k], (int, float))]
    return {"num_train": num_train, "num_test": num_test, "repeats": repeats,
            "uncached_seconds_median": statistics.median(times[False]),
            "cached_seconds_median": statistics.median(times[True]),
            "cached_seconds_per_metric": results[True]["seconds"], "uncached_seconds_per_metric": results[False]["seconds"],
            "encoding": results[True]["encoding"],
            "largest_metric_difference": max(abs(results[True][k] - results[False][k]) for k in keys)}


def phase_rates(run_dir, num_images, dci_points, seed=0):
    """CPU seconds (this process, all threads) of rendering and encoding ``num_images`` dSprites
    positions in the CLI's batches, and of DCI's trees (``n_jobs=1``) on ``dci_points`` training and
    half as many test codes: rates that a loaded machine inflates less than wall time."""
    import numpy as np

    from kvae.data import datasets
    from kvae.evaluation import disentanglement, metrics
    from kvae.training import runs

    model, _ = runs.load_run(run_dir)
    source = datasets.load("dsprites", "test").source
    represent = metrics.representation(model, batch_size=2048, seed=seed)
    rng = np.random.default_rng(seed)
    represent(source.images(source.sample_factors(2048, rng)))  # tracing
    factors = source.sample_factors(num_images, rng)
    out, render, encode = {"images": num_images, "dci_points": dci_points}, 0.0, 0.0
    for start in range(0, num_images, 2048):
        c0 = time.process_time()
        images = source.images(factors[start:start + 2048])
        c1 = time.process_time()
        represent(images)
        render, encode = render + c1 - c0, encode + time.process_time() - c1
    out["render_cpu_seconds_per_image"], out["encode_cpu_seconds_per_image"] = render / num_images, encode / num_images
    v = source.sample_factors(dci_points + dci_points // 2, rng)
    z = represent(source.images(v))
    c0, w0 = time.process_time(), time.perf_counter()
    disentanglement.dci(z[:dci_points], v[:dci_points], z[dci_points:], v[dci_points:], seed=seed, n_jobs=1)
    out["dci_cpu_seconds"], out["dci_seconds"] = time.process_time() - c0, time.perf_counter() - w0
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nice", type=int, default=5)
    p.add_argument("--compare-train", type=int, default=500)
    p.add_argument("--compare-test", type=int, default=250)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--workdir", help="where the run goes (default: a temporary folder)")
    p.add_argument("--trained", action="store_true",
                   help="WORKDIR/R is already trained by this command: time the evaluation only")
    p.add_argument("--rates", action="store_true",
                   help="only the CPU time per rendered and encoded image and of DCI (phase_rates) on WORKDIR/R")
    p.add_argument("--rate-images", type=int, default=16384)
    p.add_argument("--rate-dci-points", type=int, default=2000)
    p.add_argument("--previous", help="an earlier report of this benchmark: its command_phases are kept as "
                                      "previous_command_phases (with its commit and date), for before/after")
    p.add_argument("--note", help="a sentence on the conditions of the run, kept in the report")
    p.add_argument("--out")
    args = p.parse_args(argv)
    os.nice(args.nice - os.nice(0))  # the commands inherit it
    from kvae.evaluation.disentanglement import KEYS

    work = args.workdir or tempfile.mkdtemp(prefix="kvae-disent-")
    run_dir, result_json = os.path.join(work, "R"), os.path.join(work, "e.json")
    report = {"benchmark": "disentanglement_command", "date": time.strftime("%Y-%m-%d %H:%M"),
              "commit": commit(), "machine": machine(), "nice": args.nice,
              "command": ["kvae " + " ".join(TRAIN + ["--out", "R"]), "kvae evaluate R --disentanglement --json e.json"]}
    if args.rates:
        report["phase_rates"] = {"load_average_before": list(os.getloadavg()),
                                 **phase_rates(run_dir, args.rate_images, args.rate_dci_points),
                                 "load_average_after": list(os.getloadavg())}
        return emit(report, args.out)
    if args.note:
        report["note"] = args.note
    if args.previous:
        with open(args.previous) as f:
            previous = json.load(f)
        report["previous_command_phases"] = {"commit": previous.get("commit"), "date": previous.get("date"),
                                             "note": previous.get("note"), **previous["command_phases"]}
    phases = {"load_average_before": list(os.getloadavg())}
    if args.trained:
        phases["train_seconds"] = phases["train_cpu_seconds"] = None
    else:
        phases["train_seconds"], phases["train_cpu_seconds"] = _run(TRAIN + ["--out", run_dir])
    phases["evaluate_seconds"], phases["evaluate_cpu_seconds"] = _run(
        ["evaluate", run_dir, "--disentanglement", "--json", result_json])
    phases["load_average_after"] = list(os.getloadavg())
    phases["total_seconds"] = None if args.trained else phases["train_seconds"] + phases["evaluate_seconds"]
    with open(result_json) as f:
        scores = json.load(f)
    phases["evaluate_seconds_per_metric"] = scores["disentanglement_seconds"]
    phases["evaluate_encoding"] = scores["disentanglement_encoding"]
    phases["keys_missing"] = [k for k in KEYS if not isinstance(scores.get(k), float)]
    if phases["total_seconds"] is not None:
        phases["within_10_minutes"] = phases["total_seconds"] <= 600 and not phases["keys_missing"]
    phases["scores"] = {k: scores.get(k) for k in KEYS}
    report["command_phases"] = phases
    print(json.dumps(phases, indent=2), file=sys.stderr, flush=True)
    if args.compare_train:
        report["cache_comparison"] = compare_cache(run_dir, args.compare_train, args.compare_test, args.repeats)
        report["cache_comparison"]["load_average_after"] = list(os.getloadavg())
    emit(report, args.out)


if __name__ == "__main__":
    main()
