"""A model's options, read from its constructor: the one source of truth for the CLI, runs and the docs.

:func:`model_options` walks a model class's ``__init__`` signatures (the class first, then its
bases, so a subclass's default wins) and returns one :class:`Option` per keyword that takes a
plain value (number, string, bool, list of numbers), with the help text taken from the
``Args:`` sections of the class docstrings.  Keras objects (networks, regularisers) and what
the data decides (``input_shape``, ``num_classes``) are not options; a class lists the
arguments it fixes itself in ``fixed_options``.

This module imports neither TensorFlow nor Keras.  Given a registered model *name*
(``model_options("vlae")``) whose module is not imported yet, it reads the same facts from the
source files named by the registry's ``"module:attribute"`` entry (Python's :mod:`ast`: the
class, its bases, their ``__init__`` signatures, docstrings and ``fixed_options``) instead of
importing the model, which is how ``kvae train --model NAME --help`` lists NAME's options without
loading TensorFlow.  Given a class (or a name whose module is loaded), it inspects the class.
"""
import ast
import dataclasses
import importlib.machinery
import inspect
import operator
import re
import sys

#: Constructor arguments that are never command-line options.
NOT_OPTIONS = frozenset({"self", "input_shape", "encoder_network", "decoder_network", "regularizers",
                         "num_classes", "name", "seed", "dtype", "trainable"})

#: Sizes of parts built from a name (``prior="maf"``, ``posterior="iaf"``, ``decoder="pixelcnn"``) that the
#: command line and :func:`kvae.training.runs.build_model` accept for models whose constructor does not take
#: them itself (VLAE does).
PART_OPTIONS = ("flow_steps", "flow_hidden", "pixelcnn_layers", "pixelcnn_kernel", "pixelcnn_filters")


@dataclasses.dataclass(frozen=True)
class Option:
    """One constructor keyword: ``name`` (Python), ``flag`` (``--kebab-case``), ``default``,
    ``kind`` (bool | int | float | str | ints | floats) and ``help``."""

    name: str
    default: object
    kind: str
    help: str
    owner: str

    @property
    def flag(self):
        return "--" + self.name.rstrip("_").replace("_", "-")


def _kind(default):
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, (tuple, list)):
        return "floats" if any(isinstance(v, float) for v in default) else "ints"
    return "str"  # strings, and None ("the model decides")


_EMPTY = inspect.Parameter.empty


@dataclasses.dataclass(frozen=True)
class _ClassFacts:
    """What :func:`model_options` needs of one class of an MRO, from the class or from its source."""

    name: str
    module: str
    doc: str
    init: tuple = None  # ((argument, default or _EMPTY, is *args/**kwargs), ...) of its own __init__; None: none
    fixed: tuple = ()  # its own fixed_options


def _readable(module, top):
    """Classes whose constructors are read: kvae's and those of the model's own package (not Keras')."""
    return module.split(".")[0] in ("kvae", top)


def _live_facts(cls):
    top = cls.__module__.split(".")[0]
    facts = []
    for klass in cls.__mro__:
        if not _readable(klass.__module__, top):
            continue
        init = None
        if "__init__" in vars(klass):
            params = inspect.signature(klass.__init__).parameters.values()
            init = tuple((p.name, p.default, p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)) for p in params)
        facts.append(_ClassFacts(klass.__name__, klass.__module__, inspect.getdoc(klass) or "", init,
                                 tuple(vars(klass).get("fixed_options", ()))))
    return facts


def docstring_args(cls):
    """``{argument: help}`` from the ``Args:`` sections of ``cls`` and its bases (subclass first)."""
    return _helps(_live_facts(cls) if isinstance(cls, type) else cls)


def _helps(facts):
    helps = {}
    for klass in facts:
        match = re.search(r"^Args:\n((?:[ \t]+.*\n?|\n)+)", klass.doc, re.M)
        if not match:
            continue
        own, current = {}, []
        for line in match.group(1).splitlines():
            m = re.match(r"^ {2,4}(\w[\w, ]*):\s*(.*)$", line)  # not a continuation line's ":mod:`...`"
            if m:
                current = [n.strip() for n in m.group(1).split(",")]
                for n in current:
                    own[n] = m.group(2).strip()
            elif current and line.strip():
                for n in current:
                    own[n] = (own[n] + " " + line.strip()).strip()
        for n, text in own.items():
            helps.setdefault(n, re.sub(r":\w+:`~?([^`]*)`", r"\1", text).replace("``", ""))
    return helps


def model_options(model):
    """The options of a model in constructor order (class first, then inherited).

    ``model`` is a model class or a name of the registry (``"vae"``; read from source, without importing
    TensorFlow, while the model's module is not imported)."""
    facts = _facts(model)
    fixed = set()
    for klass in facts:
        fixed |= set(klass.fixed)
    helps = _helps(facts)
    options, seen = [], set()
    for klass in facts:
        if klass.init is None:
            continue
        for name, default, variadic in klass.init:
            if variadic or name in seen:
                continue
            seen.add(name)
            if name in NOT_OPTIONS or name in fixed or default is _EMPTY:
                continue
            value = list(default) if isinstance(default, tuple) else default
            kind = _kind(default) if default is not None else _inherited_kind(facts, name)
            options.append(Option(name, value, kind, helps.get(name, ""), klass.name))
    return options


def _inherited_kind(facts, name):
    """Kind of an argument whose default is None (the model decides): from a base's default."""
    for klass in facts:
        for argument, default, _ in klass.init or ():
            if argument == name and default is not None and default is not _EMPTY:
                return _kind(default)
    return "str"


def _facts(model):
    if isinstance(model, str):
        from kvae import registry

        target = registry.entry("model", model)
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            if module not in sys.modules:
                return _SourceReader().facts(module, attr)
            target = registry.get("model", model)
        model = target
    return _live_facts(model)


def static_value(target):
    """The value of ``"module.path:NAME"`` or ``"module.path:Class.NAME"`` (a literal such as a tuple of
    choices), read from the module's source when the module is not imported (so without TensorFlow)."""
    module, _, attr = target.partition(":")
    if module in sys.modules:
        from kvae import registry

        return registry.resolve(target)
    reader = _SourceReader()
    *owner, name = attr.split(".")
    if owner:
        found = reader.find_class(module, owner[0])
        if found is None:
            raise AttributeError(f"{target}: no class {owner[0]} in {module}")
        return reader.class_constant(found[0], found[1], name)
    value = reader.constant(module, name)
    if value is _EMPTY:
        raise AttributeError(f"{target}: no literal {name} in {module}")
    return value


def _spec(name):
    """The import spec of module ``name``, found without importing it (nor its packages)."""
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__spec__", None) is not None:
        return module.__spec__
    parent = name.rpartition(".")[0]
    path = _spec(parent).submodule_search_locations if parent else None
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ImportError(f"no Python source for module {name!r}")
    return spec


class _NotLiteral(Exception):
    """An expression whose value needs more than reading literals."""


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


class _Source:
    """One parsed module: its classes, imported names and literal constants."""

    def __init__(self, name):
        spec = _spec(name)
        self.name = name
        self.package = name if spec.submodule_search_locations is not None else name.rpartition(".")[0]
        with open(spec.origin, encoding="utf-8") as f:
            tree = ast.parse(f.read(), spec.origin)
        self.classes, self.imports, self.values = {}, {}, {}
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                self.classes[node.name] = node
            elif isinstance(node, ast.ImportFrom):
                base = self._absolute(node.module, node.level)
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = (base, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.imports[alias.asname] = (alias.name, None)
                    else:
                        top = alias.name.split(".")[0]
                        self.imports[top] = (top, None)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    if isinstance(t, ast.Name):
                        self.values[t.id] = node.value

    def _absolute(self, module, level):
        if not level:
            return module
        parts = self.package.split(".")
        base = ".".join(parts[:len(parts) - level + 1])
        return f"{base}.{module}" if module else base


class _SourceReader:
    """Reads classes from source files (each parsed once)."""

    def __init__(self):
        self.sources = {}

    def source(self, module):
        if module not in self.sources:
            self.sources[module] = _Source(module)
        return self.sources[module]

    def find_class(self, module, name, depth=0):
        """(source, ClassDef) of class ``name`` as seen from ``module`` (following re-exports), or None."""
        if depth > 10:
            return None
        try:
            src = self.source(module)
        except (ImportError, OSError, SyntaxError):
            return None
        if name in src.classes:
            return src, src.classes[name]
        if name in src.imports:
            origin, attr = src.imports[name]
            if attr is not None:  # imported (or re-exported) from another module
                return self.find_class(origin, attr, depth + 1)
        return None

    def _base(self, src, node, top):
        """(source, ClassDef) of a base-class expression, or None (a class outside kvae and the model's package)."""
        if isinstance(node, ast.Name):
            if node.id in src.classes:
                return src, src.classes[node.id]
            if node.id in src.imports:
                module, attr = src.imports[node.id]
                if attr is not None and _readable(module, top):
                    return self.find_class(module, attr)
            return None
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in src.imports:
            module, attr = src.imports[node.value.id]
            module = module if attr is None else f"{module}.{attr}"
            if _readable(module, top):
                return self.find_class(module, node.attr)
        return None

    def _mro(self, src, cls, top):
        """The C3 linearisation of the readable classes above ``cls``."""
        bases = [b for b in (self._base(src, n, top) for n in cls.bases) if b is not None]
        seqs = [self._mro(*b, top) for b in bases] + [list(bases)]
        result = [(src, cls)]
        while True:
            seqs = [s for s in seqs if s]
            if not seqs:
                return result
            for seq in seqs:
                head = seq[0]
                if not any(head[1] is other[1] for s in seqs for other in s[1:]):
                    break
            else:
                raise TypeError(f"no consistent method resolution order for {cls.name}")
            result.append(head)
            seqs = [s[1:] if s[0][1] is head[1] else s for s in seqs]

    def facts(self, module, name):
        """The :class:`_ClassFacts` of class ``module:name`` and its readable bases, in MRO order."""
        found = self.find_class(module, name)
        if found is None:
            raise ImportError(f"{module}:{name} is not a class defined in Python source")
        top = module.split(".")[0]
        return [self._class_facts(src, cls) for src, cls in self._mro(*found, top)]

    def _class_facts(self, src, cls):
        init, fixed = None, ()
        for node in cls.body:
            if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                init = self._signature(src, node.args)
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "fixed_options"
                                                      for t in node.targets):
                fixed = self.value(src, node.value)
                if not isinstance(fixed, (tuple, list)):
                    raise TypeError(f"{src.name}:{cls.name}.fixed_options is not a literal tuple: {fixed}")
                fixed = tuple(fixed)
        return _ClassFacts(cls.name, src.name, ast.get_docstring(cls) or "", init, fixed)

    def _signature(self, src, args):
        positional = args.posonlyargs + args.args
        defaults = [_EMPTY] * (len(positional) - len(args.defaults)) + list(args.defaults)
        params = [(a.arg, d if d is _EMPTY else self.value(src, d), False) for a, d in zip(positional, defaults)]
        if args.vararg:
            params.append((args.vararg.arg, _EMPTY, True))
        params += [(a.arg, _EMPTY if d is None else self.value(src, d), False)
                   for a, d in zip(args.kwonlyargs, args.kw_defaults)]
        if args.kwarg:
            params.append((args.kwarg.arg, _EMPTY, True))
        return tuple(params)

    def value(self, src, node):
        """The literal value of an expression, else its source text."""
        try:
            return self._literal(src, node, 0)
        except _NotLiteral:
            return ast.unparse(node)

    def _literal(self, src, node, depth):
        """A literal, a module-level (or imported) name of one, or +, -, * of those, e.g. ``(1000,) * 6``."""
        try:
            return ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
        if depth < 10 and isinstance(node, ast.Name):
            if node.id in src.values:
                return self._literal(src, src.values[node.id], depth + 1)
            if node.id in src.imports and src.imports[node.id][1] is not None:
                value = self.constant(*src.imports[node.id], depth + 1)
                if value is not _EMPTY:
                    return value
        if depth < 10 and isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = self._literal(src, node.left, depth + 1), self._literal(src, node.right, depth + 1)
            if isinstance(node.op, ast.Mult) and any(isinstance(v, int) and v > 10000 for v in (left, right)):
                raise _NotLiteral
            try:
                return _OPERATORS[type(node.op)](left, right)
            except (TypeError, ValueError, ArithmeticError):
                pass
        raise _NotLiteral

    def constant(self, module, name, depth=0):
        try:
            src = self.source(module)
        except (ImportError, OSError, SyntaxError):
            return _EMPTY
        if name in src.values:
            try:
                return self._literal(src, src.values[name], depth)
            except _NotLiteral:
                return _EMPTY
        if name in src.imports and src.imports[name][1] is not None and depth < 10:
            return self.constant(*src.imports[name], depth + 1)
        return _EMPTY

    def class_constant(self, src, cls, name):
        """The literal class attribute ``name`` of ``cls`` or of its nearest base that sets it."""
        for owner_src, owner in self._mro(src, cls, src.name.split(".")[0]):
            for node in owner.body:
                if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name
                                                        for t in node.targets):
                    return self.value(owner_src, node.value)
        raise AttributeError(f"{src.name}:{cls.name} has no attribute {name}")

__all__ = ["Option", "NOT_OPTIONS", "PART_OPTIONS", "model_options", "docstring_args", "static_value"]
