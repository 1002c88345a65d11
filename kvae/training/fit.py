"""``fit`` for kvae models: the data checked, arrays as kvae pipelines, the garbage collector frozen.

:meth:`kvae.core.model.VariationalModel.fit` runs through :func:`checked_fit` (looked up by name, so the
core imports nothing from training or data).
"""
import numpy as np
import tensorflow as tf

from kvae.data.checks import check_inputs, split_xy
from kvae.data.pipelines import batches
import keras

from kvae.training.callbacks import DataEpoch, FreezeGC, StepProgbar


def checked_fit(model, keras_fit, x=None, y=None, *args, validation_data=None, **kwargs):
    """``keras.Model.fit`` (``keras_fit``) after checking the data (shape, NaN/inf, range, binary values).

    While it runs, Python's garbage collector skips the objects that existed when it started and
    after its first epoch (``gc.freeze``, undone when it returns): a full collection over the
    many objects of TensorFlow and Keras took ~1.2 s between two batches here, every few
    epochs.  Set ``model.freeze_gc_during_fit = False`` to leave the collector alone.

    numpy arrays are batched by a kvae pipeline (:func:`arrays_to_pipelines`): epoch e's order
    is keyed by (``seed``, e) rather than Keras' global generator, and tf.data's autotuner,
    whose teardown stalled an epoch's start by ~1 s, is off.  The progress bar is
    :class:`kvae.training.callbacks.StepProgbar` (its count within the epoch's steps)."""
    check_inputs(model, x, y, what="training data")
    if validation_data is not None:
        check_inputs(model, validation_data, None, what="validation data")
    if not args:
        x, y, validation_data = arrays_to_pipelines(model, x, y, validation_data, kwargs)
    if isinstance(x, tf.data.Dataset):
        kwargs.setdefault("shuffle", False)  # a Dataset shuffles itself; avoids Keras' warning
        if getattr(x, "kvae_epoch", None) is not None:  # a kvae pipeline: order each epoch by its number
            kwargs["callbacks"] = [DataEpoch(x.kvae_epoch), *(kwargs.get("callbacks") or [])]
    given = list(kwargs.get("callbacks") or [])
    if kwargs.get("verbose", "auto") != 0 and not any(isinstance(c, keras.callbacks.ProgbarLogger) for c in given):
        kwargs["callbacks"] = [*given, StepProgbar()]  # its count stays within the epoch's steps
    if not model.freeze_gc_during_fit:
        return keras_fit(x, y, *args, validation_data=validation_data, **kwargs)
    freeze = FreezeGC()
    kwargs["callbacks"] = [freeze, *(kwargs.get("callbacks") or [])]
    try:
        return keras_fit(x, y, *args, validation_data=validation_data, **kwargs)
    finally:  # also when fit raises (Keras then skips on_train_end)
        freeze.on_train_end()


def arrays_to_pipelines(model, x, y, validation_data, kwargs):
    """numpy training (and validation) arrays become kvae pipelines (:func:`kvae.data.batches`):
    batches of ``batch_size`` (Keras' default 32), epoch e in the order keyed by (model seed, e)
    when ``shuffle`` (as a resumed run needs), tf.data's autotuner off.  Arrays with
    ``sample_weight``, ``class_weight``, ``validation_split``, ``steps_per_epoch`` or
    ``shuffle="batch"`` go to Keras unchanged."""
    def arrays(a, b):
        a, b = split_xy(a, b)
        if isinstance(a, np.ndarray) and (b is None or isinstance(b, np.ndarray)):
            return a, b
        return None

    def _unset(value):
        return value is None or (isinstance(value, (int, float)) and value == 0)

    keras_only = ("sample_weight", "class_weight", "validation_split", "steps_per_epoch")
    train = arrays(x, y)
    if train is None or any(not _unset(kwargs.get(k)) for k in keras_only) or \
            kwargs.get("shuffle", True) not in (True, False):
        if train is not None and train[1] is None and kwargs.get("sample_weight") is not None:
            y = np.zeros(len(train[0]), np.int32)  # Keras drops sample_weight when y is None (unused here)
        return x, y, validation_data
    batch_size = kwargs.pop("batch_size", None) or 32
    shuffle = kwargs.pop("shuffle", True)
    a, b = train
    a = a.astype(np.float32, copy=False)
    x = batches(a, b, batch_size, shuffle=shuffle, seed=model.seed)
    valid = arrays(validation_data, None) if validation_data is not None else None
    if valid is not None:
        va, vb = valid
        vbatch = kwargs.pop("validation_batch_size", None) or batch_size
        validation_data = batches(va.astype(np.float32, copy=False), vb, vbatch, shuffle=False)
    return x, None, validation_data

