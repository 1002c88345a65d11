"""The speed figures in docs/benchmarks.md are the committed benchmarks/results.json rendered by
benchmarks/render_tables.py (so every figure is one ``python -m benchmarks`` measured), and the timing
helpers compute what they say."""
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import _peer_metrics  # noqa: E402
import _timing  # noqa: E402
import render_tables  # noqa: E402


def test_docs_quote_the_committed_results_exactly():
    with open(os.path.join(ROOT, "benchmarks", "results.json")) as f:
        report = json.load(f)
    assert not report["quick"], "the committed results come from a full run, not a smoke run"
    for name in ("vlae_step", "vae_epoch", "is_eval", "vlae_sampling", "distributed_throughput", "serving_latency"):
        assert name in report["benchmarks"] and "error" not in report["benchmarks"][name], name
    text = open(os.path.join(ROOT, "docs", "benchmarks.md")).read()
    start, end = text.index("<!-- results -->\n") + len("<!-- results -->\n"), text.index("<!-- /results -->")
    assert text[start:end].strip() == render_tables.render(report).strip()


def test_docs_quote_the_peer_comparison_exactly():
    with open(os.path.join(ROOT, "benchmarks", "peer_pythae.json")) as f:
        report = json.load(f)
    assert {"vae", "beta-vae", "iwae"} <= set(report["results"])
    text = open(os.path.join(ROOT, "docs", "benchmarks.md")).read()
    start, end = text.index("<!-- peer -->\n") + len("<!-- peer -->\n"), text.index("<!-- /peer -->")
    assert text[start:end].strip() == render_tables.render_peer(report).strip()


def test_peer_reconstruction_error_is_the_bernoulli_log_likelihood():
    from scipy import stats

    rng = np.random.default_rng(0)
    x = (rng.random((7, 30)) < 0.4).astype(np.float32)
    mean = rng.uniform(0.01, 0.99, (7, 30))
    expected = -stats.bernoulli.logpmf(x, mean).sum(axis=1).mean()
    assert _peer_metrics.bernoulli_error(x, mean) == pytest.approx(expected, rel=1e-12)
    # probabilities of exactly 0 or 1 are clipped, not infinite
    assert np.isfinite(_peer_metrics.bernoulli_error(np.ones((1, 2)), np.zeros((1, 2))))


def test_summary_is_numpy_percentiles():
    rng = np.random.RandomState(0)
    x = rng.gamma(2.0, size=101)
    s = _timing.summary(x)
    assert s["n"] == 101 and s["median"] == pytest.approx(np.median(x))
    assert s["p10"] == pytest.approx(np.percentile(x, 10)) and s["p90"] == pytest.approx(np.percentile(x, 90))
    assert s["iqr"] == pytest.approx(np.percentile(x, 75) - np.percentile(x, 25))
    assert _timing.ratio({"a": {"steps": {"median": 3.0}}, "b": {"steps": {"median": 2.0}}}, "a", "b") == 1.5


def test_interleaved_calls_alternate_and_leave_warmup_out():
    order = []
    out = _timing.interleaved_calls({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3)
    assert order == ["a", "b", "a", "b", "a", "b", "a", "b"]  # one warm-up each, then alternating
    assert out["a"]["calls"]["n"] == 3 and out["b"]["calls"]["n"] == 3


def test_profile_finds_the_ops_that_ran():
    import tensorflow as tf

    import _profile

    w = tf.random.normal((256, 256))

    @tf.function
    def f():
        return tf.reduce_sum(tf.nn.relu(tf.matmul(w, w)))

    result = _profile.profile(lambda: f().numpy(), repeats=2)
    ops = {o["op"] for o in result["by_op_type"]}
    assert any("MatMul" in o for o in ops), ops
    assert sum(o["share"] for o in result["by_op_type"]) <= 1.0 + 1e-9


def test_the_entry_point_runs_a_benchmark_end_to_end(tmp_path):
    """`python -m benchmarks --quick --only vae_epoch` writes one JSON with the machine, the commit
    and the benchmark's steady-state summary and same-run ratio."""
    import subprocess

    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "vae_epoch", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["quick"] and report["machine"]["logical_cpus"] >= 1 and report["commit"]
    r = report["benchmarks"]["vae_epoch"]
    assert r["results"]["kvae"]["steps"]["n"] > 0 and r["ratio_kvae_over_baseline"] > 0
    assert "kvae" in render_tables.render(report)
    bad = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "nope"], cwd=ROOT, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "unknown benchmark(s) nope" in bad.stderr


def test_the_ladder_baseline_computes_kvae_loss():
    """benchmarks/lvae_step.py times a hand-written objective against kvae's: on a small hierarchy
    with the precision merge (the benchmark's) both give the same loss."""
    import keras

    import kvae
    import lvae_step

    keras.utils.set_random_seed(0)
    model = kvae.LadderVAE(input_shape=(12, 12, 1), groups=2, channels=8, latent_channels=3, blocks=1, seed=0)
    baseline = lvae_step.hand_written_lvae(model)
    x = (np.random.RandomState(0).uniform(size=(6, 12, 12, 1)) > 0.5).astype("float32")
    parity, scale = lvae_step.loss_parity(model, baseline, x)
    assert scale > 1.0 and parity < 1e-4 * scale
    # a different model (the residual merge) is a different loss: the comparison can fail
    other = kvae.LadderVAE(input_shape=(12, 12, 1), groups=2, channels=8, latent_channels=3, blocks=1, seed=0,
                           merge="residual")
    other.set_weights(model.get_weights())
    assert lvae_step.loss_parity(other, baseline, x)[0] > 1e-2


def test_no_benchmark_or_app_script_shadows_an_installed_package():
    """benchmarks/ is on sys.path in a test worker (above): a script named like an installed top-level package
    (benchmarks/markdown.py did: Markdown, a tensorboard dependency) would replace it for every later import."""
    import importlib.metadata

    installed = importlib.metadata.packages_distributions()
    for folder in ("benchmarks", "apps", os.path.join("tests", "helpers")):
        names = {f[:-3] for f in os.listdir(os.path.join(ROOT, folder)) if f.endswith(".py")}
        assert not names & set(installed), (folder, sorted(names & set(installed)))


def test_docs_quote_the_cli_latency_run():
    with open(os.path.join(ROOT, "benchmarks", "cli_latency.json")) as f:
        report = json.load(f)
    kvae, base = report["results"]["kvae_help"], report["results"]["python_baseline"]
    assert kvae["median_over_baseline_s"] == pytest.approx(kvae["median_s"] - base["median_s"])
    sentence = (f"**CLI start-up** (`benchmarks/cli_latency.py`, run {report['date']}, `benchmarks/cli_latency.json`): "
                f"`kvae --help` takes a median {kvae['median_s']:.3f} s over {kvae['n']} fresh "
                f"processes, a bare `python -c pass` {base['median_s']:.3f} s in the same interleaved "
                f"rounds, so kvae adds {kvae['median_over_baseline_s']:.3f} s.")
    assert sentence in open(os.path.join(ROOT, "docs", "benchmarks.md")).read()


def test_docs_quote_the_mutation_results_exactly():
    """docs/testing.md's mutation table is benchmarks/mutation_testing.json rendered, and the JSON names files
    that exist (a module or test moved since the measurement makes the JSON stale)."""
    with open(os.path.join(ROOT, "benchmarks", "mutation_testing.json")) as f:
        report = json.load(f)
    for name, result in report["modules"].items():
        module = result["module"]
        path = os.path.join(ROOT, "export", module) if module.startswith("kvae_serve/") else os.path.join(ROOT, module)
        assert os.path.exists(path), (name, module)
        for item in result["tests"]:
            if item.startswith("tests/"):
                assert os.path.exists(os.path.join(ROOT, item)), (name, item)
        assert set(result["equivalent"]) <= set(result["survivors"]), name
    text = open(os.path.join(ROOT, "docs", "testing.md")).read()
    start, end = text.index("<!-- mutation -->\n") + len("<!-- mutation -->\n"), text.index("<!-- /mutation -->")
    assert text[start:end].strip() == render_tables.render_mutation(report).strip()


def test_cli_docs_quote_the_nll_jobs_measurement():
    """docs/cli.md's --nll-jobs figure is the committed benchmarks/evaluate_jobs.json (a full run), whose
    speedup is the ratio of its medians."""
    with open(os.path.join(ROOT, "benchmarks", "evaluate_jobs.json")) as f:
        report = json.load(f)
    assert not report["quick"] and report["config"]["repeats"] >= 3
    med = report["median"]
    ratio = med["two_processes"]["examples_per_s"] / med["one_process"]["examples_per_s"]
    assert report["speedup"] == pytest.approx(ratio)
    for side in ("one_process", "two_processes"):
        rates = [r[side]["examples_per_s"] for r in report["rounds"]]
        assert med[side]["examples_per_s"] == pytest.approx(float(np.median(rates)))
    text = " ".join(open(os.path.join(ROOT, "docs", "cli.md")).read().split())
    assert f"two processes evaluated the long run's ladder VAE with a PixelCNN decoder {ratio:.2f} times as fast" in text
    assert f"medians of {report['config']['repeats']} alternated rounds at k = {report['config']['k']}" in text


def test_evaluate_jobs_steady_rate_counts_from_the_last_process_first_batch():
    """Two processes in step hand back batches of 10 examples in pairs every T seconds: the steady rate is
    20/T, not the 25/T of counting from the first batch (whose partner was computed alongside it);
    one process handing back a batch every T is 10/T."""
    import evaluate_jobs

    T = 4.0
    pairs = [(T * (i // 2 + 1) + 0.01 * (i % 2), 10 * (i + 1)) for i in range(6)]
    assert evaluate_jobs.steady_rate(pairs, 2) == pytest.approx(20 / T)
    assert evaluate_jobs.steady_rate([(T * (i + 1), 10 * (i + 1)) for i in range(6)], 1) == pytest.approx(10 / T)
    staggered = [(T * (i // 2 + 1) + 1.5 * (i % 2), 10 * (i + 1)) for i in range(6)]  # one started 1.5 s later
    assert evaluate_jobs.steady_rate(staggered, 2) == pytest.approx(20 / T)
    with pytest.raises(ValueError, match="needs more than 2"):
        evaluate_jobs.steady_rate(pairs[:2], 2)


def test_cli_docs_quote_the_importance_context_measurement():
    """docs/cli.md's figure for the shared bottom-up pass is the committed benchmarks/importance_context.json
    (a full run): the ratio of its medians, with values equal to the baseline's."""
    with open(os.path.join(ROOT, "benchmarks", "importance_context.json")) as f:
        report = json.load(f)
    assert not report["quick"] and report["config"]["repeats"] >= 3 and report["max_abs_difference"] == 0.0
    res = report["results"]
    ratio = res["bottom_up_per_chunk"]["calls"]["median"] / res["shared_bottom_up"]["calls"]["median"]
    assert report["speedup"] == pytest.approx(ratio)
    text = " ".join(open(os.path.join(ROOT, "docs", "cli.md")).read().split())
    config = report["config"]
    assert (f"one process evaluated a batch of {config['batch_size']} images at k = {config['k']} {ratio:.2f} times as "
            f"fast as with the pass in every chunk (medians of {config['repeats']} alternated rounds") in text
