"""Documented promises at the package's boundaries: `import kvae`, the CLI (one truth with the
Python API, one-line errors, instant help, no TensorFlow noise), data validated before conversion,
and missing optional dependencies."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import kvae
from kvae.cli import main as cli
from kvae.training import runs
from kvae.errors import DataError
from kvae import registry
from kvae.options import model_options

NOISE = ("cuda", "cuInit", "absl", "oneDNN", "WARNING: All log messages")


def _kvae(*args, env=None, timeout=300):
    env = dict(os.environ, **(env or {}))
    env.pop("KVAE_VERBOSE_TF", None)
    return subprocess.run([sys.executable, "-c", "import sys, kvae_cli; sys.exit(kvae_cli.main())", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_import_kvae_exposes_every_documented_submodule():
    code = ("import kvae; kvae.data.load; kvae.training.callbacks.SafeBackupAndRestore; kvae.evaluation.evaluate; "
            "kvae.export.export; kvae.evaluation.plotting.save_image_grid; kvae.training.runs.train; kvae.VAE")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


_HELP_IMPORTS = """
import json, sys, kvae_cli
try:
    code = kvae_cli.main(["--help"])
except SystemExit as exit_:
    code = exit_.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tensorflow_probability", "numpy"))
print(json.dumps({"code": code, "heavy": heavy}))
"""


def test_help_is_instant_and_quiet():
    # instant = imports nothing heavy (its wall time is benchmarks/cli_latency.py's, not a test's)
    result = _kvae("--help")
    assert result.returncode == 0 and "train" in result.stdout
    assert "tensorflow" not in result.stderr.lower()
    probe = subprocess.run([sys.executable, "-c", _HELP_IMPORTS], capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    assert report["heavy"] == [], f"kvae --help imported {report['heavy'][:5]}"


def test_commands_print_no_tensorflow_noise(tmp_path):
    result = _kvae("train", "--epochs", "1", "--limit", "100", "--hidden", "8", "--latent-dim", "2", "--quiet",
                   "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-2000:]
    noisy = [line for line in (result.stdout + result.stderr).splitlines() if any(n in line for n in NOISE)]
    assert not noisy, noisy
    result = _kvae("train", "--dataset", "binarized_mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r"),
                   env={"KVAE_DATA_DIR": ""})  # CI sets it; here the file must be missing
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "binarized_mnist not found" in result.stderr


def test_kvae_verbose_tf_shows_tensorflow_start_up_messages(tmp_path):
    # the switch of docs/cli.md: the same command as above, now with TensorFlow's native messages
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell
    argv = ["train", "--epochs", "1", "--limit", "100", "--hidden", "8", "--latent-dim", "2", "--quiet"]
    shown = {}
    for verbose in ("1", None):
        run_env = dict(env, KVAE_VERBOSE_TF=verbose) if verbose else {k: v for k, v in env.items()
                                                                       if k != "KVAE_VERBOSE_TF"}
        result = subprocess.run([sys.executable, "-c", "import sys, kvae_cli; sys.exit(kvae_cli.main())", *argv,
                                 "--out", str(tmp_path / f"run{verbose}")], capture_output=True, text=True,
                                timeout=600, env=run_env)
        assert result.returncode == 0, result.stderr[-2000:]
        shown[verbose] = [line for line in result.stderr.splitlines() if any(n in line for n in NOISE)]
    assert shown["1"], "KVAE_VERBOSE_TF=1 showed none of TensorFlow's start-up messages"
    assert shown[None] == []


@pytest.mark.parametrize("argv, message", [
    (["train", "--lr", "-1", "--out", "r"], "argument --lr: must be > 0"),
    (["train", "--epochs", "0", "--out", "r"], "argument --epochs: must be > 0"),
    (["train", "--latent-dim", "0", "--out", "r"], "argument --latent-dim: must be > 0"),
    (["train", "--batch-size", "x", "--out", "r"], "argument --batch-size: expected an integer"),
    (["train", "--model", "nope", "--out", "r"], "argument --model: invalid choice"),
    (["train", "--model", "vae", "--alpha", "1", "--out", "r"], "unrecognized arguments: --alpha"),
    (["train", "--out", "r", "--flow-steps", "2"], "only apply with --prior maf|iaf"),
    (["train", "--ema", "2", "--out", "r"], "--ema: must be in (0, 1), or 0 for none"),
    (["evaluate"], "the following arguments are required: run_dir"),
    (["sample", "RUN", "--out", "x.png", "--n", "-3"], "argument --n: must be > 0"),
])
def test_cli_errors_are_one_line_exit_1(capsys, argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the relative --out r and x.png
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("kvae "), err
    assert not (tmp_path / "r").exists()  # a usage error leaves no run directory behind


def test_run_dir_that_is_a_file_and_a_corrupt_model(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert cli.main(["sample", str(f), "--out", str(tmp_path / "s.png")]) == 1
    assert "is a file, not a run directory" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"PK\x03\x04 truncated")
    assert cli.main(["sample", str(run), "--out", str(tmp_path / "s.png")]) == 1
    err = capsys.readouterr().err
    assert "is corrupt" in err and "File not found" not in err


def _cli_model(name, argv=(), dataset="digits"):
    """The model `kvae train --model NAME ARGV` builds (through the real parser)."""
    args = cli.build_parser(["train", "--model", name, *argv, "--out", "x"]).parse_args(
        ["train", "--model", name, *argv, "--out", "x"])
    options = {k[len("model__"):]: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items()
               if k.startswith("model__") and v is not None}
    split = kvae.data.load(dataset, "train")
    return runs.build_model(name, split.input_shape, split.num_classes, seed=0, binary=split.binary, **options)


def _comparable(config):
    config = dict(config)
    config.pop("name", None)
    return json.loads(json.dumps(config, default=str))


@pytest.mark.parametrize("name", registry.names("model"))
def test_cli_builds_the_python_default(name):
    cls = registry.get("model", name)
    extra = {"num_classes": 10} if name == "cvae" else {}
    if name == "beta-tcvae":
        extra["dataset_size"] = 50000  # the CLI gives the training-set size; here both use the default
        via_cli = _cli_model(name, ["--dataset-size", "50000"])
    else:
        via_cli = _cli_model(name)
    python = cls(input_shape=(8, 8, 1), seed=0, **extra)
    assert _comparable(via_cli.get_config()) == _comparable(python.get_config())


def test_cli_options_are_the_constructor_options():
    for name in registry.names("model"):
        options = model_options(registry.get("model", name))
        assert options, name
        assert all(o.help for o in options), [o.name for o in options if not o.help]
        parser = cli.build_parser(["train", "--model", name, "--out", "x"])
        help_text = parser._subparsers._group_actions[0].choices["train"].format_help()
        for opt in options:
            assert opt.flag in help_text, (name, opt.flag)


def test_infovae_and_vlae_from_the_cli():
    info = _cli_model("infovae", ["--alpha", "1", "--lambda", "1000"])
    assert float(info.beta) == 0.0
    (mmd,) = info.regularizer_layers
    assert mmd.weight == pytest.approx(1000.0)
    assert _cli_model("vlae").latent_dim == 64
    assert _cli_model("rae").latent_dim == 16 and _cli_model("beta-vae").beta == 4.0
    mae = _cli_model("mae", ["--gamma", "0.25"])
    factor = _cli_model("factorvae", ["--gamma", "3"])
    assert mae.regularizer_layers[0].gamma == 0.25 and factor.regularizer_layers[0].weight == 3.0
    warm = _cli_model("vae", ["--beta", "2", "--kl-warmup-steps", "10"])
    assert warm.beta.target == 2.0 and warm.beta.warmup_steps == 10


@pytest.mark.parametrize("value, message", [(np.nan, "2 NaN"), (0.5, "2 non-binary values"),
                                            (7.0, "2 values outside [0, 1]")])
def test_bad_data_file_is_checked_before_conversion(tmp_path, value, message):
    train = np.zeros((10, 784), np.float32)
    train[3, 5] = train[6, 7] = value
    np.savez(tmp_path / "binarized_mnist.npz", train=train, valid=np.zeros((4, 784), np.uint8))
    with pytest.raises(DataError) as err:
        kvae.data.load("binarized_mnist", "train", str(tmp_path))
    assert message in str(err.value) and "'train'" in str(err.value) and "(3, 5)" in str(err.value)


def test_missing_export_extra_is_one_line(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import importlib.abc, importlib.machinery, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('onnx', 'tf2onnx', 'onnxruntime'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import importlib.util\n"
        "_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, p=None: None if n.split('.')[0] in ('onnx', 'tf2onnx', 'onnxruntime') "
        "else _find(n, p)\n")
    run = tmp_path / "run"
    env = {"PYTHONPATH": str(blocker) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    assert _kvae("train", "--epochs", "1", "--limit", "50", "--hidden", "8", "--latent-dim", "2", "--quiet",
                 "--out", str(run), env=env).returncode == 0
    result = _kvae("export", str(run), "--out", str(tmp_path / "bundle"), env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "kvae export: error: this command needs onnx, tf2onnx, onnxruntime, which are not installed: "
        "pip install 'kvae[export]'"]


@pytest.mark.parametrize("argv, message", [
    (["train", "--dataset", "binarized_mnist", "--data-dir", "{empty}", "--out", "{empty}/r"],
     "binarized_mnist not found: no binarized_mnist.npz in"),
    (["evaluate", "{empty}", "--data-dir", "{empty}/nothing"], "is not a directory"),
])
def test_a_missing_data_directory_or_file_is_named_before_tensorflow_loads(tmp_path, argv, message):
    code = ("import sys, kvae_cli; rc = kvae_cli.main(sys.argv[1:]); "
            "print('RESULT', rc, 'tensorflow' in sys.modules)")
    argv = [a.format(empty=str(tmp_path)) for a in argv]
    env = dict(os.environ, KVAE_DATA_DIR="")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=600)
    assert result.stdout.strip().splitlines()[-1] == "RESULT 1 False", result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_one_missing_module_is_singular(monkeypatch):
    import importlib.util

    from kvae.cli import commands
    from kvae.errors import ConfigError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "onnx" else object())
    with pytest.raises(ConfigError, match=r"^this command needs onnx, which is not installed: pip install"):
        commands._missing_extra(("onnx", "tf2onnx"), "export")


def test_option_help_keeps_a_continuation_line_that_starts_with_a_reference():
    """The VAE's density help continues on a line that starts with ``:mod:`...```; it was read as a
    new argument, and ``--density`` ended "or a layer of (default: gmm)"."""
    result = _kvae("train", "--model", "vae", "--help")
    help_text = " ".join(result.stdout.split())
    assert ('"maf" / "iaf" (an autoregressive flow) or a layer of kvae.parts.densities. (default: gmm)'
            in help_text), help_text[help_text.find("--density D"):][:400]
