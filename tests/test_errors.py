"""One error family: every problem a user can fix (a bad option, argument, shape or data) raises a
:class:`kvae.errors.KvaeError` subclass (``ConfigError``, ``DataError``, ``RunError``), which the CLI
prints as one line.  ``ConfigError`` and ``DataError`` are ``ValueError`` subclasses, so callers that
catch ``ValueError`` still do."""
import ast
import pathlib

import numpy as np
import pytest

from kvae.errors import ConfigError, DataError, KvaeError, RunError

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: built-in exceptions kvae must not raise for a user's mistake
BUILTIN = {"ValueError", "TypeError", "RuntimeError", "FileNotFoundError", "OSError", "KeyError", "IndexError",
           "AttributeError"}
#: (file, enclosing function, exception) -> why it stays a built-in exception
ALLOWED = {
    ("kvae/__init__.py", "__getattr__", "AttributeError"): "a module __getattr__ must raise AttributeError",
    ("kvae/_lazy.py", "submodule", "AttributeError"): "called by the subpackages' __getattr__ (the protocol)",
    ("kvae/core/terms.py", "Terms.__getattr__", "AttributeError"): "the attribute protocol",
    ("kvae/core/terms.py", "Terms.__getitem__", "KeyError"): "the mapping protocol",
    ("kvae/core/terms.py", "Terms.__init__", "TypeError"): "a model's code declares an extra term named like a field: a bug",
    ("kvae/options.py", "static_value", "AttributeError"): "the static reader's lookup miss, as getattr's",
    ("kvae/options.py", "_SourceReader._mro", "TypeError"): "a class hierarchy Python itself would refuse",
    ("kvae/options.py", "_SourceReader._class_facts", "TypeError"): "kvae's own source is not literal: a bug",
    ("kvae/options.py", "_SourceReader.class_constant", "AttributeError"): "the static reader's lookup miss, as getattr's",
    ("kvae/training/files.py", "check_free_space", "OSError"): "the same OSError(ENOSPC) a full disk raises mid-write, "
                                                                "so one handler names the disk for both",
}


def _raises(path):
    """(enclosing function's qualified name, exception name) of every ``raise X(...)`` / ``raise X``."""
    found = []

    def visit(node, scope):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, scope + [child.name])
                continue
            if isinstance(child, ast.Raise) and child.exc is not None:
                exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                if isinstance(exc, ast.Name):
                    found.append((".".join(scope), exc.id, child.lineno))
            visit(child, scope)

    visit(ast.parse(path.read_text(), str(path)), [])
    return found


def test_kvae_raises_no_builtin_exception_outside_the_allowlist():
    offenders = []
    for path in sorted((ROOT / "kvae").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for scope, name, line in _raises(path):
            if name in BUILTIN and (rel, scope, name) not in ALLOWED:
                offenders.append(f"{rel}:{line} ({scope}) raises {name}")
    assert not offenders, ("raise a kvae.errors class (ConfigError: a bad option or argument; DataError: bad "
                           "data or shapes; RunError: a missing or corrupt file), or, for a true internal "
                           "bug, add the place to ALLOWED with its reason:\n" + "\n".join(offenders))


def test_the_scan_sees_what_it_looks_for(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("class A:\n    def f(self):\n        if x:\n            raise ValueError('x')\n"
                    "def g():\n    raise TypeError\n")
    assert _raises(path) == [("A.f", "ValueError", 4), ("g", "TypeError", 6)]


def test_user_errors_are_value_errors_and_kvae_errors():
    for cls in (ConfigError, DataError):
        assert issubclass(cls, ValueError) and issubclass(cls, KvaeError)
    assert issubclass(RunError, KvaeError)


def _m(name):
    import importlib

    return importlib.import_module(name)


def _made(**kw):
    return _m("kvae.nn.made").MADE(3, (8,), **kw)


@pytest.mark.parametrize("make, error, message", [
    (lambda: _m("kvae.parts.posteriors").FlowPosterior(3, "planar,spline"), ConfigError, "planar/radial/iaf"),
    (lambda: _m("kvae.parts.posteriors").IAFPosterior(3, num_steps=0), ConfigError, "num_steps >= 1"),
    (lambda: _made(order="sideways"), ConfigError, "unknown input order"),
    (lambda: _made(log_scale="exp"), ConfigError, "log_scale"),
    (lambda: _m("kvae.parts.schedules").LinearWarmup(warmup_steps=0), ConfigError, "warmup_steps"),
    (lambda: _m("kvae.parts.likelihoods").GaussianLikelihood((4,), scale=-1.0), ConfigError, "scale"),
    (lambda: _m("kvae.parts.priors").VampPrior(2, num_components=0), ConfigError, "num_components"),
    (lambda: _m("kvae.parts.densities").FlowDensity(2, kind="nice"), ConfigError, "kind"),
    (lambda: _m("kvae.parts.densities").FlowDensity(2, epochs=1).fit(np.zeros((5, 2))), DataError,
     "at least 10 codes"),
    (lambda: _m("kvae.parts.densities").FlowDensity(2, epochs=1).fit(np.zeros((20, 3))), DataError,
     r"shape \[N, 2\]"),
    (lambda: _m("kvae.data.factors").DSprites().images(np.zeros((2, 4), int)), DataError, r"\[n, 5\]"),
    (lambda: _m("kvae.parts.priors").VampPrior(2).components(), ConfigError, "not bound"),
])
def test_bad_options_and_data_raise_kvae_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()
