"""The likelihood table of docs/results.md: kvae's shipped models and long runs next to the published anchors.

    python apps/likelihood_table.py

prints the Markdown table that docs/results.md holds between ``<!-- likelihood -->`` markers
(tests/test_results_docs.py checks it is this rendering).  kvae's rows come from the shipped
manifests (``kvae.pretrained.manifest(name)["measured"]``: NLL, k, images, training budget) and from
the long-run records in ``apps/long_runs/`` (a run still under way, or stopped without finishing,
shows its best validation −ELBO, an upper bound on its NLL; a finished run ships and has its row above); the anchors are the published numbers below, on their own
splits and hardware.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

# (model, data, k, NLL, split, budget, source): published numbers, not measured here ("–": not stated
# where we read them: ../shared/REFERENCES.md and the hierarchical-model issue)
ANCHORS = [
    ("Ladder VAE, top-down ResNet, 12 stochastic layers", "static", 1000, 78.30, "test", "–", "addtt/ladder-vae-pytorch"),
    ("Ladder VAE, top-down ResNet, 6 stochastic layers", "static", 1000, 78.52, "test", "–", "addtt/ladder-vae-pytorch"),
    ("Ladder VAE, top-down ResNet, 3 stochastic layers", "static", 1000, 79.24, "test", "–", "addtt/ladder-vae-pytorch"),
    ("VLAE (AF prior + local PixelCNN)", "static", 4096, 79.03, "test", "–", "Chen et al. 2017, Table 1"),
    ("NVAE", "dynamic", "–", 78.01, "test", "2 V100 × 21 h", "Vahdat & Kautz 2020"),
    ("BIVA", "dynamic", "–", 78.41, "test", "–", "Maaløe et al. 2019"),
    ("VampPrior, K = 500", "static", "–", 85.79, "test", "–", "pythae's reproduction"),
    ("IWAE, k = 50", "static", "–", 86.82, "test", "–", "pythae's reproduction"),
    ("VAE, MLP 784-400-40", "static", 200, 89.78, "test", "–", "pythae's reproduction"),
]

COMMAND = "`kvae pretrained fetch {name} --out R && kvae evaluate R --split valid --k {k}`"


def shipped_rows():
    """One row per shipped model with a likelihood: (label, k, NLL ± SE, images, budget, command)."""
    from kvae.pretrained import store

    rows = []
    for name in store.names():
        m = store.manifest(name)["measured"]
        if m.get("nll") is None:
            continue
        budget = f"{m['epochs']} epochs, {m['train_seconds'] / 3600:.1f} h on 2 CPU cores"
        rows.append((f"kvae `{name}` (shipped)", "static", m["k"], f"**{m['nll']:.2f} ± {m['nll_stderr']:.2f}**",
                     f"valid, {m['n']}", budget, COMMAND.format(name=name, k=m["k"])))
    return rows


def long_run_rows(root=os.path.join(HERE, "long_runs")):
    """One row per long run not finished and not shipped: its best validation −ELBO (an upper bound on its NLL)."""
    from kvae.pretrained import store

    rows = []
    for file in sorted(f for f in os.listdir(root) if f.endswith(".json")):
        with open(os.path.join(root, file)) as f:
            record = json.load(f)
        if record["name"] in store.names() or any(s.get("finished") for s in record["segments"]):
            continue
        best = min(record["validation"], key=lambda r: r["neg_elbo"])
        last = {s["run_dir"]: s for s in record["segments"]}
        epochs = sum(s["epochs_completed"] for s in last.values())
        rows.append((f"kvae `{record['name']}` (long run, not shipped)", "static", "–",
                     f"≤ {best['neg_elbo']:.2f} (−ELBO)", "valid, 10000",
                     f"{epochs} epochs, {record['total_hours']:.1f} h on 2 CPU cores", f"`apps/long_runs/{file}`"))
    return rows


def table():
    lines = ["| model | data | k | NLL (nats) | split, images | budget | command / source |",
             "|---|---|---|---|---|---|---|"]
    for row in shipped_rows() + long_run_rows():
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    for model, data, k, nll, split, budget, source in ANCHORS:
        lines.append(f"| {model} | {data} | {k} | {nll:.2f} | {split} | {budget} | {source} (published) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table(), end="")
