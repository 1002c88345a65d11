"""docs/results.md's VLAE tables state what the recorded JSONs of their runs hold.

Each table row is found by its first cell and its numbers are compared with the JSON written by the
command the section names (copied to docs/results/), rounded as the table rounds them.
"""
import json
import os

import pytest

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs")


def _load(rel):
    with open(os.path.join(DOCS, "results", rel)) as f:
        return json.load(f)


def _row(first_cell_start, section):
    """The cells of the table row in ``section`` of results.md whose first cell starts with the text."""
    text = open(os.path.join(DOCS, "results.md")).read()
    start = text.index(section)
    end = text.find("\n## ", start + 1)
    for line in text[start:end if end > 0 else None].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(first_cell_start):
            return [c.replace("*", "") for c in cells]
    raise AssertionError(f"no row starting {first_cell_start!r} in section {section!r}")


@pytest.mark.parametrize("name,first_cell", [("resnet_input", "defaults: ResNet"),
                                             ("mlp_every_layer", "`--network mlp")])
def test_vlae_defaults_ten_epoch_row(name, first_cell):
    report = _load("vlae_defaults/vlae_defaults.json")
    assert report["settings"]["epochs"] == 10 and report["settings"]["k"] == 100
    r = report["results"][name]
    cells = _row(first_cell, "The same comparison at 10 epochs")
    assert cells[1] == f"{r['train_seconds']:.0f} s"
    assert cells[2] == ", ".join(f"{r['val_neg_elbo'][e]:.2f}" for e in (0, 3, 6, 9))
    assert cells[3] == ", ".join(f"{r['val_kl'][e]:.2f}" for e in (0, 3, 6, 9))
    assert cells[4] == f"{r['nll']:.2f} ± {r['nll_stderr']:.2f}"
    assert cells[5] == f"{r['kl']:.2f}"
    assert cells[6] == f"{r['active_units']}/{r['latent_dim']}"


@pytest.mark.parametrize("name", ["local", "wide"])
def test_vlae_receptive_field_six_epoch_row(name):
    report = _load("vlae_rf_mnist_6ep/vlae_receptive_field.json")
    s = report["settings"]
    assert (s["epochs"], s["limit"], s["eval_limit"], s["k"]) == (6, 50000, 500, 100)
    r = report["results"][name]
    cells = _row(name + ":", "### Receptive field decides what z carries")
    rf = r["receptive_field"]
    assert cells[1] == f"{rf['rows_above']}, {rf['size']}"
    assert cells[2] == f"{r['kl']:.2f}"
    assert cells[3] == f"{r['active_units']}/{r['latent_dim']}"
    assert cells[4] == f"{r['nll']:.2f} ± {r['nll_stderr']:.2f}"
    assert cells[5] == f"{r['identity_kept']:.3f}"
    assert cells[6] == f"{r['train_seconds']:.0f} s"


def test_vlae_receptive_field_verdict_follows_the_recorded_criteria():
    report = _load("vlae_rf_mnist_6ep/vlae_receptive_field.json")
    local, wide = report["results"]["local"], report["results"]["wide"]
    # the app's criteria recomputed from the recorded numbers, and the docs' verdict with them
    assert report["criteria"] == {"local_kl_clearly_positive": local["kl"] > 1.0,
                                  "wide_carries_less": local["kl"] > 2 * wide["kl"],
                                  "local_keeps_identity_more": local["identity_kept"] > wide["identity_kept"]}
    text = open(os.path.join(DOCS, "results.md")).read()
    section = text[text.index("### Receptive field decides what z carries"):]
    verdict = "**Reproduced.**" if report["reproduced"] else "**Partly reproduced.**"
    assert verdict in section.split("\n## ")[0]


def test_vlae_docs_quote_the_ten_epoch_nll():
    r = _load("vlae_defaults/vlae_defaults.json")["results"]["resnet_input"]
    text = open(os.path.join(DOCS, "vlae.md")).read()
    assert f"validation NLL of {r['nll']:.2f} (k={r['k']}, first {r['n']} images)" in text.replace("\n  ", " ")


def test_identity_kept_and_its_independence_baseline():
    """apps/vlae_receptive_field.py: the identity fraction and the agreement expected of reconstructions
    drawn independently of their originals, against a count written out by hand."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location(
        "vlae_rf_app", os.path.join(os.path.dirname(__file__), "..", "apps", "vlae_receptive_field.py"))
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)

    class Flat:  # features = the flattened image; class = its first pixel
        def transform(self, x):
            return x

        def predict(self, f):
            return f[:, 0].astype(int)

    originals = np.array([0, 0, 1, 1, 2, 2, 2, 2], float).reshape(8, 1, 1)
    recons = np.array([0, 1, 1, 1, 2, 0, 0, 2], float).reshape(8, 1, 1)
    kept, chance = app.identity_agreement(Flat(), Flat(), originals, recons)
    assert kept == pytest.approx(5 / 8)  # positions 0, 2, 3, 4, 7 agree
    # P(orig): 2/8, 2/8, 4/8; P(recon): 3/8, 3/8, 2/8
    assert chance == pytest.approx((2 * 3 + 2 * 3 + 4 * 2) / 64)


def long_runs_table(*args):
    """The output of ``python apps/long_runs.py table ...`` (the app run as documented, not imported)."""
    import subprocess
    import sys

    script = os.path.join(DOCS, "..", "apps", "long_runs.py")
    return subprocess.run([sys.executable, script, "table", *args], capture_output=True, text=True, check=True).stdout


def test_long_runs_table_is_the_records():
    """docs/results.md's table of the long runs is apps/long_runs.py's rendering of their records."""
    text = open(os.path.join(DOCS, "results.md")).read()
    start = text.index("<!-- long-runs -->\n") + len("<!-- long-runs -->\n")
    assert text[start:text.index("<!-- /long-runs -->")] == long_runs_table()


def test_long_runs_plot_draws_every_records_validation_curve(tmp_path):
    """apps/long_runs.py plot draws each record's validation -ELBO by epoch (read back from the figure);
    docs/results.md shows the PNG it wrote, which is in the repository and is, pixel for pixel, what the
    records draw now (a record changed without regenerating the PNG fails here)."""
    import runpy

    import matplotlib.image as mpimg
    import numpy as np

    app = runpy.run_path(os.path.join(DOCS, "..", "apps", "long_runs.py"))
    drawn = app["plot"](str(tmp_path / "curves.png"))
    root = app["HERE"]
    names = sorted(f[:-5] for f in os.listdir(root) if f.endswith(".json"))
    assert sorted(drawn) == names and (tmp_path / "curves.png").stat().st_size > 10000
    for name in names:
        curve = json.load(open(os.path.join(root, f"{name}.json")))["validation"]
        assert drawn[name] == ([r["epoch"] for r in curve], [r["neg_elbo"] for r in curve])
    text = " ".join(open(os.path.join(DOCS, "results.md")).read().split())
    assert "![validation -ELBO of the long runs](results/long_runs.png)" in text
    assert f"the axis stops at {app['PLOT_TOP']:.0f} nats" in text
    committed, fresh = (mpimg.imread(p) for p in (os.path.join(DOCS, "results", "long_runs.png"), tmp_path / "curves.png"))
    assert committed.shape == fresh.shape and np.array_equal(committed, fresh)


def test_long_runs_plot_keeps_the_lowest_value_in_view():
    """The y axis starts at 78 nats, or below a record's lowest value (the PixelCNN ladder's goal is 78.3):
    no end of a curve is cut off at the bottom."""
    import runpy

    limits = runpy.run_path(os.path.join(DOCS, "..", "apps", "long_runs.py"))["plot_limits"]
    curve = [{"neg_elbo": v} for v in (120.0, 85.0, 80.2)]
    assert limits({"a": {"validation": curve}}) == (78.0, 92.0)
    assert limits({"a": {"validation": curve}, "b": {"validation": [{"neg_elbo": 77.4}]}}) == (76.0, 92.0)


def test_likelihood_table_is_the_manifests_and_records():
    """docs/results.md's likelihood table is apps/likelihood_table.py's rendering: every shipped model with a
    likelihood appears with its manifest's NLL, k and images; the anchors follow, marked as published."""
    import subprocess
    import sys

    import kvae

    script = os.path.join(DOCS, "..", "apps", "likelihood_table.py")
    rendered = subprocess.run([sys.executable, script], capture_output=True, text=True, check=True).stdout
    text = open(os.path.join(DOCS, "results.md")).read()
    start = text.index("<!-- likelihood -->\n") + len("<!-- likelihood -->\n")
    assert text[start:text.index("<!-- /likelihood -->")] == rendered
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in rendered.splitlines()[2:]}
    for name in kvae.pretrained.names():
        m = kvae.pretrained.manifest(name)["measured"]
        if m.get("nll") is None:
            assert not any(name in label for label in rows), name
            continue
        row = rows[f"kvae `{name}` (shipped)"]
        assert row[2] == str(m["k"]) and row[3] == f"**{m['nll']:.2f} ± {m['nll_stderr']:.2f}**"
        assert row[4] == f"valid, {m['n']}"
    import runpy

    anchors = runpy.run_path(script)["ANCHORS"]
    assert [label for label in rows if not label.startswith("kvae")] == [a[0] for a in anchors]
    assert all(row[-1].endswith("(published) |") for label, row in rows.items() if not label.startswith("kvae"))


def test_long_runs_count_each_run_directory_once(tmp_path):
    """Exact resumes continue a run directory (cumulative epochs and steps); a warm start opens a new one."""
    def seg(run_dir, epochs, hours):
        return {"run_dir": run_dir, "epochs_completed": epochs, "optimizer_steps": epochs * 500, "hours": hours}

    record = {"name": "r", "segments": [seg("a", 10, 1.0), seg("a", 25, 2.0), seg("b", 4, 0.5)],
              "total_hours": 3.5, "validation": [{"epoch": e, "neg_elbo": 100.0 - e, "kl": 1.0} for e in (1, 2, 3, 4)]}
    with open(tmp_path / "r.json", "w") as f:
        json.dump(record, f)
    row = long_runs_table("--root", str(tmp_path)).splitlines()[-1]
    assert row.startswith("| `r` | 3 | 29 | 14500 | 3.50 | 96.00 (4) | 96.00 |")


def test_disentanglement_claim_quotes_the_paired_standard_error():
    """The three seeds are paired (same seed, data order and metric draws for both models): the docs quote
    the standard error of the per-seed differences recorded by apps/disentanglement.py's claim, recomputed here."""
    import numpy as np

    claim = _load("disentanglement_dsprites/results.json")["claim"]
    f, b = claim["factorvae"], claim["beta_vae"]
    assert f["seeds"] == b["seeds"] == claim["paired_seeds"] == [0, 1, 2]
    d = np.array(f["factorvae_metric"]["values"]) - np.array(b["factorvae_metric"]["values"])
    se = d.std(ddof=1) / np.sqrt(len(d))
    assert claim["paired_difference_standard_error"] == pytest.approx(se, rel=1e-12)
    text = " ".join(open(os.path.join(DOCS, "results.md")).read().split())
    assert (f"by {d.mean():.3f} in the mean, with a paired standard error of {se:.3f} for that difference" in text)
    assert "differences " + ", ".join(f"{v:.3f}" for v in d) + " over √3" in text
    assert f"; {d.mean() / se:.1f} standard errors: not established at 3 seeds" in text
