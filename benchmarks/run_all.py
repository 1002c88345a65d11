"""Run every benchmark and write one JSON (``benchmarks/results.json`` by default) with the date,
the commit and the machine, which docs/results.md quotes.

    python -m benchmarks [--quick] [--only vlae_step,is_eval] [--data-dir DIR] [--out FILE]

Each benchmark runs in its own process (some configure TensorFlow's devices at start-up) and
writes its own JSON, gathered here under ``benchmarks``.  ``--quick`` runs a few steps of each
(a smoke run: the figures are not meant to be quoted).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _timing  # noqa: E402

#: name -> (script, arguments, arguments with --quick)
BENCHMARKS = {
    "vlae_step": ("vlae_step.py", [], ["--quick"]),
    "lvae_step": ("lvae_step.py", [], ["--quick"]),
    "vae_epoch": ("vae_epoch.py", [], ["--quick"]),
    "is_eval": ("is_eval.py", [], ["--quick"]),
    "vlae_sampling": ("vlae_speed.py", [], ["--n", "4"]),
    "distributed_throughput": ("distributed_throughput.py", [], ["--steps", "10"]),
    "serving_latency": ("serving_latency.py", [], ["--repeats", "20"]),
    "disentanglement_speed": ("disentanglement_speed.py", ["--n", "4000", "--repeats", "1"], ["--n", "1000", "--repeats", "1"]),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run of every benchmark (figures not for quoting)")
    p.add_argument("--only", help="comma-separated names among: " + ", ".join(BENCHMARKS))
    p.add_argument("--data-dir", default=os.environ.get("KVAE_DATA_DIR"))
    p.add_argument("--out", default=os.path.join(HERE, "results.json"))
    args = p.parse_args(argv)
    names = list(BENCHMARKS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose among {', '.join(BENCHMARKS)}")
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "commit": _timing.commit(), "quick": args.quick, "machine": _timing.machine(), "benchmarks": {}}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if args.data_dir:
        env["KVAE_DATA_DIR"] = args.data_dir
    for i, name in enumerate(names, 1):
        script, full, quick = BENCHMARKS[name]
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "out.json")
            cmd = [sys.executable, os.path.join(HERE, script), *(quick if args.quick else full), "--out", out]
            print(f"[{i}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0 or not os.path.isfile(out):
                report["benchmarks"][name] = {"error": done.stderr.strip().splitlines()[-5:], "seconds": seconds}
                print(f"      failed after {seconds:.0f} s", file=sys.stderr)
                continue
            with open(out) as f:
                result = json.load(f)
        result.pop("machine", None)
        result.pop("commit", None)
        result["process_seconds"] = seconds
        report["benchmarks"][name] = result
        print(f"      done in {seconds:.0f} s", file=sys.stderr)
        with open(args.out, "w") as f:  # written after every benchmark: a long run keeps what it measured
            json.dump(report, f, indent=2)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}", file=sys.stderr)
    return 1 if any("error" in r for r in report["benchmarks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
