"""The kvae command, end to end on the bundled digits data (in-process, plus one real subprocess)."""
import json
import os
import subprocess
import sys

import matplotlib.image as mpimg
import pytest

from kvae.cli import main as cli


@pytest.fixture(scope="module")
def vae_run_and_output(tmp_path_factory):
    import contextlib
    import io

    out = str(tmp_path_factory.mktemp("runs") / "vae")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(["train", "--model", "vae", "--dataset", "digits", "--epochs", "3", "--hidden", "64,64",
                         "--latent-dim", "8", "--out", out, "--quiet"]) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def vae_run(vae_run_and_output):
    return vae_run_and_output[0]


def test_the_wrote_line_lists_what_the_run_directory_holds(vae_run_and_output):
    out, printed = vae_run_and_output
    line = printed.strip().splitlines()[-1]
    assert line.startswith(f"wrote {out}: ")
    listed = line[len(f"wrote {out}: "):].split(", ")
    held = [name + "/" if os.path.isdir(os.path.join(out, name)) else name for name in os.listdir(out)]
    assert sorted(listed) == sorted(set(held) - {"train.lock"})
    assert {"history.csv", "logs/", "kl_per_dim.png", "backup/"} <= set(listed)


def test_rerunning_a_finished_train_command_says_so_and_changes_nothing(vae_run_and_output, capsys):
    out, _ = vae_run_and_output
    before = {name: open(os.path.join(out, name), "rb").read() for name in ("model.keras", "history.csv")}
    assert cli.main(["train", "--model", "vae", "--dataset", "digits", "--epochs", "3", "--hidden", "64,64",
                     "--latent-dim", "8", "--out", out, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines() == [
        f"{out} already finished 3 epochs: nothing to do (pass --epochs above 3 to continue it)"]
    assert {name: open(os.path.join(out, name), "rb").read() for name in before} == before


def test_train_writes_the_run_directory(vae_run):
    for name in ("model.keras", "config.json", "history.json", "samples.png", "reconstructions.png",
                 "kl_per_dim.png"):
        assert os.path.isfile(os.path.join(vae_run, name)), name
    assert os.listdir(os.path.join(vae_run, "logs"))
    history = json.load(open(os.path.join(vae_run, "history.json")))
    assert len(history["val_neg_elbo"]) == 3 and history["val_neg_elbo"][-1] < history["val_neg_elbo"][0]
    config = json.load(open(os.path.join(vae_run, "config.json")))
    assert config["dataset"] == "digits" and config["model_config"]["latent_dim"] == 8
    assert config["steps_per_execution"] == 10  # kvae.training.runs.train's default, read by the CLI
    model = __import__("keras").models.load_model(os.path.join(vae_run, "model.keras"))
    assert model.steps_per_execution == 10
    # the figures are the model's own: 64 means of p(x|z) at the run's seed 0, and the first 32 validation
    # digits each followed by its reconstruction
    import numpy as np

    from kvae.data import datasets as data

    _assert_png_is_grid(os.path.join(vae_run, "samples.png"), model.sample(64, seed=0), ncol=8)
    x = data.load("digits", "valid").arrays()[0][:32]
    _assert_png_is_grid(os.path.join(vae_run, "reconstructions.png"), _pairs(x, model.reconstruct(x)), ncol=8)
    assert np.abs(np.asarray(model.sample(64, seed=1)) - np.asarray(model.sample(64, seed=0))).max() > 0.1


def test_evaluate_prints_a_table_and_writes_json(vae_run, tmp_path, capsys):
    path = str(tmp_path / "eval.json")
    assert cli.main(["evaluate", vae_run, "--split", "test", "--k", "50", "--json", path]) == 0
    assert "NLL (importance-sampled)" in capsys.readouterr().out
    result = json.load(open(path))
    assert {"nll", "elbo", "kl", "active_units", "k", "n"} <= set(result)
    assert result["k"] == 50 and result["n"] == 360
    assert result["nll"] > 0 and result["nll"] < -result["elbo"]  # the k = 50 bound is tighter than the ELBO
    # k is used: with k = 1 the importance-sampled estimate is a one-sample ELBO, clearly looser on average
    path1 = str(tmp_path / "e1.json")
    assert cli.main(["evaluate", vae_run, "--split", "test", "--k", "1", "--json", path1]) == 0
    assert json.load(open(path1))["nll"] > result["nll"] + 0.1
    assert abs(sum(result["kl_per_dim"]) - result["kl"]) < 1e-3


def _progress_in_lines(monkeypatch, cli_progress):
    """The commands' progress as LineProgress (what a log file gets) even when stderr is a terminal."""
    monkeypatch.setattr(cli_progress, "progress", lambda total, unit, what, every=60.0: cli_progress.LineProgress(
        total, unit, what, every))


def test_an_interrupted_evaluate_continues_where_it_stopped(vae_run, tmp_path, capsys, monkeypatch):
    """kvae evaluate keeps the finished batches' log-likelihoods in RUN_DIR/evaluate.journal.npz: killed
    as the second batch is reported, the same command continues after example 200 and prints the uninterrupted
    result; the kept values are used, not recomputed, unless --fresh."""
    from kvae.cli import progress as cli_progress

    _progress_in_lines(monkeypatch, cli_progress)
    import numpy as np

    from kvae.evaluation.journal import NLLJournal

    journal = os.path.join(vae_run, "evaluate.journal.npz")
    args = ["evaluate", vae_run, "--split", "test", "--k", "20", "--seed", "5"]
    want, got = str(tmp_path / "want.json"), str(tmp_path / "got.json")
    assert cli.main(args + ["--json", want]) == 0
    assert not os.path.exists(journal)  # removed when complete
    update = cli_progress.LineProgress.update

    def kill_at_the_second_batch():
        def killed(self, current, *a, **kw):
            if current >= 200:
                raise KeyboardInterrupt
            return update(self, current, *a, **kw)

        with monkeypatch.context() as m:
            m.setattr(cli_progress.LineProgress, "update", killed)
            with pytest.raises(KeyboardInterrupt):
                cli.main(args)
        with np.load(journal) as f:
            return NLLJournal(journal, json.loads(str(f["key"]))), f["values"]

    _, kept = kill_at_the_second_batch()
    assert len(kept) == 200
    capsys.readouterr()
    assert cli.main(args + ["--json", got]) == 0
    assert "continuing the evaluation after example 200" in capsys.readouterr().err
    assert json.load(open(got))["nll"] == json.load(open(want))["nll"]
    assert not os.path.exists(journal)
    for extra, shift in (([], 100.0 * 200 / 360), (["--fresh"], 0.0)):
        same, kept = kill_at_the_second_batch()
        same.save(kept - 100.0)  # changed values under the same key: used as they are (or dropped)
        assert cli.main(args + extra + ["--json", got]) == 0
        assert abs(json.load(open(got))["nll"] - json.load(open(want))["nll"] - shift) < 1e-3


def test_a_continued_evaluate_counts_its_own_examples(vae_run, tmp_path, monkeypatch):
    """--limit 250 (batches of 100, 100 and 50), killed as the second batch is reported: the rerun's bar
    counts the 50 examples it computes (so its rate and time left are this run's), and its result, the
    last partial batch included, is the uninterrupted one."""
    from kvae.cli import progress as cli_progress

    _progress_in_lines(monkeypatch, cli_progress)

    args = ["evaluate", vae_run, "--split", "test", "--k", "5", "--seed", "6", "--limit", "250"]
    want, got = str(tmp_path / "want.json"), str(tmp_path / "got.json")
    assert cli.main(args + ["--json", want]) == 0
    update = cli_progress.LineProgress.update

    def killed(self, current, *a, **kw):
        if current >= 100:  # this run's count: the second batch
            raise KeyboardInterrupt
        return update(self, current, *a, **kw)

    with monkeypatch.context() as m:
        m.setattr(cli_progress.LineProgress, "update", lambda self, current, *a, **kw: (
            killed(self, current, *a, **kw) if current >= 200 else update(self, current, *a, **kw)))
        with pytest.raises(KeyboardInterrupt):
            cli.main(args)
    shown = []
    init = cli_progress.LineProgress.__init__

    def recorded_init(self, target, *a, **kw):
        shown.append(("target", target))
        init(self, target, *a, **kw)

    monkeypatch.setattr(cli_progress.LineProgress, "__init__", recorded_init)
    monkeypatch.setattr(cli_progress.LineProgress, "update",
                        lambda self, current, *a, **kw: (shown.append(("at", current)), update(self, current, *a, **kw)))
    assert cli.main(args + ["--json", got]) == 0
    assert shown == [("target", 50), ("at", 50)]
    assert json.load(open(got))["nll"] == json.load(open(want))["nll"]
    assert not os.path.exists(os.path.join(vae_run, "evaluate.journal.npz"))


def test_a_second_concurrent_evaluate_keeps_no_journal(vae_run, tmp_path, capsys):
    """While another process holds the run directory (another kvae evaluate, here this test's lock), an
    evaluate says so, leaves the other's journal as it is and writes none, and prints the result; once
    released, the directory is held by the next evaluate."""
    import numpy as np

    from kvae.evaluation.journal import hold_run_dir

    journal = os.path.join(vae_run, "evaluate.journal.npz")
    args = ["evaluate", vae_run, "--split", "test", "--k", "5", "--seed", "7", "--limit", "200"]
    want, got = str(tmp_path / "want.json"), str(tmp_path / "got.json")
    assert cli.main(args + ["--json", want]) == 0
    other = hold_run_dir(vae_run)
    assert other >= 0 and hold_run_dir(vae_run) is None
    try:
        np.savez(journal, key=np.array("the other evaluation's"), values=np.ones(100, np.float32))
        before = open(journal, "rb").read()
        capsys.readouterr()
        assert cli.main(args + ["--json", got]) == 0
        assert "this one keeps no journal" in capsys.readouterr().err
        assert open(journal, "rb").read() == before
        assert json.load(open(got))["nll"] == json.load(open(want))["nll"]
    finally:
        os.close(other)
        os.remove(journal)
    held = hold_run_dir(vae_run)
    assert held >= 0
    os.close(held)


def test_evaluate_nll_jobs_gives_the_one_process_result(vae_run, tmp_path, monkeypatch):
    """--nll-jobs 2: the NLL computed in two worker processes (from the run's model.keras) is the
    one-process value (float32 rounding aside); the ELBO and KL are computed in the main process."""
    from kvae.evaluation import parallel

    one, two = str(tmp_path / "one.json"), str(tmp_path / "two.json")
    args = ["evaluate", vae_run, "--split", "test", "--k", "20", "--seed", "2"]
    assert cli.main(args + ["--json", one]) == 0
    calls, run = [], parallel.parallel_log_likelihood
    monkeypatch.setattr(parallel, "parallel_log_likelihood",
                        lambda *a, **kw: calls.append((a[0], kw["jobs"])) or run(*a, **kw))
    assert cli.main(args + ["--nll-jobs", "2", "--json", two]) == 0
    assert calls == [(os.path.join(vae_run, "model.keras"), 2)]
    a, b = json.load(open(one)), json.load(open(two))
    assert abs(a["nll"] - b["nll"]) < 1e-4 and a["neg_elbo"] == b["neg_elbo"]


def test_a_journal_continues_across_nll_jobs(vae_run, tmp_path, monkeypatch):
    """Interrupted as the second batch is reported, a one-process evaluation is continued by --nll-jobs 2
    and a --nll-jobs 2 evaluation by one process: both end at the uninterrupted result (float32
    rounding aside), after the kept 200 examples."""
    from kvae.cli import progress as cli_progress

    _progress_in_lines(monkeypatch, cli_progress)
    import numpy as np

    journal = os.path.join(vae_run, "evaluate.journal.npz")
    args = ["evaluate", vae_run, "--split", "test", "--k", "20", "--seed", "7"]
    want, got = str(tmp_path / "want.json"), str(tmp_path / "got.json")
    assert cli.main(args + ["--json", want]) == 0
    update = cli_progress.LineProgress.update

    def killed(self, current, *a, **kw):
        if current >= 200:
            raise KeyboardInterrupt
        return update(self, current, *a, **kw)

    for first, then in (([], ["--nll-jobs", "2"]), (["--nll-jobs", "2"], [])):
        with monkeypatch.context() as m:
            m.setattr(cli_progress.LineProgress, "update", killed)
            with pytest.raises(KeyboardInterrupt):
                cli.main(args + first)
        with np.load(journal) as f:
            assert len(f["values"]) == 200
        assert cli.main(args + then + ["--json", got]) == 0
        assert not os.path.exists(journal)
        assert abs(json.load(open(got))["nll"] - json.load(open(want))["nll"]) < 1e-4


def _assert_png_is_grid(path, images, ncol):
    """The PNG ``path`` shows exactly :func:`image_grid` of ``images`` (to the PNG's 8-bit quantisation)."""
    import numpy as np

    from kvae.evaluation.plotting import image_grid

    shown = mpimg.imread(path)[..., 0]
    want = image_grid(np.asarray(images), ncol=ncol)  # [H, W] for one channel
    assert shown.shape == want.shape
    np.testing.assert_allclose(shown, want, atol=2 / 255)


def _pairs(x, reconstructions):
    """Each image followed by its reconstruction, as ``kvae reconstruct`` and reconstructions.png show them."""
    import numpy as np

    x = np.asarray(x)
    return np.stack([x, np.asarray(reconstructions)], axis=1).reshape((-1,) + x.shape[1:])


def test_sample_and_reconstruct_write_pngs(vae_run, tmp_path):
    from kvae.data import datasets as data
    from kvae.training import runs

    s, r = str(tmp_path / "s.png"), str(tmp_path / "r.png")
    assert cli.main(["sample", vae_run, "--n", "16", "--out", s]) == 0
    assert cli.main(["reconstruct", vae_run, "--dataset", "digits", "--n", "8", "--out", r]) == 0
    model, _ = runs.load_run(vae_run)
    _assert_png_is_grid(s, model.sample(16, seed=0), ncol=8)  # E[x|z], z ~ p(z), --seed's default 0
    x = data.load("digits", "test").arrays()[0][:8]  # --split's default: test
    _assert_png_is_grid(r, _pairs(x, model.reconstruct(x)), ncol=8)


def test_conditional_sampling_from_the_cli(tmp_path):
    import numpy as np

    from kvae.training import runs

    out = str(tmp_path / "cvae")
    assert cli.main(["train", "--model", "cvae", "--epochs", "1", "--hidden", "32", "--latent-dim", "2",
                     "--out", out, "--quiet"]) == 0
    assert cli.main(["sample", out, "--n", "6", "--labels", "3,1,4,1,5,9", "--out", str(tmp_path / "s.png")]) == 0
    assert cli.main(["sample", out, "--n", "4", "--labels", "7", "--out", str(tmp_path / "s7.png")]) == 0
    model, _ = runs.load_run(out)
    _assert_png_is_grid(str(tmp_path / "s.png"), model.sample(6, labels=[3, 1, 4, 1, 5, 9], seed=0), ncol=6)
    _assert_png_is_grid(str(tmp_path / "s7.png"), model.sample(4, labels=7, seed=0), ncol=4)
    # the labels matter: the same codes drawn as classes 0..5 (cycling) give other images
    assert np.abs(np.asarray(model.sample(6, seed=0)) - np.asarray(model.sample(6, labels=[3, 1, 4, 1, 5, 9],
                                                                                  seed=0))).max() > 0.05


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "/nonexistent/run"], "does not exist"),
    (["sample", "{run}", "--n", "4", "--labels", "3", "--out", "x.png"], "only applies to conditional"),
    (["evaluate", "{run}", "--dataset", "binarized_mnist", "--data-dir", "{empty}", "--limit", "2"],
     "binarized_mnist not found"),
    (["evaluate", "{run}", "--k", "0"], "argument --k: must be > 0"),
    (["evaluate", "{run}", "--nll-jobs", "0"], "argument --nll-jobs: must be > 0"),
    (["evaluate", "{run}", "--nll-jobs", "999"], "argument --nll-jobs: 999 processes on"),
])
def test_errors_are_one_line_and_exit_nonzero(vae_run, tmp_path, capsys, monkeypatch, argv, message):
    from kvae.data import datasets as data

    monkeypatch.setattr(data, "_reachable", lambda host, timeout=5.0: False)
    monkeypatch.delenv("KVAE_DATA_DIR", raising=False)
    argv = [a.format(run=vae_run, empty=str(tmp_path)) for a in argv]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("kvae ")


def test_corrupt_model_file_is_named(vae_run, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    data = open(os.path.join(vae_run, "model.keras"), "rb").read()
    (broken / "model.keras").write_bytes(data[: len(data) // 2])
    assert cli.main(["sample", str(broken), "--out", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert str(broken / "model.keras") in err and "corrupt" in err


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "kvae.cli", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--latent-dim" in result.stdout and "--out" in result.stdout
    from kvae.training import runs

    help_text = " ".join(result.stdout.split())
    assert f"(default: {runs.STEPS_PER_EXECUTION}; 1 under --strategy mirrored or multiworker)" in help_text


@pytest.mark.parametrize("strategy", ["mirrored", "multiworker"])
def test_several_steps_per_call_are_refused_under_a_strategy(tmp_path, strategy):
    """Keras' multi-step loop fails under a distribution strategy (keras-team/keras#19246)."""
    from kvae.training import runs
    from kvae.errors import ConfigError

    with pytest.raises(ConfigError, match=f"--steps-per-execution 4 fails under --strategy {strategy}"):
        runs.train(model="vae", dataset="digits", out=str(tmp_path / "r"), strategy=strategy,
                   steps_per_execution=4)
