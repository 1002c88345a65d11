"""Make a shipped pretrained model from a training run, and record what was measured on it.

    # 1. store the run's model (float16) as kvae/pretrained/files/NAME
    python apps/pack_pretrained.py pack RUN_DIR NAME --description "..."
    # 2. evaluate the *stored* weights as a user would
    kvae pretrained fetch NAME --out R && kvae evaluate R --split valid --k 5000 --json eval.json
    # 3. record the numbers in the manifest: that evaluation, the run's epochs and time, the commit,
    #    what float16 storage changed (float32 run vs stored weights, same noise), and a quick
    #    check (first N validation images at small k) that tests/pretrained/test_pretrained.py reproduces
    python apps/pack_pretrained.py record NAME RUN_DIR --eval eval.json [--check-n 200 --check-k 100]
    # later, another evaluation of the shipped model (a larger k), without the training run:
    python apps/pack_pretrained.py add-eval NAME eval-k1000.json

``record`` keeps the weight files (their sha256 does not change); only manifest.json is rewritten.
"""
import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _nll(model, x, k, seed=0):
    if not model.has_density:
        return None
    return -model.log_likelihood(x, k=k, seed=seed).numpy()


def merge_evaluations(measured, eval_json):
    """Merge ``kvae evaluate --json`` results (paths, one per k) into ``measured`` in place: every k is
    kept in ``measured["evaluations"]`` (a new file replaces the entry of its k), and the headline
    numbers (NLL, its standard error, ELBO, KL, active units, k, n) become those of the largest k
    when that k is among the given files.  Each file must be of the recorded data set and split and,
    once an evaluation is recorded, of as many examples (not a ``--limit`` subset)."""
    evaluations = {str(e["k"]): e for e in measured.get("evaluations", [])}
    given = []
    for path in ([eval_json] if isinstance(eval_json, str) else list(eval_json or [])):
        with open(path) as f:
            result = json.load(f)
        missing = [key for key in ("k", "n", "nll", "nll_stderr")
                   if isinstance(result.get(key), bool) or not isinstance(result.get(key), (int, float))]
        if missing:
            raise ValueError(f"{path}: no number for {', '.join(missing)} (not a kvae evaluate --json file?)")
        for key in ("dataset", "split"):
            if measured.get(key) is not None and result.get(key) != measured[key]:
                raise ValueError(f"{path}: {key} {result.get(key)!r}, but the manifest records {measured[key]!r}")
        if measured.get("n") is not None and result["n"] != measured["n"]:
            raise ValueError(f"{path}: n {result['n']}, but the manifest's evaluations are of {measured['n']} "
                             "examples (all of the split; not an evaluation with --limit)")
        given.append(result)
        evaluations[str(given[-1]["k"])] = {key: given[-1].get(key) for key in ("k", "n", "nll", "nll_stderr")}
    if evaluations:  # every k is kept; the headline numbers are those of the largest k
        measured["evaluations"] = sorted(evaluations.values(), key=lambda e: e["k"])
        largest = max(given, key=lambda r: r["k"], default=None)
        if largest is not None and largest["k"] == measured["evaluations"][-1]["k"]:
            for key in ("nll", "nll_stderr", "elbo", "neg_elbo", "rec_loss", "kl", "active_units", "k", "n"):
                measured[key] = largest.get(key)
    return measured


def add_evaluations(name, eval_json, extra=None, drop=(), root=None):
    """Add evaluations of the shipped model to its manifest without its training run (``record``
    needs the run directory; an evaluation at a larger k often comes later): only the evaluation
    entries, the headline numbers, ``extra`` keys and the removal of ``drop`` keys change."""
    from kvae.pretrained import store as pretrained

    info = pretrained.manifest(name, root)
    measured = merge_evaluations(dict(info.get("measured", {})), eval_json)
    measured.update(extra or {})
    for key in drop:
        measured.pop(key, None)
    info["measured"] = measured
    with open(os.path.join(pretrained.ROOT if root is None else root, name, "manifest.json"), "w") as f:
        json.dump(info, f, indent=1, default=float)
    return measured


def record(name, run_dir, eval_json=None, check_n=200, check_k=100, data_dir=None, extra=None):
    from kvae.data import datasets as data
    from kvae.pretrained import store as pretrained
    from kvae.training import runs

    info = pretrained.manifest(name)
    stored = pretrained.load(name)
    original, config = runs.load_run(run_dir)
    x, _ = data.load(config["dataset"], "valid", data_dir).arrays()
    with open(os.path.join(run_dir, "history.json")) as f:
        history = json.load(f)
    measured = dict(info.get("measured", {}))
    measured.update({
        "split": "valid", "dataset": config["dataset"],
        "epochs": len(history.get("loss", [])), "best_epoch": history.get("best_epoch"),
        "train_seconds": history.get("seconds"), "train_steps": history.get("steps"),
        "commit": _commit(),
        "train_command": extra.get("train_command") if extra else None,
    })
    merge_evaluations(measured, eval_json)
    xs = x[:check_n]
    a, b = _nll(original, xs, check_k), _nll(stored, xs, check_k)
    if a is not None:
        diff = b - a
        measured["storage_nll_change"] = {"float32_run_nll": float(a.mean()), "stored_nll": float(b.mean()),
                                          "change": float(diff.mean()), "k": check_k, "n": len(xs),
                                          "same_noise": True}
        measured["check"] = {"n": len(xs), "k": check_k, "seed": 0, "nll": float(b.mean()),
                             "standard_error": float(np.std(b) / math.sqrt(len(b)))}
    else:  # deterministic encoders: reconstruction error of the stored vs the float32 weights
        ra = -original.decode(original.posterior_means(xs)).log_prob(xs).numpy()
        rb = -stored.decode(stored.posterior_means(xs)).log_prob(xs).numpy()
        measured["storage_nll_change"] = {"float32_run_rec_loss": float(ra.mean()), "stored_rec_loss": float(rb.mean()),
                                          "change": float((rb - ra).mean()), "n": len(xs)}
        measured["check"] = {"n": len(xs), "rec_loss": float(rb.mean()),
                             "standard_error": float(np.std(rb) / math.sqrt(len(rb)))}
    if extra:
        measured.update({k: v for k, v in extra.items() if k != "train_command"})
    info["measured"] = measured
    path = os.path.join(pretrained.ROOT, name, "manifest.json")
    with open(path, "w") as f:
        json.dump(info, f, indent=1, default=float)
    return measured


def parse_keras_log(path):
    """Per-epoch metrics from a ``kvae train --quiet`` log (Keras' one line per epoch)."""
    import re

    rows = []
    with open(path) as f:
        for line in f:
            if " - loss: " not in line and " - neg_elbo: " not in line:
                continue
            rows.append({k: float(v) for k, v in re.findall(r"(\w+): ([-+0-9.eE]+)", line)})
    return rows


def project(log, gap, target, key="val_neg_elbo", start=5):
    """Fit the validation −ELBO per epoch with a + b · epoch^(−c) (epochs ≥ ``start``) and project
    the NLL (−ELBO − ``gap``, the gap measured at the end of the run) to later epochs: the epoch
    where it would reach ``target`` (None if the fitted asymptote stays above it) and the asymptote.
    An extrapolation, not a measurement."""
    from scipy.optimize import curve_fit

    rows = parse_keras_log(log)
    y = np.array([r[key] for r in rows], np.float64)
    e = np.arange(1, len(y) + 1, dtype=np.float64)
    keep = e >= start

    def f(t, a, b, c):
        return a + b * t ** (-c)

    (a, b, c), _ = curve_fit(f, e[keep], y[keep], p0=(y[-1] - 2.0, 20.0, 0.7), maxfev=20000)
    reach = None
    if a - gap < target and b > 0:
        reach = float(((target + gap - a) / b) ** (-1.0 / c))
    return {"fit": {"a": float(a), "b": float(b), "c": float(c), "form": "a + b * epoch^-c", "epochs_fitted":
                    [int(start), int(len(y))]},
            "gap_elbo_minus_nll": float(gap), "target_nll": float(target),
            "projected_nll_asymptote": float(a - gap), "projected_epoch_reaching_target": reach,
            "projected_nll_at": {str(n): float(f(n, a, b, c) - gap) for n in (100, 200, 500, 1000)}}


def curve(log, out, title, best_epoch=None, projection=None):
    """Training and validation negative ELBO per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = parse_keras_log(log)
    epochs = np.arange(1, len(rows) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for key, label in (("neg_elbo", "training"), ("val_neg_elbo", "validation")):
        ax.plot(epochs, [r.get(key, np.nan) for r in rows], label=f"{label} −ELBO")
    if best_epoch:
        ax.axvline(best_epoch, color="grey", ls=":", label=f"kept: epoch {best_epoch}")
    if projection:
        fit = projection["fit"]
        t = np.arange(fit["epochs_fitted"][0], max(len(rows), 1) * 3 + 1)
        ax.plot(t, fit["a"] + fit["b"] * t ** (-fit["c"]), "--", color="C1", alpha=0.6,
                label="validation −ELBO, fitted and projected")
        ax.axhline(projection["target_nll"] + projection["gap_elbo_minus_nll"], color="C3", ls="-.", alpha=0.6,
                   label=f"−ELBO at which the NLL would be {projection['target_nll']:g}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per image")
    ax.set_title(title, fontsize=10)
    values = [r.get("val_neg_elbo", np.nan) for r in rows] + [r.get("neg_elbo", np.nan) for r in rows]
    finite = [v for v in values if np.isfinite(v)]
    if finite:
        low = min(finite)
        ax.set_ylim(low - 2, low + 25)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def table():
    """The Markdown table of the shipped models (docs/pretrained.md holds exactly this)."""
    from kvae.pretrained import store as pretrained

    lines = ["| name | NLL (valid, nats) | other k | −ELBO | epochs (kept) | training time | float16 change |",
             "|---|---|---|---|---|---|---|"]
    for name in pretrained.names():
        m = pretrained.manifest(name)["measured"]
        if m.get("nll") is not None:
            nll = f"**{m['nll']:.2f} ± {m['nll_stderr']:.2f}** (k={m['k']}, n={m['n']})"
            other = ", ".join(f"{e['nll']:.2f} ± {e['nll_stderr']:.2f} (k={e['k']}, n={e['n']})"
                              for e in m.get("evaluations", []) if e["k"] != m["k"]) or "–"
            elbo = f"{m['neg_elbo']:.2f}"
            change = f"{m['storage_nll_change']['change']:+.4f} nats"
        else:
            nll, other, elbo = "– (deterministic encoder)", "–", "–"
            change = f"{m['storage_nll_change']['change']:+.4f} nats of reconstruction error"
        kept = f"{m['epochs']} ({m.get('best_epoch') or m['epochs']})"
        lines.append(f"| `{name}` | {nll} | {other} | {elbo} | {kept} | {m['train_seconds'] / 60:.0f} min | {change} |")
    return "\n".join(lines) + "\n"


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack")
    a.add_argument("run_dir")
    a.add_argument("name")
    a.add_argument("--description", default="")
    a.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    r = sub.add_parser("record")
    r.add_argument("name")
    r.add_argument("run_dir")
    r.add_argument("--eval", nargs="*", default=[],
                   help="JSON file(s) written by kvae evaluate --json on the fetched model (one per k)")
    r.add_argument("--check-n", type=int, default=200)
    r.add_argument("--check-k", type=int, default=100)
    r.add_argument("--data-dir", default=os.environ.get("KVAE_DATA_DIR"))
    r.add_argument("--train-command")
    r.add_argument("--extra", help="JSON object of further numbers to record")
    v = sub.add_parser("add-eval", help="add kvae evaluate --json results (e.g. a later k=1000) to a shipped "
                                        "model's manifest; the training run is not needed")
    v.add_argument("name")
    v.add_argument("eval", nargs="+", help="JSON file(s) written by kvae evaluate --json on the fetched model")
    v.add_argument("--extra", help="JSON object of further numbers to record")
    v.add_argument("--drop", action="append", default=[], metavar="KEY",
                   help="a key of 'measured' to remove (repeat for more)")
    c = sub.add_parser("curve", help="training curve PNG from a kvae train --quiet log")
    c.add_argument("log")
    c.add_argument("out")
    c.add_argument("--title", default="")
    c.add_argument("--best-epoch", type=int)
    c.add_argument("--project", nargs=2, type=float, metavar=("GAP", "TARGET"),
                   help="fit and project the validation curve; GAP = -ELBO minus NLL at the end")
    sub.add_parser("table", help="print the Markdown table of the shipped models")
    return p


def main():
    args = build_parser().parse_args()
    if args.command == "curve":
        proj = project(args.log, *args.project) if args.project else None
        print(curve(args.log, args.out, args.title, args.best_epoch, proj))
        if proj:
            print(json.dumps(proj, indent=1))
        return
    if args.command == "table":
        print(table(), end="")
        return
    from kvae.pretrained import store as pretrained

    if args.command == "pack":
        print(pretrained.pack(args.run_dir, args.name, dtype=args.dtype, description=args.description))
        return
    extra = json.loads(args.extra) if args.extra else {}
    if args.command == "add-eval":
        print(json.dumps(add_evaluations(args.name, args.eval, extra, args.drop), indent=1))
        return
    if args.train_command:
        extra["train_command"] = args.train_command
    print(json.dumps(record(args.name, args.run_dir, args.eval, args.check_n, args.check_k, args.data_dir, extra),
                     indent=1))


if __name__ == "__main__":
    main()
