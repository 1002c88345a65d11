"""The one place that reads ``(x, y)`` pairs out of what ``fit``, ``evaluate`` and the steps receive,
and turns a conditional model's labels into the one-hot vectors its networks read (Sohn et al. 2015)."""
import numpy as np
import tensorflow as tf

from kvae.errors import DataError


def split_xy(x, y=None, sizes=(2,)):
    """``(x, y)`` from inputs that may hold both in ``x``: a tuple or list ``x`` of one of ``sizes``
    elements, with ``y`` None, gives ``(x[0], x[1])`` (a third element, sample weights, is dropped);
    anything else is returned as ``(x, y)``."""
    if y is None and isinstance(x, (tuple, list)) and len(x) in sizes:
        return x[0], x[1]
    return x, y


def labels_one_hot(y, num_classes, model_name="the model"):
    """Labels as float32 one-hot [B, K]: integers (or booleans) of shape [B] or [B, 1], or one-hot [B, K].

    Integer labels outside 0..K-1 are a :class:`~kvae.errors.DataError` naming how many and the first
    (``tf.one_hot`` would make them all-zero vectors, a condition the model never saw) when their values
    are known, i.e. outside a traced graph; float labels must have shape [B, K]."""
    if y is None:
        raise DataError(f"{model_name} is conditional on a label with {num_classes} classes: "
                        "fit on (x, y) data and pass labels to encode/decode/sample")
    y = tf.convert_to_tensor(y)
    if y.dtype.is_integer or y.dtype == tf.bool:
        if y.shape.rank == 2 and y.shape[-1] == 1:
            y = tf.squeeze(y, -1)
        if y.shape.rank == 2 and y.shape[-1] == num_classes:
            return tf.cast(y, tf.float32)
        if tf.executing_eagerly() and y.dtype != tf.bool:
            problem = labels_out_of_range(np.asarray(y), num_classes)
            if problem:
                raise DataError(problem)
        return tf.one_hot(tf.cast(y, tf.int32), num_classes, dtype=tf.float32)
    y = tf.cast(y, tf.float32)
    if y.shape.rank != 2 or y.shape[-1] != num_classes:
        raise DataError(f"float labels must be one-hot of shape (batch, {num_classes}), got {tuple(y.shape)}")
    return y


def labels_out_of_range(labels, num_classes):
    """The problem with integer ``labels`` (any shape) outside 0..K-1, naming how many and the first
    (flat index and value), or None."""
    values = np.asarray(labels).reshape(-1)
    bad = (values < 0) | (values >= num_classes)
    if not bad.any():
        return None
    first = int(np.argmax(bad))
    return f"labels must be in 0..{num_classes - 1}; {int(bad.sum())} are not (first at index {first}: {values[first]})"
