"""uvicorn's httptools protocol with two guards of a production server: a deadline for each whole
request (headers and body, from its first byte or from the connection's start), after which the
client gets 408 and the connection closes, so a client sending one byte every few seconds (or
nothing) holds no slot; and a half-closed connection (the client sent its request and shut its
writing side) still gets its answer before the connection closes."""
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: seconds a request may take to arrive whole (``kvae-serve --read-timeout``)
READ_TIMEOUT = 30.0


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    read_timeout = READ_TIMEOUT

    def connection_made(self, transport):
        super().connection_made(transport)
        self._deadline = None
        self._arm()

    def _arm(self):
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.read_timeout, self._expire)

    def _disarm(self):
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self):
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            message = b'{"error": "the request did not arrive whole within the read timeout"}'
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"content-length: " + str(len(message)).encode() + b"\r\nconnection: close\r\n\r\n"
                                 + message)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()

    def on_message_begin(self):
        super().on_message_begin()
        self._arm()

    def on_message_complete(self):
        super().on_message_complete()
        self._disarm()

    def on_response_complete(self):
        super().on_response_complete()
        self._disarm()  # the connection now idles under uvicorn's keep-alive timeout

    def connection_lost(self, exc):
        self._disarm()
        super().connection_lost(exc)

    def eof_received(self):
        """The client will send nothing more: answer the request in progress, then close."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return None  # nothing in progress: asyncio closes the transport
        cycle.keep_alive = False
        if cycle.more_body:  # the body will never be complete: the app sees what arrived
            cycle.more_body = False
            cycle.message_event.set()
        return True
