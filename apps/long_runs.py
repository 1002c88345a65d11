"""Long training runs that span sessions: snapshot a run's latest weights into the repository, and say
how to resume it.

    python apps/long_runs.py snapshot RUN_DIR NAME --command "kvae train ..." [--since ISO --until ISO --resume exact|warm]
    python apps/long_runs.py table [--root FOLDER]
    python apps/long_runs.py best RUN_DIR OUT_DIR
    python apps/long_runs.py plot OUT.png [--root FOLDER]

``best`` writes a run directory OUT_DIR (``model.keras`` with the run's best weights, its
``config.json`` and ``history.json``) from a run that is still training, for ``kvae evaluate``,
``kvae sample`` and ``apps/pack_pretrained.py`` while the run trains on.

writes ``apps/long_runs/NAME.weights.h5`` (the model's float32 weights from the run's latest
checkpoint, without the optimizer's state: one file per run, replaced each time) and
``apps/long_runs/NAME.json`` (the command, epochs and optimizer steps done, wall time, the
validation curve so far).  Next session: rerun the command with the same ``--out`` if the run directory
survived (an exact resume), else add ``--init-weights apps/long_runs/NAME.weights.h5`` (a warm start: the
optimizer's moments reset) and record it in the JSON's ``segments``.  A finished run keeps no
weights file here: its result is the float16 package (``kvae.pretrained.store.pack``), kept in
``apps/long_runs/NAME.package/`` until it moves to ``kvae/pretrained/files/NAME`` (shipped).
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


def snapshot(run_dir, name, command, note=None, since=None, resume=None, until=None):
    os.makedirs(HERE, exist_ok=True)
    checkpoint = os.path.join(run_dir, "backup", "latest.weights.h5")
    finished = os.path.isfile(os.path.join(run_dir, "model.keras"))
    if os.path.isfile(checkpoint):
        model_weights_only(checkpoint, os.path.join(HERE, f"{name}.weights.h5"))
        with open(os.path.join(run_dir, "backup", "training_metadata.json")) as f:
            position = json.load(f)
    elif finished:  # its model.keras is the result, packed as NAME.package (module docstring)
        position = None
    else:
        raise SystemExit(f"{run_dir} has neither a checkpoint (backup/latest.weights.h5) nor a model.keras")
    with open(os.path.join(run_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    config = json.load(open(os.path.join(run_dir, "config.json")))
    record_path = os.path.join(HERE, f"{name}.json")
    record = json.load(open(record_path)) if os.path.exists(record_path) else {"name": name, "segments": []}
    # the sitting's start: given (a resumed run keeps its config.json), else when the run was created
    started = (datetime.datetime.fromisoformat(since) if since else
               datetime.datetime.fromtimestamp(os.path.getmtime(os.path.join(run_dir, "config.json"))))
    now = datetime.datetime.fromisoformat(until) if until else datetime.datetime.now()
    segment = {"run_dir": run_dir, "started": started.isoformat(timespec="seconds"),
               "snapshot": now.isoformat(timespec="seconds"), "hours": round((now - started).total_seconds() / 3600, 2),
               "epochs_completed": len(rows), "checkpoint": position,
               "optimizer_steps": _steps(config, len(rows)),
               "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
               "resume": resume, "finished": finished, "note": note}
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


#: what each long run aims at (validation NLL in nats, static binarised MNIST; docs/results.md)
TARGETS = {"vlae-binarized-mnist": "≤ 80.5 (the paper: 79.03)",
           "lvae-binarized-mnist": "≤ 80.0, goal ≤ 78.3 (the ladder anchor)",
           "lvae-pixelcnn-binarized-mnist": "≤ 80.0, goal ≤ 78.3 (the ladder anchor)"}


#: the top of the plot's y axis (nats): docs/results.md says so
PLOT_TOP = 92.0


def best_model(run_dir, out):
    """OUT: RUN_DIR's model (rebuilt from its config.json) with the best weights of its validated epochs
    (``best/best.weights.h5``: the averaged weights under ``--ema``), its config.json, and its
    history.json with ``best_epoch`` (1-based) and ``epochs_done`` added; returns the model."""
    import shutil

    from kvae.training import files
    from kvae.training.transfer import run_model_with_weights

    def read_json(path):  # one line, naming the file, for a missing or unreadable one
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError) as err:
            raise SystemExit(f"long_runs.py best: error: cannot read {path} "
                             f"({getattr(err, 'strerror', None) or err}): is {run_dir} a kvae run directory?")

    read_json(os.path.join(run_dir, "config.json"))  # before anything is written: it must be readable
    history = read_json(os.path.join(run_dir, "history.json"))
    weights, state = (os.path.join(run_dir, "best", f) for f in ("best.weights.h5", "best.json"))
    best = read_json(state) if os.path.isfile(state) else {}
    if best.get("best_epoch") is None or not os.path.isfile(weights):
        raise SystemExit(f"{run_dir} has no best weights yet (train with --keep-best for an epoch)")
    model, _ = run_model_with_weights(run_dir, weights)
    os.makedirs(out, exist_ok=True)
    files.save_model(model, os.path.join(out, "model.keras"))
    shutil.copyfile(os.path.join(run_dir, "config.json"), os.path.join(out, "config.json"))
    history.update(best_epoch=best["best_epoch"] + 1, epochs_done=len(history.get("loss", [])))
    files.write_json(os.path.join(out, "history.json"), history, indent=1)
    return model


def records(root=HERE):
    """{name: record} of every ``NAME.json`` in ``root``, by name."""
    out = {}
    for name in sorted(f[:-5] for f in os.listdir(root) if f.endswith(".json")):
        with open(os.path.join(root, f"{name}.json")) as f:
            out[name] = json.load(f)
    return out


def plot_limits(kept, top=PLOT_TOP):
    """The plot's y range (nats): from 78, or below the lowest value recorded, to ``top`` (the first
    epochs of a run, far above, are cut off so that the ends of the curves can be told apart)."""
    lowest = min(r["neg_elbo"] for record in kept.values() for r in record["validation"])
    return min(78.0, math.floor(lowest) - 1.0), top


def plot(out, root=HERE):
    """A PNG of every record's validation −ELBO by epoch (``docs/results/long_runs.png``); returns the
    plotted curves, {name: (epochs, values)}, read back from the figure's lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    kept = records(root)
    for name, record in kept.items():
        curve = record["validation"]
        ax.plot([r["epoch"] for r in curve], [r["neg_elbo"] for r in curve], marker=".", ms=3, label=name)
    ax.set_xlabel("epoch of the run")
    ax.set_ylabel("validation −ELBO (nats)")
    ax.set_ylim(*plot_limits(kept))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out)
    drawn = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}
    plt.close(fig)
    return drawn


def table(root=HERE):
    """The Markdown table of every record in ``root`` (docs/results.md holds it between
    ``<!-- long-runs -->`` markers; tests/test_results_docs.py checks it is this rendering)."""
    lines = ["| run | sittings | epochs | optimizer steps | hours | best validation −ELBO (epoch) | last | target NLL |",
             "|---|---|---|---|---|---|---|---|"]
    for name, record in records(root).items():
        curve = record["validation"]
        best = min(curve, key=lambda r: r["neg_elbo"])
        # epochs and steps count from the start of their run directory: the last segment of each
        # directory holds its total (an exact resume continues a directory, a warm start opens one)
        last = {}
        for seg in record["segments"]:
            last[seg["run_dir"]] = seg
        steps = sum(seg["optimizer_steps"] or 0 for seg in last.values())
        epochs = sum(seg["epochs_completed"] for seg in last.values())
        lines.append(f"| `{name}` | {len(record['segments'])} | {epochs} | {steps} | "
                     f"{record['total_hours']:.2f} | {best['neg_elbo']:.2f} ({best['epoch']}) | "
                     f"{curve[-1]['neg_elbo']:.2f} | {TARGETS.get(name, '')} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    s = sub.add_parser("snapshot")
    s.add_argument("run_dir")
    s.add_argument("name")
    s.add_argument("--command", required=True, help="the kvae train command of the run")
    s.add_argument("--note")
    s.add_argument("--since", help="when this sitting started (ISO time; default: when the run directory was made)")
    s.add_argument("--resume", choices=("exact", "warm"), help="how this sitting continued the run")
    s.add_argument("--until", help="when the run stopped, for a run stopped before the snapshot (ISO time; default: now)")
    t = sub.add_parser("table", help="print the Markdown table of the records (docs/results.md)")
    t.add_argument("--root", default=HERE, help="the folder of the records (default: apps/long_runs)")
    g = sub.add_parser("plot", help="a PNG of the records' validation curves (docs/results/long_runs.png)")
    g.add_argument("out")
    g.add_argument("--root", default=HERE, help="the folder of the records (default: apps/long_runs)")
    b = sub.add_parser("best", help="a run directory of the run's best weights so far (for evaluate and pack)")
    b.add_argument("run_dir")
    b.add_argument("out_dir")
    args = parser.parse_args()
    if args.action == "plot":
        plot(args.out, args.root)
        print(f"wrote {args.out}")
        return
    if args.action == "best":
        from kvae.errors import KvaeError

        try:
            best_model(args.run_dir, args.out_dir)
        except KvaeError as err:  # e.g. best weights that do not fit config.json: one line naming the file
            raise SystemExit(f"long_runs.py best: error: {err}") from None
        print(f"wrote {args.out_dir}: model.keras (best weights of {args.run_dir}), config.json, history.json")
        return
    if args.action == "table":
        print(table(args.root), end="")
        return
    snapshot(args.run_dir, args.name, args.command, args.note, args.since, args.resume, args.until)


if __name__ == "__main__":
    main()
