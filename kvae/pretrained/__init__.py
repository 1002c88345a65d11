"""Pretrained models shipped inside the package (``kvae pretrained list``); see :mod:`kvae.pretrained.store`.
"""
from kvae.pretrained.store import (  # noqa: F401
    ROOT, FILES, names, manifest, verify, quantised_copy,
    load, fetch, pack,
)


def __getattr__(name):  # submodules as attributes (kvae.pretrained.<module>), imported on first use
    from kvae._lazy import submodule

    return submodule(__name__, name)
