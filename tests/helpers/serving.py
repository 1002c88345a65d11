"""kvae-serve in a background thread of the test process, on a free port of 127.0.0.1."""
import contextlib
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
