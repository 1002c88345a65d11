"""JSON answers, fast and byte-identical to ``json.dumps(payload).encode()`` with arrays as nested lists.

A ``/decode`` answer of one code is 1,568 float32 numbers; ``json.dumps`` of their ``tolist()`` spends
most of the request's CPU in Python's float repr.  orjson writes the same shortest round-trip digits
from a float64 array in C (the float32 values widened exactly, as ``tolist()`` does); its spelling
differs from Python's in three ways, each fixed on the bytes: no space after ``,``; positional
``0.0000ddd`` where Python writes ``d.dde-05``; one-digit exponents ``e-7`` where Python writes ``e-07``.
Arrays with NaN or infinities (orjson writes ``null``) and everything that is not an array go through
``json.dumps`` unchanged.
"""
import json
import re

import numpy as np
import orjson

_MINUS_5 = re.compile(rb"0\.0000([1-9])([0-9]*)")  # (a digit before it: part of a larger number)
_DIGITS = np.zeros(256, bool)
_DIGITS[ord("0"):ord("9") + 1] = True


def _two_digit_exponents(raw):
    """``e-7`` -> ``e-07`` (a zero inserted, vectorised: a /decode answer has hundreds)."""
    b = np.frombuffer(raw, np.uint8)
    e = np.flatnonzero(b[:-2] == ord("e"))
    e = e[b[e + 1] == ord("-")]
    end = e + 3  # the character after the exponent's first digit
    one = np.ones(len(e), bool)
    inside = end < len(b)
    one[inside] = ~_DIGITS[b[end[inside]]]
    return np.insert(b, e[one] + 2, ord("0")).tobytes() if one.any() else raw


def _scientific_minus_5(raw):
    """Positional ``0.0000ddd`` (1e-5 <= |x| < 1e-4) -> Python's ``d.dde-05``."""

    def fix(match):
        start = match.start()
        if start and _DIGITS[raw[start - 1]]:  # e.g. 10.00001: not the number's start
            return match.group(0)
        head, tail = match.group(1), match.group(2)
        return head + (b"." + tail if tail else b"") + b"e-05"

    return _MINUS_5.sub(fix, raw)


def array_json(array):
    """``json.dumps(array.tolist()).encode()``, computed by orjson for numeric arrays."""
    kind = array.dtype.kind
    if array.ndim == 0 or array.size == 0 or kind not in "fiub":
        return json.dumps(array.tolist()).encode()
    if kind == "f":
        wide = np.ascontiguousarray(array, dtype=np.float64)
        if not np.isfinite(wide).all():
            return json.dumps(array.tolist()).encode()
        raw = orjson.dumps(wide, option=orjson.OPT_SERIALIZE_NUMPY)
        if b"e" in raw:  # one byte: a memchr, where a two-byte search costs ~10 us per answer
            raw = _two_digit_exponents(raw)
        magnitude = np.abs(wide)
        if ((magnitude >= 0.99e-5) & (magnitude < 1.01e-4)).any():  # written 0.0000ddd (bounds with room)
            raw = _scientific_minus_5(raw)
    else:
        try:
            raw = orjson.dumps(np.ascontiguousarray(array), option=orjson.OPT_SERIALIZE_NUMPY)
        except orjson.JSONEncodeError:  # a byte order or width orjson does not take
            return json.dumps(array.tolist()).encode()
    return raw.replace(b",", b", ")


def _plain(value):
    """``value`` with every array turned into nested lists (what ``json.dumps`` takes)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def dumps(payload):
    """The JSON bytes of ``payload`` (dicts, lists, scalars and numpy arrays), exactly as
    ``json.dumps`` writes it with every array replaced by its ``tolist()``."""
    if isinstance(payload, np.ndarray):
        return array_json(payload)
    if isinstance(payload, dict):
        if not all(isinstance(k, str) for k in payload):
            return json.dumps(_plain(payload)).encode()
        return b"{" + b", ".join(json.dumps(k).encode() + b": " + dumps(v) for k, v in payload.items()) + b"}"
    if isinstance(payload, (list, tuple)):
        return b"[" + b", ".join(dumps(v) for v in payload) + b"]"
    return json.dumps(payload).encode()
