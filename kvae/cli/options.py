"""A model's options, read from its constructor: the one source of truth for the CLI and the docs.

:func:`model_options` walks a model class's ``__init__`` signatures (the class first, then its
bases, so a subclass's default wins) and returns one :class:`Option` per keyword that takes a
plain value (number, string, bool, list of numbers), with the help text taken from the
``Args:`` sections of the class docstrings.  Keras objects (networks, regularisers) and what
the data decides (``input_shape``, ``num_classes``) are not options; a class lists the
arguments it fixes itself in ``fixed_options``.
"""
import dataclasses
import inspect
import re

#: Constructor arguments that are never command-line options.
NOT_OPTIONS = frozenset({"self", "input_shape", "encoder_network", "decoder_network", "regularizers",
                         "num_classes", "name", "seed", "dtype", "trainable"})


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


def docstring_args(cls):
    """``{argument: help}`` from the ``Args:`` sections of ``cls`` and its bases (subclass first)."""
    helps = {}
    for klass in cls.__mro__:
        doc = inspect.getdoc(klass) or ""
        match = re.search(r"^Args:\n((?:[ \t]+.*\n?|\n)+)", doc, re.M)
        if not match:
            continue
        own, current = {}, []
        for line in match.group(1).splitlines():
            m = re.match(r"^ {2,4}([\w, ]+):\s*(.*)$", line)
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


def model_options(cls):
    """The options of model class ``cls`` in constructor order (class first, then inherited)."""
    fixed = set()
    for klass in cls.__mro__:
        fixed |= set(getattr(klass, "fixed_options", ()))
    helps = docstring_args(cls)
    options, seen = [], set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass.__module__.split(".")[0] != "kvae":
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name in seen:
                continue
            seen.add(p.name)
            if p.name in NOT_OPTIONS or p.name in fixed or p.default is inspect.Parameter.empty:
                continue
            default = list(p.default) if isinstance(p.default, tuple) else p.default
            kind = _kind(p.default) if p.default is not None else _inherited_kind(cls, p.name)
            options.append(Option(p.name, default, kind, helps.get(p.name, ""), klass.__name__))
    return options


def _inherited_kind(cls, name):
    """Kind of an argument whose default is None (the model decides): from a base's default."""
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            p = inspect.signature(klass.__init__).parameters.get(name)
            if p is not None and p.default not in (None, inspect.Parameter.empty):
                return _kind(p.default)
    return "str"
