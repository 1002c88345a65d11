"""HTTP JSON server for a kvae bundle (standard library only).

    python -m kvae_serve BUNDLE_DIR [--host 127.0.0.1] [--port 8000] [--max-samples 256]

* ``GET /`` -> the browser explorer (``static/``, shipped in this package: no CDN, works offline)
* ``GET /explorer.json`` -> the bundle's explorer data (KL per dimension, code map, examples), 404 if none
* ``GET /healthz`` -> ``{"status": "ok", "model": ..., "endpoints": [paths served], "input_shape", ...}``
* ``POST /sample`` ``{"n": 4, "seed": 0, "labels": [..], "source": "prior"|"density"}`` -> ``{"images", "shape"}``
* ``POST /decode`` ``{"z": [[...], ...], "labels": [...]}`` -> decoder parameters (``probs`` or ``loc``, ...)
* ``POST /images`` ``{"z": [[...], ...], "seed": 0, "labels": [...]}`` -> ``{"images", "shape"}`` decoded from z
* ``POST /encode`` ``{"x": [...], "labels": [...]}`` -> posterior parameters (``loc``, ``scale``, ...)
* ``POST /reconstruct`` ``{"x": [...], "seed": 0, "labels": [...]}`` -> ``{"images", "shape"}``
* ``POST /log_prob`` ``{"x": [...], "k": 100, "seed": 0, "labels": [...]}`` -> ``{"log_prob": [...]}``

Client errors get a 4xx status and ``{"error": "..."}``: malformed JSON or Content-Length (400),
wrong shapes, types or values (400), unknown path (404), wrong method (405, with ``Allow``),
body too large (413), body not JSON (415), missing length (411), a body that never arrives (408).
The server keeps running; a client that disconnects mid-answer is ignored.  The listen backlog
is ``request_queue_size`` (1024), not socketserver's 5, so bursts of connections queue instead
of being reset (benchmarks/serving_load.py measures it).
"""
import argparse
import errno
import json
import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import __version__
from .bundle import Bundle, BundleError

MAX_BODY = 64 << 20
READ_TIMEOUT = 30.0
POST_PATHS = ("/sample", "/decode", "/images", "/encode", "/reconstruct", "/log_prob")
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8"}


def _static_files():
    """{URL path: file} of the explorer's assets: ``/`` is index.html, the rest under /static/."""
    files = {}
    if os.path.isdir(STATIC_DIR):
        for name in sorted(os.listdir(STATIC_DIR)):
            if os.path.splitext(name)[1] in STATIC_TYPES:
                files[f"/static/{name}"] = os.path.join(STATIC_DIR, name)
    if "/static/index.html" in files:
        files["/"] = files["/static/index.html"]
    return files


class RequestError(Exception):
    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _int_field(data, name, default=None, minimum=None, maximum=None):
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


def _array_field(data, name, max_rows):
    if name not in data:
        raise RequestError(400, f"missing field {name!r}")
    value = data[name]
    if not isinstance(value, list):
        raise RequestError(400, f"{name} must be a list (a batch), got {type(value).__name__}")
    if len(value) > max_rows:
        raise RequestError(400, f"{len(value)} rows in {name} is over the limit of {max_rows}")
    return value


class Server(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that went away is not our error
        err = sys.exc_info()[1]
        if isinstance(err, (ConnectionError, socket.timeout, TimeoutError)):
            return
        super().handle_error(request, client_address)


def make_handler(bundle, max_samples):
    endpoints = set(bundle.endpoints)
    served = ["/healthz"] + [p for p in POST_PATHS if p.lstrip("/") in endpoints
                             or (p == "/sample" and "sample" in endpoints)]
    static = _static_files()
    get_paths = ["/healthz", "/explorer.json"] + list(static)

    class Handler(BaseHTTPRequestHandler):
        server_version = f"kvae-serve/{__version__}"
        protocol_version = "HTTP/1.1"
        timeout = READ_TIMEOUT

        def log_message(self, fmt, *args):  # quiet; errors are returned to the client
            pass

        def _send(self, status, payload, headers=None, content_type="application/json"):
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                if status >= 400:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(body)
            except (ConnectionError, socket.timeout, TimeoutError):
                self.close_connection = True

        def send_error(self, code, message=None, explain=None):
            """http.server's own errors, as JSON; the ones it calls 5xx are the client's (an unknown
            method is 501 there, an unknown HTTP version 505): answered 405 / 400."""
            if code == 501:
                code, message = 405, f"unsupported method; use {', '.join(('GET /healthz', 'POST'))}"
            elif code >= 500:
                code = 400
            self._send(code, {"error": message or explain or "bad request"})

        def _path(self):
            return self.path.split("?", 1)[0]

        def _body(self):
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                raise RequestError(411, "chunked bodies are not supported: send Content-Length")
            raw = self.headers.get("Content-Length")
            if raw is None:
                raise RequestError(411, "Content-Length is required")
            if not raw.strip().isdigit():
                raise RequestError(400, f"Content-Length must be a non-negative integer, got {raw[:50]!r}")
            length = int(raw)
            if length > MAX_BODY:
                raise RequestError(413, f"request body over {MAX_BODY} bytes")
            if length == 0:
                raise RequestError(400, "empty request body: send a JSON object")
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype not in ("application/json", ""):
                self.rfile.read(length)
                raise RequestError(415, f"Content-Type must be application/json, got {ctype[:80]!r}")
            try:
                body = self.rfile.read(length)
            except (socket.timeout, TimeoutError):
                raise RequestError(408, "the request body did not arrive in time") from None
            if len(body) < length:
                raise RequestError(400, f"the body ended after {len(body)} of {length} bytes")
            try:
                data = json.loads(body)
            except (ValueError, RecursionError) as err:
                raise RequestError(400, f"malformed JSON: {err}"[:300]) from None
            if not isinstance(data, dict):
                raise RequestError(400, "the request body must be a JSON object")
            return data

        def _method_not_allowed(self, allowed):
            raise RequestError(405, f"{self.command} is not allowed on {self._path()}; use {allowed}",
                               {"Allow": allowed})

        def _dispatch(self, handler):
            try:
                handler()
            except RequestError as err:
                self._send(err.status, {"error": str(err)}, err.headers)
            except BundleError as err:
                self._send(400, {"error": str(err)})
            except (ConnectionError, socket.timeout, TimeoutError):
                self.close_connection = True
            except Exception as err:  # a bug on our side: answer 500, keep serving
                self._send(500, {"error": f"internal error: {type(err).__name__}: {err}"[:500]})

        def do_GET(self):
            self._dispatch(self._get)

        def do_HEAD(self):
            self._dispatch(lambda: self._method_not_allowed("GET" if self._path() in get_paths else "POST"))

        def do_POST(self):
            self._dispatch(self._post)

        def do_PUT(self):
            self._dispatch(self._other)

        do_DELETE = do_PATCH = do_OPTIONS = do_PUT

        def _other(self):
            path = self._path()
            if path in get_paths:
                self._method_not_allowed("GET")
            if path in served:
                self._method_not_allowed("POST")
            raise RequestError(404, f"unknown path {path[:200]}; served: {', '.join(served)}")

        def _get(self):
            path = self._path()
            if path == "/healthz":
                self._send(200, {"status": "ok", "model": bundle.manifest["model"]["class"], "endpoints": served,
                                 "input_shape": list(bundle.input_shape), "latent_dim": bundle.latent_dim,
                                 "num_classes": bundle.num_classes, "likelihood": bundle.manifest["model"].get(
                                     "likelihood"), "explorer": bundle.explorer is not None})
            elif path == "/explorer.json":
                if bundle.explorer is None:
                    raise RequestError(404, "this bundle has no explorer data: export it with "
                                            "`kvae export RUN_DIR --explorer-examples 500`")
                self._send(200, bundle.explorer)
            elif path in static:
                with open(static[path], "rb") as f:
                    self._send(200, f.read(), {"Cache-Control": "no-cache"},
                               STATIC_TYPES[os.path.splitext(static[path])[1]])
            elif path in served:
                self._method_not_allowed("POST")
            else:
                raise RequestError(404, f"unknown path {path[:200]}; served: {', '.join(served)}")

        def _post(self):
            path = self._path()
            if path in get_paths:
                self._method_not_allowed("GET")
            if path not in served:
                raise RequestError(404, f"unknown path {path[:200]}; served: {', '.join(served)}")
            data = self._body()
            labels = data.get("labels")
            if path == "/sample":
                n = _int_field(data, "n", 1, minimum=1, maximum=max_samples)
                seed = _int_field(data, "seed", None, minimum=0)
                source = data.get("source", "prior")
                if source not in ("prior", "density"):
                    raise RequestError(400, f"source must be 'prior' or 'density', got {source!r}"[:200])
                images = bundle.sample(n, seed=seed, labels=labels, source=source)
                self._send(200, {"images": images.tolist(), "shape": list(images.shape)})
            elif path == "/decode":
                out = bundle.decode(_array_field(data, "z", max_samples), labels=labels)
                self._send(200, {k: v.tolist() for k, v in out.items()})
            elif path == "/images":
                seed = _int_field(data, "seed", None, minimum=0)
                images = bundle.images(_array_field(data, "z", max_samples), seed=seed, labels=labels)
                self._send(200, {"images": images.tolist(), "shape": list(images.shape)})
            elif path == "/encode":
                out = bundle.encode(_array_field(data, "x", max_samples), labels=labels)
                self._send(200, {k: v.tolist() for k, v in out.items()})
            elif path == "/reconstruct":
                seed = _int_field(data, "seed", None, minimum=0)
                images = bundle.reconstruct(_array_field(data, "x", max_samples), seed=seed, labels=labels)
                self._send(200, {"images": images.tolist(), "shape": list(images.shape)})
            elif path == "/log_prob":
                x = _array_field(data, "x", max_samples)
                k = _int_field(data, "k", 100, minimum=1, maximum=5000)
                seed = _int_field(data, "seed", None, minimum=0)
                if len(x) * k > 50 * max_samples * 100:
                    raise RequestError(400, f"{len(x)} examples x k={k} is over the limit of this server")
                values = bundle.log_prob(x, k=k, seed=seed, labels=labels)
                self._send(200, {"log_prob": values.tolist(), "k": k})

    return Handler


def make_server(bundle_dir, host="127.0.0.1", port=8000, max_samples=256):
    """The server object (not yet serving); raises BundleError or OSError (e.g. a busy port)."""
    bundle = bundle_dir if isinstance(bundle_dir, Bundle) else Bundle(bundle_dir)
    return Server((host, port), make_handler(bundle, max_samples))


def serve(bundle_dir, host="127.0.0.1", port=8000, max_samples=256):
    server = make_server(bundle_dir, host, port, max_samples)
    print(f"serving {bundle_dir} on http://{host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


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


def main(argv=None):
    p = argparse.ArgumentParser(prog="kvae-serve", description="Serve a kvae bundle over HTTP (JSON).")
    p.add_argument("bundle")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-samples", type=int, default=256)
    p.add_argument("--check", action="store_true", help="verify and load the bundle, run every session once, "
                                                        "print one line and exit (0: ok, 1: error)")
    p.add_argument("--key-file", default=os.environ.get("KVAE_BUNDLE_KEY_FILE"),
                   help="HMAC key the bundle was signed with (default: $KVAE_BUNDLE_KEY_FILE)")
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535 or args.max_samples < 1:
        print("kvae-serve: error: --port must be in 0..65535 and --max-samples positive", file=sys.stderr)
        return 1
    try:
        key = None if args.key_file is None else read_key(args.key_file)
        if args.check:
            print(check(args.bundle, key))
            return 0
        serve(args.bundle, args.host, args.port, args.max_samples)
    except BundleError as err:
        print(f"kvae-serve: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        reason = "the port is in use" if err.errno == errno.EADDRINUSE else err.strerror or str(err)
        print(f"kvae-serve: error: cannot listen on {args.host}:{args.port}: {reason}", file=sys.stderr)
        return 1
    return 0
