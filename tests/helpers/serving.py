"""kvae-serve in a background thread of the test process, on a free port of 127.0.0.1."""
import contextlib
import socket
import threading


@contextlib.contextmanager
def serving(bundle, **options):
    """Serve ``bundle`` (a path or Bundle) while the block runs; yields the server's port."""
    from kvae_serve.server import make_server

    srv = make_server(bundle, port=0, **options)  # uvicorn on a socket bound here
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def exchange(port, data, timeout=10.0, half_close=False):
    """Send raw bytes to 127.0.0.1:port (then, with ``half_close``, shut the writing side) and read until
    the server closes or ``timeout`` passes; returns (status code, or None without one, answer bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        answer = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            answer += chunk
    return (int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None), answer
