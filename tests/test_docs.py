"""Docs that run: every fenced python block in README.md and docs/*.md executes (the blocks of one
file in order, in one namespace, in a scratch directory), every `kvae ...` command line shown in a
bash block parses with the real CLI parser, every `python apps/NAME.py ...` line with that script's
parser, and the README's quick-start commands run."""
import glob
import os
import shlex
import sys

import pytest

from kvae.cli import main as cli

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers"))
from doc_commands import blocks, command_lines, script_lines  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FILES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
NEEDS_MNIST = "binarized_mnist\", \"train\")"


PYTHON = [(os.path.relpath(f, ROOT), f) for f in FILES if blocks(f, "python")]
COMMANDS = [(os.path.relpath(f, ROOT), c) for f in FILES for c in command_lines(f)]
SCRIPTS = [(os.path.relpath(f, ROOT), script, argv) for f in FILES for script, argv in script_lines(f)]


@pytest.mark.parametrize("name, path", PYTHON, ids=[n for n, _ in PYTHON])
def test_python_blocks_run(name, path, tmp_path, monkeypatch, request):
    code = blocks(path, "python")
    if any(NEEDS_MNIST in c for c in code):
        # the real file where present (CI requires it: KVAE_REQUIRE_DATA), else 28x28 digits in its format
        try:
            data_dir = request.getfixturevalue("mnist_dir")
        except pytest.skip.Exception:
            data_dir = request.getfixturevalue("digits28_dir")
        monkeypatch.setenv("KVAE_DATA_DIR", data_dir)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"doc:{name}"}
    for i, block in enumerate(code):
        exec(compile(block, f"{name} (python block {i + 1})", "exec"), namespace)


def test_there_are_examples_to_check():
    assert len(PYTHON) >= 4 and len(COMMANDS) >= 8 and len(SCRIPTS) >= 3


@pytest.mark.parametrize("name, script, argv", SCRIPTS, ids=[f"{n}:{s} {' '.join(a)[:50]}" for n, s, a in SCRIPTS])
def test_script_lines_parse(name, script, argv):
    """An apps/ script shown in the docs exposes build_parser(), and the line shown parses with it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(os.path.basename(script)[:-3], os.path.join(ROOT, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert hasattr(module, "build_parser"), f"{name}: {script} has no build_parser() to check its line with"
    try:
        module.build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{name}: `python {script} {' '.join(argv)}` does not parse")


@pytest.mark.parametrize("name, argv", COMMANDS, ids=[f"{n}:{' '.join(a)[:60]}" for n, a in COMMANDS])
def test_command_lines_parse(name, argv):
    try:
        args = cli.build_parser(argv).parse_args(argv)
    except cli.UsageError as err:
        pytest.fail(f"{name}: `kvae {' '.join(argv)}` does not parse: {err}")
    assert args.command == argv[0]


def test_readme_quick_start_runs(tmp_path, monkeypatch):
    readme = os.path.join(ROOT, "README.md")
    quick = [c for c in command_lines(readme) if "runs/vae" in " ".join(c)]
    assert [c[0] for c in quick] == ["train", "evaluate", "sample"]
    monkeypatch.chdir(tmp_path)
    for argv in quick:
        assert cli.main(argv) == 0, argv
    assert os.path.isfile(tmp_path / "runs" / "vae" / "samples.png")


def pip_install_targets(command):
    """{target: extras} of a `pip install ...` command line (`-e` dropped; `'.[dev,docs]'` -> {".": {...}})."""
    targets = {}
    for word in shlex.split(command)[2:]:
        if not word.startswith("-"):
            name, _, extras = word.partition("[")
            targets[name] = set(filter(None, extras.rstrip("]").split(",")))
    return targets


def test_quick_start_1_installs_what_the_readme_uses_next():
    import configparser

    text = open(os.path.join(ROOT, "README.md")).read()
    installs = [line.split("&&")[0].strip() for block in blocks(os.path.join(ROOT, "README.md"), "bash")
                for line in block.splitlines() if line.startswith("pip install")]
    first = pip_install_targets(installs[0])
    assert "kvae explore" in text and "kvae-serve" in text and "kvae export" in text
    assert "./export" in first  # kvae_serve: what `kvae explore` and `kvae-serve` run
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    extras = cfg["options.extras_require"]
    installed = {r.strip() for e in first["."] for r in extras[e].splitlines() if r.strip()}
    assert {r.strip() for r in extras["export"].splitlines() if r.strip()} <= installed  # `kvae export`
    second = pip_install_targets(installs[1])
    assert "docs" in second["."] and "./export" in second  # the test command: tests/test_api_site.py builds the site
