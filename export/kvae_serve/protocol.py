"""uvicorn's httptools protocol with two guards of a production server: a deadline for each whole
request (headers and body, from its first byte or from the connection's start), after which the
client gets 408 and the connection closes, so a client sending one byte every few seconds (or
nothing) holds no slot; and a half-closed connection (the client sent its request and shut its
writing side) still gets its answer before the connection closes.  A response's status line and
headers leave in the same send as its body (uvicorn writes them apart; with TCP_NODELAY that is two
segments and two wake-ups of the client per answer)."""
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: seconds a request may take to arrive whole (``kvae-serve --read-timeout``)
READ_TIMEOUT = 30.0
#: bytes of a request line and its headers (more: 431 and the connection closes)
MAX_HEADER_BYTES = 65536
#: seconds a refused connection is kept half-open, reading and dropping, before it closes
LINGER_SECONDS = 2.0


class CoalescingTransport:
    """A transport that holds a response head (``HTTP/1.1 xxx ...\\r\\n\\r\\n``, not 1xx) until the next
    write, its body, and sends both at once; a head with no body after it leaves on the loop's next
    turn, and before any close.  Everything else is the wrapped transport's."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport, loop):
        self._transport, self._loop, self._held = transport, loop, None

    def write(self, data):
        if self._held is not None:
            data, self._held = self._held + data, None
        elif data[:9] == b"HTTP/1.1 " and data[9:10] != b"1" and data[-4:] == b"\r\n\r\n":
            self._held = data
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self):
        if self._held is not None:
            data, self._held = self._held, None
            self._transport.write(data)

    def write_eof(self):
        self.flush()
        self._transport.write_eof()

    def close(self):
        self.flush()
        self._transport.close()

    def abort(self):
        self._held = None
        self._transport.abort()

    def __getattr__(self, name):
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a whole-request deadline (408), a header-size limit (431) and
    a lingering close, so those answers reach the client."""

    read_timeout = READ_TIMEOUT

    def connection_made(self, transport):
        super().connection_made(transport)
        self.transport = CoalescingTransport(transport, self.loop)
        self._deadline = None
        self._header_bytes = 0  # None once the headers of the request in progress are complete
        self._arm()

    def data_received(self, data):
        if getattr(self, "_lingering", False):
            return
        counting = self._header_bytes is not None
        if counting:
            self._header_bytes += len(data)
        super().data_received(data)  # parsed first: the chunk may end the headers and carry the body
        if counting and self._header_bytes is not None and self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(b"431 Request Header Fields Too Large",
                         f"the request line and headers are over {MAX_HEADER_BYTES} bytes".encode())

    def on_url(self, url):
        self._count(url)
        super().on_url(url)

    def on_header(self, name, value):
        self._count(name + value)
        super().on_header(name, value)

    def _count(self, part):
        """Bytes of the request line and headers the parser handed over (a whole header can arrive in
        the same chunk as the end of the headers); over the limit: the parse stops, 431."""
        self._parsed_bytes = getattr(self, "_parsed_bytes", 0) + len(part)
        if self._parsed_bytes > MAX_HEADER_BYTES:
            self._headers_too_large = True
            raise ValueError("headers too large")  # httptools stops; uvicorn calls send_400_response

    def send_400_response(self, msg):
        if getattr(self, "_headers_too_large", False):
            self._refuse(b"431 Request Header Fields Too Large",
                         f"the request line and headers are over {MAX_HEADER_BYTES} bytes".encode())
        else:
            super().send_400_response(msg)

    def on_headers_complete(self):
        self._header_bytes = None
        self._parsed_bytes = 0
        super().on_headers_complete()

    def _refuse(self, status, message):
        """Answer ``status`` with ``{"error": message}`` and close (no request of ours is in progress)."""
        if self.transport.is_closing():
            return
        body = b'{"error": "' + message + b'"}'
        self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
                             + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self._disarm()
        # a lingering close: FIN after the answer, what the client still sends is read and dropped
        # for a moment (closing at once would answer it with a reset that can destroy the answer)
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _arm(self):
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.read_timeout, self._expire)

    def _disarm(self):
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self):
        self._deadline = None
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # answering already: nothing more to say
        else:
            self._refuse(b"408 Request Timeout", b"the request did not arrive whole within the read timeout")

    def on_message_begin(self):
        super().on_message_begin()
        self._arm()

    def on_message_complete(self):
        super().on_message_complete()
        self._header_bytes = 0  # what follows is the next request's line and headers
        self._disarm()

    def on_response_complete(self):
        super().on_response_complete()
        self._disarm()  # the connection now idles under uvicorn's keep-alive timeout

    def connection_lost(self, exc):
        self._disarm()
        super().connection_lost(exc)

    def eof_received(self):
        """The client will send nothing more: answer the request in progress, then close."""
        if getattr(self, "_lingering", False):
            return None
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return None  # nothing in progress: asyncio closes the transport
        cycle.keep_alive = False
        if cycle.more_body:  # the body will never be complete: the app sees what arrived
            cycle.more_body = False
            cycle.message_event.set()
        return True
