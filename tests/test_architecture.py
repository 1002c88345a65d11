"""The package's shape, checked on its import graph (standard-library ``ast``; nothing imported).

* dependencies point down: ``core`` imports only ``parts``, ``nn``, ``errors`` and ``registry``;
  ``parts`` and ``nn`` never import ``core``, ``models`` or anything above; no module imports ``cli``
  but ``cli`` itself;
* no import cycle between kvae modules (deferred imports inside functions count);
* no module in kvae/ over 400 lines.
"""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "kvae")
MAX_LINES = 400

#: subpackage -> the kvae subpackages (first component after ``kvae.``) it may import
ALLOWED = {
    "errors": set(), "registry": {"errors"}, "_quiet": set(),
    "nn": {"nn", "errors"},
    "parts": {"parts", "nn", "errors", "registry"},
    "core": {"core", "parts", "nn", "errors", "registry"},
    "models": {"models", "core", "parts", "nn", "errors", "registry"},
}
ABOVE_CORE = {"training", "data", "evaluation", "export", "cli", "pretrained"}


def modules():
    found = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.join(ROOT, "..")).replace(os.sep, "/")[:-3]
                mod = rel.replace("/", ".")
                found[mod[: -len(".__init__")] if mod.endswith(".__init__") else mod] = path
    return found


def imports_of(mod, path, known):
    """kvae modules that ``mod`` imports (resolved; ``from kvae.parts import priors`` -> kvae.parts.priors)."""
    tree = ast.parse(open(path).read())
    out = set()
    package = mod if path.endswith("__init__.py") else mod.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("kvae")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base != "kvae" and not base.startswith("kvae."):
                continue
            for a in node.names:
                full = f"{base}.{a.name}"
                out.add(full if full in known else base)
    return {m for m in out if m in known and m != mod}


MODULES = modules()
GRAPH = {mod: imports_of(mod, path, MODULES) for mod, path in MODULES.items()}


def layer(mod):
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "kvae"


@pytest.mark.parametrize("lower", sorted(ALLOWED))
def test_dependencies_point_down(lower):
    bad = {(m, d) for m, deps in GRAPH.items() if layer(m) == lower for d in deps
           if layer(d) not in ALLOWED[lower] | {"_lazy"}}
    assert not bad, f"{lower} imports above itself: {sorted(bad)}"


def test_core_imports_nothing_above_it():
    bad = {(m, d) for m, deps in GRAPH.items() if layer(m) == "core" for d in deps if layer(d) in ABOVE_CORE}
    assert not bad, sorted(bad)


def test_only_the_cli_imports_the_cli():
    bad = {(m, d) for m, deps in GRAPH.items() if layer(m) != "cli" for d in deps if layer(d) == "cli"}
    assert not bad, sorted(bad)


def test_no_import_cycle():
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(GRAPH[m]):
            if d.startswith(m + ".") or m.startswith(d + "."):
                continue  # a package and its own submodules (re-exports in __init__)
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not cycles, cycles


def test_no_module_over_the_size_limit():
    long = {mod: n for mod, path in MODULES.items() if (n := sum(1 for _ in open(path))) > MAX_LINES}
    assert not long, long


def test_the_graph_is_read():  # the checks above would pass on an empty graph
    assert "kvae.parts.posteriors" in GRAPH["kvae.core.model"]
    assert len(GRAPH) > 60
