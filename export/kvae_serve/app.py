"""The ASGI application (Starlette): today's JSON API, the explorer's page, ``/metrics`` and the
KServe/Triton v2 protocol (:mod:`kvae_serve.v2`) over one loaded :class:`~kvae_serve.Bundle`.

* ``GET /`` -> the browser explorer (``static/``, shipped in this package: no CDN, works offline)
* ``GET /explorer.json`` -> the bundle's explorer data (KL per dimension, code map, examples), 404 if none
* ``GET /healthz`` -> ``{"status": "ok", "model": ..., "endpoints": [paths served], "input_shape", ...}``
* ``GET /metrics`` -> Prometheus metrics
* ``POST /sample`` ``{"n": 4, "seed": 0, "labels": [..], "source": "prior"|"density"}`` -> ``{"images", "shape"}``
* ``POST /decode`` ``{"z": [[...], ...], "labels": [...]}`` -> decoder parameters (``probs`` or ``loc``, ...)
* ``POST /images`` ``{"z": [[...], ...], "seed": 0, "labels": [...]}`` -> ``{"images", "shape"}`` decoded from z
* ``POST /encode`` ``{"x": [...], "labels": [...]}`` -> posterior parameters (``loc``, ``scale``, ...)
* ``POST /reconstruct`` ``{"x": [...], "seed": 0, "labels": [...]}`` -> ``{"images", "shape"}``
* ``POST /log_prob`` ``{"x": [...], "k": 100, "seed": 0, "labels": [...]}`` -> ``{"log_prob": [...], "k"}``

Client errors get a 4xx status and ``{"error": "..."}`` (and ``Connection: close``).
"""
import asyncio
import concurrent.futures
import json
import os
import time

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Route

from . import codec, v2
from .batching import Batcher, Runner
from .bundle import Bundle, BundleError
from .limits import RequestError, Shedder, content_length, field_int, field_rows, max_body, parse_json, read_body
from .metrics import Metrics

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8"}
POST_PATHS = ("/sample", "/decode", "/images", "/encode", "/reconstruct", "/log_prob")
MAX_K = 5000
#: what the server's limits allow by default (``kvae-serve`` options of the same names)
DEFAULTS = {"max_samples": 256, "max_log_prob_samples": 25600, "max_batch": 1, "max_wait_ms": 2.0, "queue": 256,
            "read_timeout": 30.0}


def static_files():
    """{URL path: file} of the explorer's assets: ``/`` is index.html, the rest under /static/."""
    files = {}
    if os.path.isdir(STATIC_DIR):
        for name in sorted(os.listdir(STATIC_DIR)):
            if os.path.splitext(name)[1] in STATIC_TYPES:
                files[f"/static/{name}"] = os.path.join(STATIC_DIR, name)
    if "/static/index.html" in files:
        files["/"] = files["/static/index.html"]
    return files


class Answer:
    """A whole HTTP answer (status, body, raw headers) sent as the two ASGI messages starlette's
    ``Response`` sends, without its per-request header setup; a route may return it like a Response."""

    __slots__ = ("status_code", "body", "raw_headers")

    def __init__(self, status_code, body, raw_headers):
        self.status_code, self.body, self.raw_headers = status_code, body, raw_headers

    async def __call__(self, scope, receive, send):
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


_JSON_TYPE = (b"content-type", b"application/json")


def json_response(status, payload, headers=None):
    """A JSON :class:`Answer` (numpy arrays in ``payload`` written as nested lists by
    :mod:`kvae_serve.codec`), its headers those starlette's ``Response(..., media_type="application/json")``
    writes; error answers (status >= 400) close the connection."""
    body = codec.dumps(payload)
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()] if headers else []
    if status >= 400:
        raw.append((b"connection", b"close"))
    raw.append((b"content-length", str(len(body)).encode()))
    raw.append(_JSON_TYPE)
    return Answer(status, body, raw)


class Service:
    """The bundle, its limits, runners, batchers, shedders and metrics, shared by the routes."""

    def __init__(self, bundle, **options):
        unknown = set(options) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown options {sorted(unknown)}")
        self.options = {**DEFAULTS, **options}
        self.bundle = bundle
        self.max_samples = self.options["max_samples"]
        self.max_body = max_body(bundle, self.max_samples)
        self.metrics = Metrics()
        self.runner = Runner(bundle, concurrent.futures.ThreadPoolExecutor(1, "kvae-run"))
        self.slow = Runner(bundle, concurrent.futures.ThreadPoolExecutor(1, "kvae-log-prob"))
        self.batchers = {name: Batcher(name, self.runner, self.options["max_batch"], self.options["max_wait_ms"],
                                       self.metrics.batch_rows.labels(name).observe)
                         for name in bundle.endpoints if name != "log_prob"}
        self.shedders = {}
        self.ready = True

    def shedder(self, name):
        """The endpoint's :class:`~kvae_serve.limits.Shedder` (a context manager admitting one request)."""
        shedder = self.shedders.get(name)
        if shedder is None:
            shedder = self.shedders[name] = Shedder(name, self.options["queue"], self.metrics.reject)
        return shedder

    async def body(self, scope, receive, json_only=True):
        """The request's body within the limits (length, deadline); parsed as a JSON object if ``json_only``."""
        headers = dict(scope["headers"])
        length = content_length(headers, self.max_body)
        body = await read_body(receive, length, self.max_body, self.options["read_timeout"])
        return parse_json(body, headers.get(b"content-type", b"")) if json_only else (body, headers)

    async def answer(self, name, work):
        """Run ``work()`` (a coroutine function) for the endpoint ``name``: shed when its queue is full,
        time it, count it, and turn every error into its status."""
        start = time.perf_counter()
        try:
            with self.shedder(name):
                response = await work()
        except RequestError as err:
            if err.status != 503:
                self.metrics.reject(name, str(err.status))
            response = json_response(err.status, {"error": str(err)}, err.headers)
        except BundleError as err:
            self.metrics.reject(name, "400")
            response = json_response(400, {"error": str(err)})
        except Exception as err:  # a bug on our side: answer 500, keep serving
            response = json_response(500, {"error": f"internal error: {type(err).__name__}: {err}"[:500]})
        self.metrics.observe(name, response.status_code, time.perf_counter() - start)
        return response

    async def answer_post(self, path, scope, receive):
        """The :class:`Answer` to a POST of the JSON API (``path``), read from the ASGI ``receive``."""

        async def work():
            return json_response(200, await self.post(path, await self.body(scope, receive)))

        return await self.answer(path, work)

    async def infer(self, endpoint, arrays):
        """Outputs of prepared inputs: micro-batched, or log_prob on its own thread."""
        if endpoint == "log_prob":
            self.metrics.batch_rows.labels(endpoint).observe(arrays["x"].shape[0])
            return await self.slow(endpoint, arrays)
        return await self.batchers[endpoint].submit(arrays)

    async def post(self, path, data):
        """The JSON API's answer to ``data`` posted to ``path``."""
        b, labels, rows = self.bundle, data.get("labels"), self.max_samples
        seed = field_int(data, "seed", None, minimum=0)
        if path == "/log_prob":
            x = field_rows(data, "x", rows)
            k = field_int(data, "k", 100, minimum=1, maximum=MAX_K)
            if len(x) * k > self.options["max_log_prob_samples"]:
                raise RequestError(400, f"{len(x)} examples x k={k} = {len(x) * k} samples is over this server's "
                                        f"limit of {self.options['max_log_prob_samples']} per request")
            loop = asyncio.get_running_loop()
            self.metrics.batch_rows.labels("log_prob").observe(len(x))
            values = await loop.run_in_executor(self.slow.executor, lambda: b.log_prob(x, k, seed, labels))
            return {"log_prob": values, "k": k}
        if path == "/sample":
            n = field_int(data, "n", 1, minimum=1, maximum=rows)
            source = data.get("source", "prior")
            if source not in ("prior", "density"):
                raise RequestError(400, f"source must be 'prior' or 'density', got {source!r}"[:200])
            endpoint, inputs = b.inputs("sample", n, seed, labels, source)
        else:
            name = "z" if path in ("/decode", "/images") else "x"
            endpoint, inputs = b.inputs(path[1:], field_rows(data, name, rows), seed, labels)
        arrays = b.prepare(endpoint, **inputs)
        data.clear()  # the parsed JSON is not kept while the request waits for its batch
        del inputs
        out = await self.infer(endpoint, arrays)
        if path in ("/decode", "/encode"):
            return out
        return {"images": out["images"], "shape": list(out["images"].shape)}


def create_app(bundle, **options):
    """The Starlette app serving ``bundle`` (a path or a loaded Bundle) with the limits in ``options``."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
    service = Service(bundle, **options)
    endpoints = set(bundle.endpoints)
    served = ["/healthz"] + [p for p in POST_PATHS if p.lstrip("/") in endpoints]
    static = static_files()

    async def healthz(request):
        model = bundle.manifest["model"]
        return json_response(200, {"status": "ok", "model": model.get("class"), "endpoints": served,
                                   "input_shape": list(bundle.input_shape), "latent_dim": bundle.latent_dim,
                                   "num_classes": bundle.num_classes, "likelihood": model.get("likelihood"),
                                   "explorer": bundle.explorer is not None})

    async def explorer_json(request):
        if bundle.explorer is None:
            return json_response(404, {"error": "this bundle has no explorer data: export it with "
                                                "`kvae export RUN_DIR --explorer-examples 500`"})
        return json_response(200, bundle.explorer)

    def asset(file):
        with open(file, "rb") as f:
            content = f.read()
        kind = STATIC_TYPES[os.path.splitext(file)[1]]

        async def serve(request):
            return Response(content, 200, {"Cache-Control": "no-cache"}, media_type=kind)

        return serve

    async def metrics(request):
        body, kind = service.metrics.exposition()
        return Response(body, 200, media_type=kind)

    def post(path):
        async def handler(request):
            return await service.answer_post(path, request.scope, request.receive)

        return handler

    routes = [Route("/healthz", healthz, methods=["GET"]), Route("/explorer.json", explorer_json, methods=["GET"]),
              Route("/metrics", metrics, methods=["GET"])]
    routes += [Route(path, asset(file), methods=["GET"]) for path, file in static.items()]
    routes += [Route(path, post(path), methods=["POST"]) for path in served[1:]]
    routes += v2.routes(service)

    async def not_found(request, exc):
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            return json_response(405, {"error": f"{request.method} is not allowed on {request.url.path[:200]}; "
                                                f"use {allowed}"}, {"Allow": allowed})
        return json_response(exc.status_code, {"error": f"unknown path {request.url.path[:200]}; served: "
                                                        f"{', '.join(served)}"})

    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found})
    app.state.service = service
    return FastPosts(app, service, served[1:])


class FastPosts:
    """The Starlette ``app`` with the JSON API's POSTs and the v2 infer requests answered first, as raw
    ASGI: the path looked up (a dict, or split into the v2 route's segments), the body read from
    ``receive``, the answer sent; no Request object, middleware stack or route matching (the same
    answers, message for message: tests/export/test_serving_stack.py).  Everything else, other
    methods on those paths included, is Starlette's.  ``Service.answer`` already turns every error
    of these requests into its answer, which is what the skipped middleware did."""

    def __init__(self, app, service, paths):
        self.app, self.service, self.state = app, service, app.state
        self.paths = frozenset(paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            if path in self.paths:
                answer = await self.service.answer_post(path, scope, receive)
                await answer(scope, receive, send)
                return
            model = v2.infer_path(path) if path.startswith("/v2/models/") else None
            if model is not None:
                answer = await v2.answer_infer(self.service, *model, scope, receive)
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app_from_env():
    """The app of a ``kvae-serve --workers N`` worker: options from ``KVAE_SERVE_OPTIONS`` (JSON), each
    worker loading the bundle and creating its own sessions."""
    from .protocol import GuardedHttpToolsProtocol
    from .server import listen_alone, read_key

    options = json.loads(os.environ["KVAE_SERVE_OPTIONS"])
    key_file, threads, spread = options.pop("key_file"), options.pop("threads"), options.pop("listen_alone")
    GuardedHttpToolsProtocol.read_timeout = options["read_timeout"]
    bundle = Bundle(options.pop("bundle"), key=None if key_file is None else read_key(key_file), threads=threads,
                    spinning=False)
    app = create_app(bundle, **options)
    if spread is not None:  # last: the worker accepts connections once it can answer them
        listen_alone(*spread)
    return app
