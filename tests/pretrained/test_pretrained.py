"""Pretrained models: packing, float16 storage, sha256 checks, fetch as a run directory that the
CLI reads, and the shipped models reproducing the numbers their manifests record."""
import json
import os

import numpy as np
import pytest

from kvae.cli import main as cli
from kvae.pretrained import store as pretrained
from kvae.training import runs
from kvae.errors import RunError

REQUIRED = ("vae-binarized-mnist", "vlae-binarized-mnist", "rae-binarized-mnist", "lvae-pixelcnn-binarized-mnist")


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "vae"
    runs.train(model="vae", dataset="digits", out=str(run), epochs=2, batch_size=50, hidden=(64,), latent_dim=6,
               seed=3, verbose=0)
    root = tmp_path_factory.mktemp("zoo")
    pretrained.pack(str(run), "tiny-vae", root=str(root), description="test",
                    measured={"nll": 1.0, "k": 10, "n": 5, "split": "valid"})
    model, _ = runs.load_run(str(run))
    return root, model, run


def test_float16_storage_rounds_each_weight_and_keeps_the_rest(packed):
    root, model, _ = packed
    loaded = pretrained.load("tiny-vae", root=str(root))
    assert len(loaded.weights) == len(model.weights)
    for a, b in zip(model.weights, loaded.weights):
        assert a.name == b.name and str(a.dtype) == str(b.dtype)
        x, y = np.asarray(a.numpy()), np.asarray(b.numpy())
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_array_equal(y, x.astype(np.float16).astype(x.dtype))
        else:
            np.testing.assert_array_equal(y, x)


def test_float16_storage_moves_the_nll_by_less_than_005_nats(packed, digits):
    _, model, _ = packed
    x, _ = digits["valid"].arrays()
    copy = pretrained.quantised_copy(model, "float16")
    a = model.log_likelihood(x[:200], k=50, seed=7).numpy()
    b = copy.log_likelihood(x[:200], k=50, seed=7).numpy()
    assert abs(a.mean() - b.mean()) < 0.05
    assert np.abs(a - b).max() > 0  # the storage did change the weights


def test_a_changed_file_or_an_unknown_name_is_named(packed, tmp_path):
    root, _, _ = packed
    with pytest.raises(RunError, match="no pretrained model 'nope'; available: tiny-vae"):
        pretrained.load("nope", root=str(root))
    import shutil

    copy = tmp_path / "zoo"
    shutil.copytree(root, copy)
    path = copy / "tiny-vae" / "weights.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(RunError, match="weights.npz has sha256 .* the file is damaged"):
        pretrained.load("tiny-vae", root=str(copy))
    os.remove(path)
    with pytest.raises(RunError, match="weights.npz is missing"):
        pretrained.verify("tiny-vae", root=str(copy))


def test_fetch_writes_a_run_directory_the_cli_evaluates(packed, tmp_path, monkeypatch, digits):
    root, _, _ = packed
    monkeypatch.setattr(pretrained, "ROOT", str(root))
    out = tmp_path / "fetched"
    assert cli.main(["pretrained", "fetch", "tiny-vae", "--out", str(out)]) == 0
    assert json.loads((out / "pretrained.json").read_text())["measured"]["nll"] == 1.0
    assert cli.main(["pretrained", "fetch", "tiny-vae", "--out", str(out)]) == 1  # never overwrites
    report = tmp_path / "eval.json"
    assert cli.main(["evaluate", str(out), "--split", "valid", "--k", "20", "--limit", "100",
                     "--json", str(report)]) == 0
    x, _ = digits["valid"].arrays()
    direct = pretrained.load("tiny-vae").log_likelihood(x[:100], k=20, seed=0).numpy()
    assert json.loads(report.read_text())["nll"] == pytest.approx(-direct.mean(), abs=1e-3)


def _optimizer_variables(path):
    import zipfile

    import h5py

    with zipfile.ZipFile(path) as z, z.open("model.weights.h5") as f, h5py.File(f, "r") as h5:
        names = []
        h5.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return [n for n in names if n.startswith("optimizer/")]


def test_fetch_ships_the_model_alone_unless_the_optimizer_is_asked_for(packed, tmp_path, monkeypatch, digits):
    import keras

    root, model, run = packed
    monkeypatch.setattr(pretrained, "ROOT", str(root))
    run_config = json.loads((run / "config.json").read_text())
    alone, full = tmp_path / "alone", tmp_path / "full"
    assert cli.main(["pretrained", "fetch", "tiny-vae", "--out", str(alone)]) == 0
    assert cli.main(["pretrained", "fetch", "tiny-vae", "--out", str(full), "--with-optimizer"]) == 0
    assert _optimizer_variables(alone / "model.keras") == []
    assert getattr(keras.models.load_model(alone / "model.keras"), "optimizer", None) is None
    opt_vars = _optimizer_variables(full / "model.keras")
    # Adam: iterations, learning rate, and two moments per trainable variable
    assert len(opt_vars) == 2 + 2 * len(model.trainable_variables)
    assert (full / "model.keras").stat().st_size > 2 * (alone / "model.keras").stat().st_size
    loaded = keras.models.load_model(full / "model.keras")
    assert type(loaded.optimizer).__name__.lower() == run_config["optimizer"]  # the run's optimizer
    assert float(loaded.optimizer.learning_rate) == pytest.approx(run_config["lr"])
    x, _ = digits["train"].arrays()
    before = [w.copy() for w in loaded.get_weights()]
    loaded.fit(x[:100], batch_size=50, epochs=1, verbose=0)  # it trains on from the shipped weights
    assert int(loaded.optimizer.iterations.numpy()) == 2
    assert any(not np.array_equal(a, b) for a, b in zip(before, loaded.get_weights()))


def test_list_shows_name_and_numbers(packed, monkeypatch, capsys):
    root, _, _ = packed
    monkeypatch.setattr(pretrained, "ROOT", str(root))
    assert cli.main(["pretrained", "list"]) == 0
    assert "tiny-vae" in capsys.readouterr().out


@pytest.mark.parametrize("name", pretrained.names())
def test_shipped_model_loads_and_reproduces_its_recorded_check(name, mnist_dir):
    """The manifest's ``check``: NLL (or, for a deterministic encoder, the reconstruction error) of
    the first n validation images at k, seed 0, measured from the stored float16 weights when the
    model was packed; reproduced within its standard error."""
    from kvae.data import datasets as data

    info = pretrained.manifest(name)
    measured = info["measured"]
    for key in ("split", "epochs", "train_seconds", "commit", "storage_nll_change", "check"):
        assert key in measured, f"{name}: manifest lacks measured.{key}"
    check = measured["check"]
    model = pretrained.load(name)
    x, _ = data.load("binarized_mnist", "valid", mnist_dir).arrays()
    xs = x[:check["n"]]
    if model.has_density:
        assert measured["nll"] is not None and measured["k"] >= 100 and measured["n"] == 10000
        assert abs(measured["storage_nll_change"]["change"]) < 0.05  # float16 storage: < 0.05 nats
        value = -model.log_likelihood(xs, k=check["k"], seed=0).numpy().mean()
        assert abs(value - check["nll"]) <= check["standard_error"], (value, check)
    else:
        assert measured["rec_loss"] > 0 and measured["rec_loss_n"] == 10000
        value = -model.decode(model.posterior_means(xs)).log_prob(xs).numpy().mean()
        assert abs(value - check["rec_loss"]) <= check["standard_error"], (value, check)


def test_the_required_models_ship():
    assert set(REQUIRED) <= set(pretrained.names())
    total = sum(os.path.getsize(os.path.join(pretrained.ROOT, n, f)) for n in pretrained.names()
                for f in os.listdir(os.path.join(pretrained.ROOT, n)))
    assert total <= 30 * 2 ** 20


def test_docs_table_is_the_manifests():
    import subprocess
    import sys

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..")
    table = subprocess.run([sys.executable, os.path.join(root, "apps", "pack_pretrained.py"), "table"],
                           capture_output=True, text=True, check=True).stdout
    for doc in ("pretrained.md", "results.md"):
        text = open(os.path.join(root, "docs", doc)).read()
        start = text.index("<!-- table -->\n") + len("<!-- table -->\n")
        assert text[start:text.index("<!-- /table -->")].strip() == table.strip(), doc


def test_readme_pretrained_commands_run(tmp_path, monkeypatch):
    """The README's one-command sampling from the pretrained VLAE, run as written."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers"))
    from doc_commands import command_lines

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..")
    commands = [c for c in command_lines(os.path.join(root, "README.md")) if "runs/vlae-pre" in " ".join(c)]
    assert [c[0] for c in commands] == ["pretrained", "sample"]
    monkeypatch.chdir(tmp_path)
    for argv in commands:
        assert cli.main(argv) == 0, argv
    assert os.path.getsize(tmp_path / "runs" / "vlae-pre" / "samples.png") > 1000


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vae-binarized-mnist", "vlae-binarized-mnist",
                                  "lvae-pixelcnn-binarized-mnist"])
def test_fetch_and_evaluate_at_k100_reproduce_the_shipped_number(name, mnist_dir, tmp_path):
    """The issue's acceptance command, on all 10,000 validation images (minutes: slow)."""
    info = pretrained.manifest(name)["measured"]
    shipped = next(e for e in info["evaluations"] if e["k"] == 100)
    out, report = tmp_path / "run", tmp_path / "eval.json"
    assert cli.main(["pretrained", "fetch", name, "--out", str(out)]) == 0
    assert cli.main(["evaluate", str(out), "--dataset", "binarized_mnist", "--data-dir", mnist_dir, "--split",
                     "valid", "--k", "100", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["n"] == 10000
    assert abs(result["nll"] - shipped["nll"]) <= shipped["nll_stderr"]


def _pack_pretrained():
    import importlib.util

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..")
    spec = importlib.util.spec_from_file_location("pack_pretrained", os.path.join(root, "apps", "pack_pretrained.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_later_evaluation_at_a_larger_k_becomes_the_headline_and_keeps_the_others(tmp_path):
    merge = _pack_pretrained().merge_evaluations

    def written(name, split="valid", **result):
        path = tmp_path / name
        path.write_text(json.dumps(dict(dataset="binarized_mnist", split=split, n=10000, elbo=-81.7,
                                        neg_elbo=81.7, rec_loss=68.0, kl=13.7, active_units=7852, **result)))
        return str(path)

    measured = {"dataset": "binarized_mnist", "split": "valid", "nll": 79.96, "nll_stderr": 0.2, "k": 100,
                "n": 10000, "evaluations": [{"k": 100, "n": 10000, "nll": 79.96, "nll_stderr": 0.2}]}
    merge(measured, [written("k1000.json", k=1000, nll=79.84, nll_stderr=0.19)])
    assert [(e["k"], e["nll"]) for e in measured["evaluations"]] == [(100, 79.96), (1000, 79.84)]
    assert (measured["k"], measured["nll"], measured["nll_stderr"]) == (1000, 79.84, 0.19)
    # a repeated smaller k replaces its own entry only: the headline stays the largest k's
    merge(measured, [written("k100.json", k=100, nll=79.95, nll_stderr=0.2)])
    assert [(e["k"], e["nll"]) for e in measured["evaluations"]] == [(100, 79.95), (1000, 79.84)]
    assert (measured["k"], measured["nll"]) == (1000, 79.84)
    # the file must be an evaluation of the recorded split, with its numbers; nothing changes otherwise
    with pytest.raises(ValueError, match="split 'train', but the manifest records 'valid'"):
        merge(measured, [written("train.json", split="train", k=5000, nll=70.0, nll_stderr=0.1)])
    with pytest.raises(ValueError, match="no number for nll_stderr"):
        merge(measured, [written("bad.json", k=5000, nll=70.0)])
    with pytest.raises(ValueError, match="no number for nll"):
        merge(measured, [written("bool.json", k=5000, nll=True, nll_stderr=0.1)])
    limited = json.loads(open(written("limit.json", k=5000, nll=75.0, nll_stderr=0.5)).read())
    (tmp_path / "limit.json").write_text(json.dumps({**limited, "n": 500}))  # kvae evaluate --limit 500
    with pytest.raises(ValueError, match="n 500, but the manifest's evaluations are of 10000 examples"):
        merge(measured, [str(tmp_path / "limit.json")])
    assert (measured["k"], len(measured["evaluations"])) == (1000, 2)


def test_add_eval_rewrites_only_the_manifests_evaluations_and_given_keys(tmp_path):
    """``add-eval`` on a copy of a shipped model's directory: the k = 1000 file becomes the headline, the
    k = 100 entry stays, --drop removes a key, --extra adds one; the weight files are untouched."""
    import shutil

    pack = _pack_pretrained()
    name = "lvae-pixelcnn-binarized-mnist"
    shutil.copytree(os.path.join(pretrained.ROOT, name), tmp_path / name)
    before = pretrained.manifest(name)
    path = tmp_path / "k1000.json"
    path.write_text(json.dumps({"dataset": "binarized_mnist", "split": "valid", "k": 1000, "n": 10000, "nll": 79.8,
                                "nll_stderr": 0.2, "elbo": -81.7, "neg_elbo": 81.7, "rec_loss": 67.9, "kl": 13.7,
                                "active_units": 7852}))
    before["measured"]["pending"] = "k=1000"
    (tmp_path / name / "manifest.json").write_text(json.dumps(before))
    pack.add_evaluations(name, [str(path)], {"nll_method": "kvae evaluate"}, ["pending"], root=str(tmp_path))
    after = pretrained.manifest(name, root=str(tmp_path))
    m = after["measured"]
    assert (m["k"], m["nll"], m["nll_method"]) == (1000, 79.8, "kvae evaluate") and "pending" not in m
    assert [e["k"] for e in m["evaluations"]] == [100, 1000]
    assert m["evaluations"][0] == before["measured"]["evaluations"][0]
    assert {k: v for k, v in after.items() if k != "measured"} == {k: v for k, v in before.items() if k != "measured"}
    args = pack.build_parser().parse_args(["add-eval", name, "a.json", "--drop", "x", "--drop", "y"])
    assert (args.eval, args.drop) == (["a.json"], ["x", "y"])


def test_an_evaluation_kept_between_sittings_continues_in_a_run_directory_fetched_anew(packed, tmp_path, monkeypatch,
                                                                                     capsys):
    """docs/pretrained.md's "Runs longer than one sitting": the journal of an interrupted `kvae evaluate`
    of a fetched model, copied into a run directory fetched anew, is continued there by the same
    command (after its first batch) and gives the uninterrupted result."""
    import shutil

    from kvae.evaluation.journal import FILE, NLLJournal

    root, _, _ = packed
    monkeypatch.setattr(pretrained, "ROOT", str(root))
    dirs = {}
    for name in ("first", "second", "whole"):
        dirs[name] = tmp_path / name
        assert cli.main(["pretrained", "fetch", "tiny-vae", "--out", str(dirs[name])]) == 0
    command = ["--split", "valid", "--k", "30", "--limit", "300", "--batch-size", "100"]

    class Stop(Exception):
        pass

    save = NLLJournal.save

    def save_then_stop(self, values):  # the sitting ends after the first batch's values are kept
        save(self, values)
        raise Stop

    with monkeypatch.context() as m:
        m.setattr(NLLJournal, "save", save_then_stop)
        with pytest.raises(Stop):
            cli.main(["evaluate", str(dirs["first"]), *command])
    shutil.copy(dirs["first"] / FILE, tmp_path / "kept.evaluate.journal.npz")  # kept between sittings
    shutil.copy(tmp_path / "kept.evaluate.journal.npz", dirs["second"] / FILE)
    capsys.readouterr()
    assert cli.main(["evaluate", str(dirs["second"]), *command, "--json", str(tmp_path / "continued.json")]) == 0
    assert "continuing the evaluation after example 100" in capsys.readouterr().err
    assert not (dirs["second"] / FILE).exists()  # removed once complete
    assert cli.main(["evaluate", str(dirs["whole"]), *command, "--json", str(tmp_path / "whole.json")]) == 0
    continued, whole = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("continued", "whole"))
    assert continued["nll"] == pytest.approx(whole["nll"], abs=1e-4)
    assert continued["nll_stderr"] == pytest.approx(whole["nll_stderr"], abs=1e-4)
