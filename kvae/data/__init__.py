"""Data: named data sets, ``tf.data`` pipelines, input checks and factor data (dSprites).

``kvae.data.load(name, split)`` is the entry point; see :mod:`kvae.data.datasets`.
"""
from kvae.data.datasets import (  # noqa: F401
    SPLITS, MNIST_FILE, Split, PIPELINE_PARALLELISM, PIPELINE_PREFETCH, pipeline_options,
    batches, data_dirs, DSPRITES_LATENTS, DSPRITES_SOURCE_ENV, load,
    validate, check_inputs,
)


def __getattr__(name):  # submodules as attributes (kvae.data.<module>), imported on first use
    from kvae._lazy import submodule

    return submodule(__name__, name)
