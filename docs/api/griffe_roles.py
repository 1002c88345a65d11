"""Griffe extension for the API site (mkdocs.yml): kvae's docstrings name objects with Sphinx roles
(``:class:`Terms```, ``:func:`kvae.registry.names```, ``:meth:`~kvae.core.model.VariationalModel.fit```); this
turns each into a link to that object's entry on the site, or into plain code when the target is not a rendered
kvae object (a Keras or TensorFlow name, an inherited method). A role naming a ``kvae.``/``kvae_serve.`` path
that does not exist logs a warning, so ``mkdocs build --strict`` fails on a broken reference.
"""
import re

import griffe

ROLE = re.compile(r":(?:mod|class|func|meth|data|attr|exc|obj):`(~?)([\w.]+)(\(\))?`")
PACKAGES = ("kvae", "kvae_serve")
NOT_RENDERED = ("kvae.cli",)  # the command line is documented in docs/cli.md, not in the API pages
MODEL_CLASSES = "kvae.models"  # ``kvae.VAE`` is ``kvae.models.VAE`` (kvae's __getattr__, which Griffe does not run)


def rendered(path):
    """Whether the API pages render ``path`` (a public object of kvae or kvae_serve outside kvae.cli)."""
    parts = path.split(".")
    return (parts[0] in PACKAGES and not any(p.startswith("_") for p in parts)
            and not any(path == m or path.startswith(f"{m}.") for m in NOT_RENDERED))


def member(obj, name):
    """``obj``'s member ``name`` (a class's inherited ones included), aliases followed."""
    found = (obj.all_members if obj.is_class else obj.members)[name]
    return found.final_target if found.is_alias else found


def walk(obj, names):
    for name in names:
        obj = member(obj, name)
    return obj


def target(obj, name, collection):
    """The path of the object ``name`` means in ``obj``'s docstring, or None when it is not a kvae object."""
    first, *rest = name.split(".")
    try:
        if first in PACKAGES:
            if first == "kvae" and len(rest) == 1 and rest[0] not in collection["kvae"].members:
                rest = [*MODEL_CLASSES.split(".")[1:], *rest]
            return walk(collection[first], rest).path
        scope = obj if obj.is_class or obj.is_module else obj.parent
        try:
            base = member(scope, first)
        except KeyError:
            base = walk(collection[scope.resolve(first).split(".")[0]], scope.resolve(first).split(".")[1:])
        return walk(base, rest).path
    except (KeyError, ValueError, AttributeError, griffe.NameResolutionError, griffe.AliasResolutionError,
            griffe.CyclicAliasError):
        return None


class SphinxRolesToLinks(griffe.Extension):
    """Rewrite the Sphinx roles of every docstring in the loaded package into autorefs links."""

    def on_package(self, *, pkg, loader, **kwargs):
        collection = loader.modules_collection
        stack = [pkg]
        while stack:
            obj = stack.pop()
            if obj.is_alias:
                continue
            stack.extend(obj.members.values())
            if obj.docstring is not None:
                obj.docstring.value = ROLE.sub(lambda m: self.link(obj, m, collection), obj.docstring.value)

    @staticmethod
    def link(obj, match, collection):
        short, name, call = match.group(1), match.group(2), match.group(3) or ""
        text = f"`{(name.rsplit('.', 1)[-1] if short else name)}{call}`"
        path = target(obj, name, collection)
        if path is None and name.split(".")[0] in PACKAGES:
            griffe.logger.warning("%s: %s names %s, which does not exist", obj.relative_filepath, obj.path, name)
        return f"[{text}][{path}]" if path is not None and rendered(path) else text
