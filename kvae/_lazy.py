"""``package.submodule`` as an attribute, imported on first use (each subpackage's ``__getattr__``)."""
import importlib
import importlib.util


def submodule(package, name):
    """The submodule ``name`` of ``package``; ``AttributeError`` if there is none."""
    if name.startswith("_") or importlib.util.find_spec(f"{package}.{name}") is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return importlib.import_module(f"{package}.{name}")
