"""Long training runs that span sessions: snapshot a run's latest weights into the repository, and say
how to resume it.

    python apps/long_runs.py snapshot RUN_DIR NAME --command "kvae train ..."

writes ``apps/long_runs/NAME.weights.h5`` (the model's float32 weights from the run's latest
checkpoint, without the optimizer's state: one file per run, replaced each time) and
``apps/long_runs/NAME.json`` (the command, epochs and optimizer steps done, wall time, the
validation curve so far).  Next session: rerun the command with the same ``--out`` if the run directory
survived (an exact resume), else add ``--init-weights apps/long_runs/NAME.weights.h5`` (a warm start: the
optimizer's moments reset) and record it in the JSON's ``segments``.
"""
import argparse
import csv
import datetime
import json
import math
import os
import subprocess

import h5py

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "long_runs")


def model_weights_only(source, target):
    """Copy a Keras ``.weights.h5`` without its ``optimizer`` group (the model's variables only)."""
    tmp = target + ".tmp"
    with h5py.File(source, "r") as src, h5py.File(tmp, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for key in src:
            if key != "optimizer":
                src.copy(src[key], dst, name=key)
    os.replace(tmp, target)


def _steps(config, epochs):
    """Optimizer steps of ``epochs`` whole epochs (static binarised MNIST: 50,000 training images)."""
    if config["dataset"] != "binarized_mnist":
        return None
    return epochs * math.ceil(min(50000, config["limit"] or 50000) / config["batch_size"])


def snapshot(run_dir, name, command, note=None):
    os.makedirs(HERE, exist_ok=True)
    checkpoint = os.path.join(run_dir, "backup", "latest.weights.h5")
    if not os.path.isfile(checkpoint):
        raise SystemExit(f"{run_dir} has no checkpoint (backup/latest.weights.h5): a finished run keeps its model.keras")
    model_weights_only(checkpoint, os.path.join(HERE, f"{name}.weights.h5"))
    with open(os.path.join(run_dir, "backup", "training_metadata.json")) as f:
        position = json.load(f)
    with open(os.path.join(run_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    config = json.load(open(os.path.join(run_dir, "config.json")))
    record_path = os.path.join(HERE, f"{name}.json")
    record = json.load(open(record_path)) if os.path.exists(record_path) else {"name": name, "segments": []}
    started = datetime.datetime.fromtimestamp(os.path.getmtime(os.path.join(run_dir, "config.json")))
    now = datetime.datetime.now()
    segment = {"run_dir": run_dir, "started": started.isoformat(timespec="seconds"),
               "snapshot": now.isoformat(timespec="seconds"), "hours": round((now - started).total_seconds() / 3600, 2),
               "epochs_completed": len(rows), "checkpoint": position,
               "optimizer_steps": _steps(config, len(rows)),
               "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
               "note": note}
    if record["segments"] and record["segments"][-1]["run_dir"] == run_dir and \
            record["segments"][-1]["started"] == segment["started"]:
        record["segments"][-1] = segment  # the same sitting, snapshot again
    else:
        record["segments"].append(segment)
    record.update(command=command, model_config=config["model_config"],
                  validation=[{"epoch": int(r["epoch"]) + 1, "neg_elbo": float(r["val_neg_elbo"]),
                               "kl": float(r["val_kl"])} for r in rows],
                  total_hours=round(sum(s["hours"] for s in record["segments"]), 2))
    with open(record_path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(record_path + ".tmp", record_path)
    print(f"{name}: {len(rows)} epochs, last validation -ELBO "
          f"{record['validation'][-1]['neg_elbo'] if rows else None}, {record['total_hours']} h")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("snapshot")
    s.add_argument("run_dir")
    s.add_argument("name")
    s.add_argument("--command", required=True, help="the kvae train command of the run")
    s.add_argument("--note")
    args = parser.parse_args()
    snapshot(args.run_dir, args.name, args.command, args.note)


if __name__ == "__main__":
    main()
