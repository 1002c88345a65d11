"""Data: named data sets, ``tf.data`` pipelines, input checks and factor data (dSprites).

``kvae.data.load(name, split)`` is the entry point; see :mod:`kvae.data.datasets` (loading),
:mod:`kvae.data.pipelines` (``tf.data``), :mod:`kvae.data.checks` (input checks) and
:mod:`kvae.data.factors` (factor data sets).
"""
from kvae.data.checks import check_inputs, split_xy, validate  # noqa: F401
from kvae.data.datasets import (  # noqa: F401
    SPLITS, MNIST_FILE, Split, data_dirs, DSPRITES_LATENTS, DSPRITES_SOURCE_ENV, load,
)
from kvae.data.pipelines import PIPELINE_PARALLELISM, PIPELINE_PREFETCH, batches, pipeline_options  # noqa: F401


def __getattr__(name):  # submodules as attributes (kvae.data.<module>), imported on first use
    from kvae._lazy import submodule

    return submodule(__name__, name)
