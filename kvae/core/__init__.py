"""The contract every kvae model shares: :class:`~kvae.core.model.VariationalModel`.

``core`` depends only on :mod:`kvae.parts`, :mod:`kvae.nn` and :mod:`kvae.errors` (a test holds this).
"""
from kvae.core.model import VariationalModel  # noqa: F401


def __getattr__(name):  # submodules as attributes (kvae.core.<module>), imported on first use
    from kvae._lazy import submodule

    return submodule(__name__, name)
