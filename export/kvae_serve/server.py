"""``kvae-serve``: the bundle's app (:mod:`kvae_serve.app`) on uvicorn, one process or ``--workers N``.

    kvae-serve BUNDLE_DIR [--host 127.0.0.1] [--port 8000] [--workers N] [--max-batch 1] [--max-wait-ms 2]
    kvae-serve --check BUNDLE_DIR

uvicorn with its C parser (httptools, uvloop where installed; ``TCP_NODELAY`` on every connection),
keep-alive, graceful shutdown on SIGINT/SIGTERM (requests in progress are answered), a cap on open
connections and tasks per worker (``--max-connections``: beyond it uvicorn answers 503) and a
deadline for each request to arrive whole (``--read-timeout``, :mod:`kvae_serve.protocol`).  Each
worker loads the bundle itself and holds its own onnxruntime sessions (``--threads`` intra-op
threads each, spinning off).
"""
import argparse
import errno
import json
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading

from .bundle import Bundle, BundleError

BACKLOG = 2048


def usable_cores():
    """The CPU cores this process may run on (the default number of workers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _loop():
    import importlib.util

    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def uvicorn_config(app, read_timeout, max_connections, workers=1):
    """The uvicorn Config kvae-serve runs ``app`` (an app or the factory's import string) with."""
    import uvicorn

    from . import __version__
    from .protocol import GuardedHttpToolsProtocol

    if workers == 1:  # a class of this server's own (several servers can share a process)
        protocol = type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"read_timeout": float(read_timeout)})
    else:  # pickled by name into the workers, which set read_timeout (kvae_serve.app.create_app_from_env)
        protocol = GuardedHttpToolsProtocol
    return uvicorn.Config(app, factory=isinstance(app, str), workers=workers, loop=_loop(), http=protocol,
                          lifespan="off", log_level="error", access_log=False,
                          server_header=False, headers=[("Server", f"kvae-serve/{__version__} (uvicorn)")],
                          proxy_headers=False, timeout_keep_alive=5, timeout_graceful_shutdown=30,
                          limit_concurrency=max_connections,
                          backlog=BACKLOG)


#: one listening socket per worker (Linux's SO_REUSEPORT balances connections over them)
SPREAD_CONNECTIONS = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind(host, port, listen=True, reuse_port=False):
    """A TCP socket bound to ``host:port``, listening if ``listen`` (OSError as the caller's one-line error)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        if listen:
            sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def listen_alone(inode, host, port):
    """In a worker of ``kvae-serve --workers N``: the socket inherited from the parent (found by its
    ``inode`` among this process's descriptors; bound, not listening) becomes a listening socket of
    this worker's own on the same address (SO_REUSEPORT), which uvicorn then serves.  The kernel
    spreads new connections over the workers' sockets; with one shared socket, the worker that woke
    first accepted a whole burst (32 keep-alive clients: one worker served all of them, the other none)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.fstat(int(name))
        except OSError:
            continue
        if stat.S_ISSOCK(st.st_mode) and st.st_ino == inode:
            own = bind(host, port, listen=True, reuse_port=True)
            os.dup2(own.fileno(), int(name))
            own.close()
            return
    raise BundleError("the listening socket from kvae-serve's parent process is missing")


class ThreadedServer:
    """kvae-serve in the calling process (``kvae explore``, tests): ``serve_forever()`` runs uvicorn
    until ``shutdown()`` (from another thread) or SIGINT/SIGTERM (in the main thread)."""

    def __init__(self, bundle, host="127.0.0.1", port=0, max_connections=1024, **options):
        import uvicorn

        from .app import DEFAULTS, create_app

        self.app = create_app(bundle, **options)
        self.socket = bind(host, port)
        self.server_address = self.socket.getsockname()[:2]
        read_timeout = options.get("read_timeout", DEFAULTS["read_timeout"])
        self.server = uvicorn.Server(uvicorn_config(self.app, read_timeout, max_connections))
        self._done = threading.Event()

    def serve_forever(self):
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self._done.set()

    def shutdown(self):
        self.server.should_exit = True
        self._done.wait(60)

    def server_close(self):
        self.socket.close()


def make_server(bundle, host="127.0.0.1", port=8000, **options):
    """The server object (not yet serving); raises BundleError or OSError (e.g. a busy port)."""
    return ThreadedServer(bundle if isinstance(bundle, Bundle) else Bundle(bundle), host, port, **options)


def read_key(path):
    """The HMAC key in ``path`` (its bytes without surrounding whitespace); BundleError if unreadable."""
    try:
        with open(path, "rb") as f:
            key = f.read().strip()
    except OSError as err:
        raise BundleError(f"cannot read --key-file {path}: {err.strerror}") from None
    if not key:
        raise BundleError(f"--key-file {path} is empty")
    return key


def check(bundle_dir, key=None):
    """Load ``bundle_dir`` as the server would (every check, every session run once); one line."""
    bundle = Bundle(bundle_dir, key=key)
    return (f"{bundle_dir}: ok ({len(bundle.endpoints)} endpoints: {', '.join(bundle.endpoints)}; "
            "every file verified, every session ran)")


def serve(args, key):
    """Check the bundle, bind, then serve with ``args.workers`` processes until SIGINT/SIGTERM."""
    options = {"max_samples": args.max_samples, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
               "queue": args.queue, "max_log_prob_samples": args.max_log_prob_samples,
               "read_timeout": args.read_timeout}
    if args.workers == 1:
        server = ThreadedServer(Bundle(args.bundle, key=key, threads=args.threads, spinning=False), args.host,
                                args.port, args.max_connections, **options)
        print(f"serving {args.bundle} on http://{args.host}:{server.server_address[1]} (1 worker)", flush=True)
        # uvicorn answers the requests in progress, then raises the signal again for the handler it
        # found: a no-op here, so a graceful stop exits 0
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: None)
        try:
            server.serve_forever()
        finally:
            server.server_close()
        return
    check(args.bundle, key)  # one line now, not one per worker
    # the port is taken here (a busy port is one line now); with SPREAD_CONNECTIONS each worker listens
    # on a socket of its own (listen_alone) and this one only holds the address
    sock = bind(args.host, args.port, listen=not SPREAD_CONNECTIONS, reuse_port=SPREAD_CONNECTIONS)
    spread = [os.fstat(sock.fileno()).st_ino, args.host, sock.getsockname()[1]] if SPREAD_CONNECTIONS else None
    metrics_dir = tempfile.mkdtemp(prefix="kvae-serve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ["KVAE_SERVE_OPTIONS"] = json.dumps({**options, "bundle": os.path.abspath(args.bundle),
                                                   "key_file": args.key_file, "threads": args.threads,
                                                   "listen_alone": spread})
    from uvicorn.supervisors import Multiprocess

    config = uvicorn_config("kvae_serve.app:create_app_from_env", args.read_timeout, args.max_connections,
                            args.workers)
    print(f"serving {args.bundle} on http://{args.host}:{sock.getsockname()[1]} ({args.workers} workers)", flush=True)
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def parser():
    """The ``kvae-serve`` argument parser."""
    p = argparse.ArgumentParser(prog="kvae-serve", description="Serve a kvae bundle over HTTP (JSON API, "
                                "KServe/Triton v2, Prometheus /metrics, the browser explorer).")
    p.add_argument("bundle")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=usable_cores(), help="processes, each with its own sessions "
                                                                     "(default: the usable cores)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads per worker")
    p.add_argument("--max-samples", type=int, default=256, help="rows per request")
    p.add_argument("--max-log-prob-samples", type=int, default=25600, help="rows x k per /log_prob request")
    p.add_argument("--max-batch", type=int, default=1, help="rows per micro-batched run (1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a request waits for a batch")
    p.add_argument("--queue", type=int, default=256, help="requests per endpoint and worker admitted at once; "
                                                         "more get 503 with Retry-After")
    p.add_argument("--max-connections", type=int, default=1024, help="open connections per worker; more get 503")
    p.add_argument("--read-timeout", type=float, default=30.0, help="seconds for a whole request to arrive (408)")
    p.add_argument("--check", action="store_true", help="verify and load the bundle, run every session once, "
                                                        "print one line and exit (0: ok, 1: error)")
    p.add_argument("--key-file", default=os.environ.get("KVAE_BUNDLE_KEY_FILE"),
                   help="HMAC key the bundle was signed with (default: $KVAE_BUNDLE_KEY_FILE)")
    return p


def main(argv=None):
    """Run ``kvae-serve``: check the bundle (``--check``: only that), then serve it until SIGINT/SIGTERM."""
    args = parser().parse_args(argv)
    bad = [name for name, ok in (("--port must be in 0..65535", 0 <= args.port <= 65535),
                                 ("--workers", args.workers >= 1), ("--threads", args.threads >= 0),
                                 ("--max-samples", args.max_samples >= 1), ("--max-batch", args.max_batch >= 1),
                                 ("--max-wait-ms", args.max_wait_ms >= 0), ("--queue", args.queue >= 1),
                                 ("--max-connections", args.max_connections >= 1),
                                 ("--max-log-prob-samples", args.max_log_prob_samples >= 1),
                                 ("--read-timeout", args.read_timeout > 0)) if not ok]
    if bad:
        print(f"kvae-serve: error: {bad[0]}{'' if 'must' in bad[0] else ' must be positive'}", file=sys.stderr)
        return 1
    try:
        key = None if args.key_file is None else read_key(args.key_file)
        if args.check:
            print(check(args.bundle, key))
            return 0
        serve(args, key)
    except BundleError as err:
        print(f"kvae-serve: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        reason = "the port is in use" if err.errno == errno.EADDRINUSE else err.strerror or str(err)
        print(f"kvae-serve: error: cannot listen on {args.host}:{args.port}: {reason}", file=sys.stderr)
        return 1
    return 0
