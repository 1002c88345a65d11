"""The API reference site (mkdocs.yml, docs/api/): every public class and function of kvae and kvae_serve, found by
walking the packages, is on a page of docs/api and has a docstring, and `mkdocs build --strict` builds a site whose
inventory lists each of them as rendered. Without mkdocs the build test skips, unless KVAE_REQUIRE_DOCS=1 (CI)."""
import glob
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import subprocess
import sys
import zlib

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PACKAGES = ("kvae", "kvae_serve")
#: public modules left out of the API reference, with the reason
NOT_IN_API = {"kvae.cli": "the command line, documented as commands in docs/cli.md"}


def public_modules(package):
    """Module names of ``package`` and its public submodules (no ``_`` name anywhere in the path)."""
    names = [package]
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, f"{package}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return [n for n in names if not any(n == m or n.startswith(f"{m}.") for m in NOT_IN_API)]


def public_symbols(package):
    """{dotted path: object} of the classes and functions a public module of ``package`` defines under a public
    name (re-exports count once, where they are defined)."""
    found = {}
    for name in public_modules(package):
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            target = inspect.unwrap(obj) if callable(obj) else obj
            if (not attr.startswith("_") and (inspect.isclass(target) or inspect.isfunction(target))
                    and getattr(obj, "__module__", None) == name):
                found[f"{name}.{attr}"] = obj
    return found


def api_directives():
    """{identifier: members option or None} of the ``::: identifier`` blocks in docs/api/*.md."""
    directives = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "api", "*.md"))):
        text = open(path).read()
        for m in re.finditer(r"^::: (\S+)\n((?:[ \t]+\S.*\n)*)", text, re.M):
            members = re.search(r"^\s+members:\s*(.+)$", m.group(2), re.M)
            directives[m.group(1)] = None if members is None else members.group(1).strip()
    return directives


def referenced(path, directives):
    """Whether ``path`` is rendered by a directive: its own, or its module's with all members or it listed."""
    if path in directives:
        return True
    module, name = path.rsplit(".", 1)
    if module not in directives:
        return False
    members = directives[module]
    return members is None or name in re.findall(r"[\w.]+", members)


@pytest.fixture(scope="module")
def symbols():
    return {package: public_symbols(package) for package in PACKAGES}


def test_the_walk_finds_the_public_api(symbols):
    kvae_symbols = symbols["kvae"]
    assert "kvae.core.model.VariationalModel" in kvae_symbols and "kvae.data.datasets.load" in kvae_symbols
    assert "kvae_serve.bundle.Bundle" in symbols["kvae_serve"]
    assert not any(p.startswith("kvae.cli.") or "._" in p for p in kvae_symbols)
    assert len(kvae_symbols) > 250


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_symbol_is_on_an_api_page(package, symbols):
    directives = api_directives()
    missing = sorted(p for p in symbols[package] if not referenced(p, directives))
    assert not missing, f"public symbols on no page of docs/api (add a `::: module` block): {missing}"
    unknown = sorted(d for d in directives if importlib.util.find_spec(d.split(".")[0]) is None)
    assert not unknown


@pytest.mark.parametrize("package", ["kvae", "kvae_serve"])
def test_every_public_symbol_has_a_docstring(package, symbols):
    undocumented = sorted(p for p, obj in symbols[package].items() if not (obj.__doc__ or "").strip())
    assert not undocumented, f"public symbols without a docstring: {undocumented}"


def test_api_pages_have_no_code_the_docs_tests_would_run():
    for path in glob.glob(os.path.join(ROOT, "docs", "api", "*.md")):
        assert "```" not in open(path).read(), path


def inventory(path):
    """{name: (role, priority)} of a Sphinx objects.inv (what mkdocstrings writes for the rendered objects)."""
    with open(path, "rb") as f:
        header = [f.readline() for _ in range(4)]
        assert header[0] == b"# Sphinx inventory version 2\n" and b"zlib" in header[3], header
        lines = zlib.decompress(f.read()).decode().splitlines()
    entries = {}
    for line in lines:
        name, role, priority, _ = line.split(" ", 3)
        entries[name] = (role, int(priority))
    return entries


def test_mkdocs_build_strict_renders_every_public_symbol(symbols, tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings_handlers") is None:
        if os.environ.get("KVAE_REQUIRE_DOCS"):
            pytest.fail("KVAE_REQUIRE_DOCS is set but mkdocs/mkdocstrings are not installed (pip install -e '.[docs]')")
        pytest.skip("mkdocs and mkdocstrings are not installed (the docs extra)")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "-f", os.path.join(ROOT, "mkdocs.yml"), "-d", str(site)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    entries = inventory(site / "objects.inv")
    for package in PACKAGES:
        for path, obj in symbols[package].items():
            defined = getattr(inspect.unwrap(obj), "__name__", None) == path.rsplit(".", 1)[1]
            role = "py:class" if inspect.isclass(obj) else "py:function" if defined else "py:data"  # data: f = g(...)
            assert entries.get(path) == (role, 1), f"{path}: {entries.get(path)} in the site's inventory"
    assert (site / "api" / "index.html").is_file() and (site / "cli" / "index.html").is_file()


def load_docs_module(name):
    """docs/api/<name>.py (the site's Griffe extension and MkDocs hook) as a module."""
    spec = importlib.util.spec_from_file_location(f"docs_api_{name}", os.path.join(ROOT, "docs", "api", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sphinx_roles_become_links_and_a_missing_kvae_target_warns(caplog, tmp_path, monkeypatch):
    griffe = pytest.importorskip("griffe")
    monkeypatch.chdir(tmp_path)  # Griffe also searches the working directory: not the real kvae/ of the checkout
    roles = load_docs_module("griffe_roles")
    modules = {
        "parts.py": 'class Prior:\n    """A prior."""\n\n    def sample(self):\n        """Draw."""\n',
        "model.py": ('from kvae.parts import Prior\n\n\nclass Model:\n'
                     '    """Uses :class:`Prior`, :meth:`~kvae.parts.Prior.sample` and :func:`keras.ops.sum`;\n'
                     '    :class:`kvae.parts.Missing` is broken; :func:`kvae._private.f` is not rendered."""\n'),
    }
    with caplog.at_level("WARNING", logger="griffe"):
        with griffe.temporary_visited_package("kvae", modules, extensions=griffe.load_extensions(
                roles.SphinxRolesToLinks)) as package:
            text = package["model.Model"].docstring.value
    assert text == ("Uses [`Prior`][kvae.parts.Prior], [`sample`][kvae.parts.Prior.sample] and `keras.ops.sum`;\n"
                    "`kvae.parts.Missing` is broken; `kvae._private.f` is not rendered.")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and "kvae.parts.Missing, which does not exist" in warnings[0], warnings
    assert "kvae._private.f, which does not exist" in warnings[1]


def test_the_build_hook_finds_what_the_import_walk_finds_and_warns_for_each_missing(symbols, tmp_path, caplog):
    pytest.importorskip("griffe")
    hook = load_docs_module("coverage_hook")
    static = set(hook.public_symbols(ROOT))
    imported = {p for package in PACKAGES for p in symbols[package]}
    assigned = {p for p in imported  # f = g(...): an attribute to Griffe, a function once imported
                if getattr(inspect.unwrap(symbols[p.split(".")[0]][p]), "__name__", None) != p.rsplit(".", 1)[1]}
    assert static == imported - assigned and assigned == {
        "kvae.nn.pixelcnn.compiled_ancestral_sample", "kvae.parts.posteriors.planar_posterior",
        "kvae.parts.posteriors.radial_posterior"}
    shown = sorted(static - {"kvae.nn.ssim.ms_ssim", "kvae_serve.bundle.Bundle"})
    inv = "".join(f"{p} py:class 1 api/#$ -\n" for p in shown) + "kvae.nn.ssim.ms_ssim py:function 2 api/#x -\n"
    with open(tmp_path / "objects.inv", "wb") as f:
        f.write(b"# Sphinx inventory version 2\n# Project: kvae\n# Version: 0\n# zlib.\n" + zlib.compress(inv.encode()))
    config = type("Config", (), {"config_file_path": os.path.join(ROOT, "mkdocs.yml"), "site_dir": str(tmp_path)})
    with caplog.at_level("WARNING", logger="mkdocs.hooks.api_coverage"):
        hook.on_post_build(config)
    assert [r.getMessage().split(" is on")[0] for r in caplog.records if r.levelname == "WARNING"] == [
        "public kvae.nn.ssim.ms_ssim", "public kvae_serve.bundle.Bundle"]
