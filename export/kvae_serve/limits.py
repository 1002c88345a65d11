"""Bounded work per request: the body's size from its header and while it streams, a deadline for
reading it, and per-endpoint load shedding (503 + Retry-After when an endpoint's queue is full)."""
import asyncio
import json
import re

#: bytes of JSON per number a valid request can need ("-0.123456789012345678e-05,"), with room
BYTES_PER_NUMBER = 32
_LENGTH = re.compile(rb"[0-9]{1,15}")


class RequestError(Exception):
    """A client error: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def max_body(bundle, max_samples):
    """The largest body a valid request can need: ``max_samples`` rows of the widest input as JSON."""
    pixels = 1
    for d in bundle.input_shape:
        pixels *= d
    return 65536 + max_samples * (pixels + bundle.latent_dim + 1) * BYTES_PER_NUMBER


def content_length(headers, limit):
    """The declared body length, checked before anything is read: ASCII digits only (400), at most
    ``limit`` (413); chunked bodies and a missing length are 411."""
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        raise RequestError(411, "chunked bodies are not supported: send Content-Length")
    raw = headers.get(b"content-length")
    if raw is None:
        raise RequestError(411, "Content-Length is required")
    raw = raw.strip()
    if not raw.isdigit() or not raw.isascii():
        raise RequestError(400, f"Content-Length must be ASCII digits, got {raw[:40]!r}")
    if not _LENGTH.fullmatch(raw) or int(raw) > limit:
        raise RequestError(413, f"request body over {limit} bytes (the largest request this server accepts)")
    if int(raw) == 0:
        raise RequestError(400, "empty request body: send a JSON object")
    return int(raw)


async def read_body(receive, length, limit, timeout):
    """The body of ``length`` bytes, read with a deadline of ``timeout`` seconds for all of it (408)
    and never more than ``limit`` bytes (413), whatever the stream sends."""
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise RequestError(400, "the client went away before the body arrived")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > min(length, limit):
                    raise RequestError(413 if size > limit else 400, f"the body is longer than its Content-Length "
                                                                       f"({length})")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise RequestError(408, f"the request body did not arrive within {timeout:g} s") from None
    if size < length:
        raise RequestError(400, f"the body ended after {size} of {length} bytes")
    return b"".join(chunks)


def parse_json(body, content_type):
    """The JSON object in ``body`` (415 when the type is not JSON, 400 when it is not an object)."""
    ctype = content_type.split(b";")[0].strip().lower()
    if ctype not in (b"application/json", b""):
        raise RequestError(415, f"Content-Type must be application/json, got {ctype[:80].decode('latin-1')!r}")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as err:
        raise RequestError(400, f"malformed JSON: {err}"[:300]) from None
    if not isinstance(data, dict):
        raise RequestError(400, "the request body must be a JSON object")
    return data


class Shedder:
    """At most ``queue`` requests of one endpoint admitted (running or waiting) in this worker; the
    next is refused at once with 503 and ``Retry-After``, never queued without bound.  A context
    manager: ``with shedder:`` admits one request for the block."""

    def __init__(self, endpoint, queue, on_reject=None):
        self.endpoint, self.queue, self.active = endpoint, queue, 0
        self.on_reject = on_reject

    def __enter__(self):
        if self.active >= self.queue:
            if self.on_reject is not None:
                self.on_reject(self.endpoint, "queue_full")
            raise RequestError(503, f"{self.endpoint}: {self.active} requests in progress, the queue limit; "
                                    "retry shortly", {"Retry-After": "1"})
        self.active += 1
        return self

    def __exit__(self, *exc):
        self.active -= 1
        return False


def field_int(data, name, default=None, minimum=None, maximum=None):
    """An integer field of a JSON request, range-checked (400 naming it)."""
    value = data.get(name, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(400, f"{name} must be an integer, got {value!r}"[:300])
    if minimum is not None and value < minimum:
        raise RequestError(400, f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise RequestError(400, f"{name}={value} is over the limit of {maximum}")
    return value


def field_rows(data, name, max_rows):
    """A batch field (a JSON list of at most ``max_rows`` rows), before any array is built."""
    if name not in data:
        raise RequestError(400, f"missing field {name!r}")
    value = data[name]
    if not isinstance(value, list):
        raise RequestError(400, f"{name} must be a list (a batch), got {type(value).__name__}")
    if len(value) > max_rows:
        raise RequestError(400, f"{len(value)} rows in {name} is over the limit of {max_rows}")
    return value
