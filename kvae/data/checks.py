"""The input checks every model runs: :func:`validate` (an array against a model's shape and support),
:func:`check_inputs` (what ``fit``/``evaluate`` receive) and :func:`split_xy` (``(x, y)`` given as one
argument)."""
import numpy as np
import tensorflow as tf

from kvae.core.inputs import labels_out_of_range, split_xy  # noqa: F401  (split_xy re-exported: kvae.data.split_xy)
from kvae.errors import DataError


def _first_index(mask):
    """Index (as a tuple) of the first True in ``mask``, for error messages."""
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _where(mask):
    """``first at index (i, j, ...), example i`` for the first True in ``mask``."""
    first = _first_index(mask)
    return f"first at index {first}, example {first[0]}"


def validate(x, input_shape=None, support=None, name="x"):
    """Raise :class:`DataError` naming the problem if ``x`` (a batch, N first) does not fit.

    Checks the raw array, before any conversion: numeric dtype; per-example shape equals
    ``input_shape``; no NaN/inf; for ``support="binary"`` (Bernoulli decoders) every value is
    exactly 0 or 1; for ``support="intensity"`` (8-bit images) integers in 0..255.  Each message
    names the array, the number of bad values and the index of the first one.
    """
    a = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise DataError(f"{name}: dtype {a.dtype} is not numeric")
    if a.ndim == 0:
        raise DataError(f"{name}: expected a batch of examples, got a scalar")
    if input_shape is not None and tuple(a.shape[1:]) != tuple(input_shape):
        hint = ""
        if int(np.prod(a.shape[1:])) == int(np.prod(input_shape)):
            hint = f"; reshape it with x.reshape((-1,) + {tuple(input_shape)})"
        raise DataError(
            f"{name}: each example has shape {tuple(a.shape[1:])} but the model expects "
            f"{tuple(input_shape)}{hint}")
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            raise DataError(
                f"{name}: {int(np.isnan(a).sum())} NaN and {int(np.isinf(a).sum())} infinite values "
                f"({_where(bad)}); clean the data first")
    if not a.size:
        return
    if support == "binary":
        outside = (a < 0) | (a > 1)
        if outside.any():
            hint = " (divide by 255 and binarise)" if a.max() > 1 else ""
            raise DataError(
                f"{name}: {int(outside.sum())} values outside [0, 1] (min {a.min()}, max {a.max()}; "
                f"{_where(outside)}); a Bernoulli decoder needs 0/1 data{hint}")
        between = (a != 0) & (a != 1)
        if between.any():
            raise DataError(
                f"{name}: {int(between.sum())} non-binary values in (0, 1) ({_where(between)}); a Bernoulli "
                "decoder needs 0/1 data: binarise (e.g. "
                "x > 0.5, or Bernoulli sampling) or use decoder='gaussian'")
    elif support == "intensity":
        bad = (a < 0) | (a > 255) | (a != np.floor(a))
        if bad.any():
            raise DataError(f"{name}: {int(bad.sum())} values that are not 8-bit intensities 0..255 "
                            f"({_where(bad)})")


def check_inputs(model, x, y=None, what="data"):
    """Validate what ``fit``/``evaluate`` receive: arrays, tensors, ``(x, y)`` tuples, or the first
    batch of a ``tf.data.Dataset``.  Other inputs (generators, PyDataset) pass unchecked."""
    support = getattr(model.likelihood, "support", None)
    if isinstance(x, tf.data.Dataset):
        element = next(iter(x.take(1)), None)
        if element is None:
            raise DataError(f"{what}: the dataset is empty")
        import keras

        bx, by, _ = keras.utils.unpack_x_y_sample_weight(element)
        x, y = split_xy(bx, by)
        what = f"{what} (first batch)"
    else:
        x, y = split_xy(x, y, sizes=(2, 3))
    if not (isinstance(x, (np.ndarray, tf.Tensor)) or hasattr(x, "__array__")):
        return
    validate(x, model.data_shape, support, name=what)
    if model.conditional:
        if y is None:
            raise DataError(
                f"{what}: {type(model).__name__} is conditional; give labels as (x, y) or fit(x, y)")
        labels = np.asarray(y)
        if labels.shape[0] != np.asarray(x).shape[0]:
            raise DataError(f"{what}: {labels.shape[0]} labels for {np.asarray(x).shape[0]} examples")
        problem = labels_out_of_range(labels, model.num_classes) if labels.dtype.kind in "iu" and (
            labels.ndim == 1 or labels.shape[1:] == (1,)) else None
        if problem:
            raise DataError(f"{what}: {problem}")
