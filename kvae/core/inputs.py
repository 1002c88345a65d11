"""The one place that reads ``(x, y)`` pairs out of what ``fit``, ``evaluate`` and the steps receive."""


def split_xy(x, y=None, sizes=(2,)):
    """``(x, y)`` from inputs that may hold both in ``x``: a tuple or list ``x`` of one of ``sizes``
    elements, with ``y`` None, gives ``(x[0], x[1])`` (a third element, sample weights, is dropped);
    anything else is returned as ``(x, y)``."""
    if y is None and isinstance(x, (tuple, list)) and len(x) in sizes:
        return x[0], x[1]
    return x, y
