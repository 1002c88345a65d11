"""HTTP JSON server for a kvae bundle (standard library only).

    python -m kvae_serve BUNDLE_DIR [--host 127.0.0.1] [--port 8000] [--max-samples 256]

* ``GET /healthz`` -> ``{"status": "ok", "model": ..., "endpoints": [...]}``
* ``POST /sample`` ``{"n": 4, "seed": 0, "labels": [..] (conditional models)}`` -> ``{"images": [...]}``
* ``POST /decode`` ``{"z": [[...], ...], "labels": [...]}`` -> ``{"probs": [...]}`` (or loc/scale, ...)

Bad requests (malformed JSON, wrong shapes or types, too many samples, unknown paths) get a 4xx
status and ``{"error": "..."}``; the server keeps running.
"""
import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from .bundle import Bundle, BundleError

MAX_BODY = 64 << 20


class RequestError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def make_handler(bundle, max_samples):
    class Handler(BaseHTTPRequestHandler):
        server_version = "kvae-serve/0.1"

        def log_message(self, fmt, *args):  # quiet; errors are returned to the client
            pass

        def _send(self, status, payload):
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0:
                raise RequestError(400, "empty request body: send a JSON object")
            if length > MAX_BODY:
                raise RequestError(413, f"request body over {MAX_BODY} bytes")
            try:
                data = json.loads(self.rfile.read(length))
            except ValueError as err:
                raise RequestError(400, f"malformed JSON: {err}") from None
            if not isinstance(data, dict):
                raise RequestError(400, "the request body must be a JSON object")
            return data

        def do_GET(self):
            if self.path == "/healthz":
                self._send(200, {"status": "ok", "model": bundle.manifest["model"]["class"],
                                 "endpoints": bundle.endpoints})
            else:
                self._send(404, {"error": f"unknown path {self.path}; use GET /healthz, POST /sample, POST /decode"})

        def do_POST(self):
            try:
                data = self._body()
                if self.path == "/sample":
                    n = data.get("n", 1)
                    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                        raise RequestError(400, f"n must be a positive integer, got {n!r}")
                    if n > max_samples:
                        raise RequestError(400, f"n={n} is over the limit of {max_samples} samples per request")
                    seed = data.get("seed")
                    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
                        raise RequestError(400, f"seed must be a non-negative integer, got {seed!r}")
                    images = bundle.sample(n, seed=seed, labels=data.get("labels"))
                    self._send(200, {"images": images.tolist(), "shape": list(images.shape)})
                elif self.path == "/decode":
                    if "z" not in data:
                        raise RequestError(400, "missing field 'z' (a list of latent vectors)")
                    try:
                        z = np.asarray(data["z"], dtype=np.float32)
                    except (TypeError, ValueError):
                        raise RequestError(400, "z must be a list of lists of numbers") from None
                    if z.ndim == 2 and len(z) > max_samples:
                        raise RequestError(400, f"{len(z)} vectors is over the limit of {max_samples}")
                    out = bundle.decode(z, labels=data.get("labels"))
                    self._send(200, {k: v.tolist() for k, v in out.items()})
                else:
                    raise RequestError(404, f"unknown path {self.path}; use POST /sample or POST /decode")
            except RequestError as err:
                self._send(err.status, {"error": str(err)})
            except BundleError as err:
                self._send(400, {"error": str(err)})
            except Exception as err:  # never let one request take the server down
                self._send(500, {"error": f"{type(err).__name__}: {err}"})

    return Handler


def serve(bundle_dir, host="127.0.0.1", port=8000, max_samples=256):
    bundle = Bundle(bundle_dir)
    server = ThreadingHTTPServer((host, port), make_handler(bundle, max_samples))
    print(f"serving {bundle_dir} on http://{host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv=None):
    p = argparse.ArgumentParser(prog="kvae-serve", description="Serve a kvae bundle over HTTP (JSON).")
    p.add_argument("bundle")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-samples", type=int, default=256)
    args = p.parse_args(argv)
    try:
        serve(args.bundle, args.host, args.port, args.max_samples)
    except BundleError as err:
        print(f"kvae-serve: error: {err}", file=sys.stderr)
        return 1
    return 0
