"""Export: the serving bundle (SavedModel + ONNX + manifest) and the explorer's data.

See :mod:`kvae.export.bundle`; the TensorFlow-free runtime that serves bundles is the separate
``kvae_serve`` package.
"""
from kvae.export.bundle import (  # noqa: F401
    OPSET, endpoints, example_inputs, export, parity,
)


def __getattr__(name):  # submodules as attributes (kvae.export.<module>), imported on first use
    from kvae._lazy import submodule

    return submodule(__name__, name)
