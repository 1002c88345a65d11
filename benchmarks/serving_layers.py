"""Where a ``/decode`` request's CPU goes inside kvae-serve, layer by layer, in one process and without
sockets (so the kernel's share and the load client are left out): the same request through

* ``handler``: JSON parse -> ``Bundle.prepare`` -> ``Bundle.execute`` -> the server's JSON encoding;
* ``service``: ``Service.post`` (field checks, the batcher and runner) and the encoding;
* ``asgi_app``: the app kvae-serve runs, called as ASGI (body read within its limits, load shedding,
  metrics, the answer's headers);
* ``uvicorn_protocol``: the bytes of the request fed to kvae-serve's uvicorn protocol (httptools
  parsing, uvicorn's request cycle and task, the response head and the coalescing transport) on a
  transport that only counts the answers.

Each figure is the least CPU time per request over repeated blocks (the steady cost); the
differences are each layer's own cost.  Used by ``serving_load.py``; alone:

    PYTHONPATH=export python benchmarks/serving_layers.py BUNDLE_DIR
"""
import asyncio
import json
import sys
import time

import numpy as np


class _CountingTransport:
    """What uvicorn's protocol needs of a transport; every write (a whole answer: the coalescing
    transport sends a head with its body) sets ``answered``."""

    def __init__(self):
        self.answered, self.last = None, b""

    def write(self, data):
        self.last = data
        self.answered.set()

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def is_closing(self):
        return False

    def close(self):
        pass

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def can_write_eof(self):
        return True

    def write_eof(self):
        pass


async def _least_cpu_us(calls, repeats, block):
    """{name: CPU microseconds of one ``await call()``}: the least over ``repeats`` blocks of ``block``
    calls, the layers taking turns block by block (a busy machine's drift falls on all of them)."""
    for call in calls.values():
        for _ in range(block // 4):
            await call()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.process_time()
            for _ in range(block):
                await call()
            best[name] = min(best[name], (time.process_time() - start) / block * 1e6)
    return best


def layers_cpu_us(bundle_dir, latent=32, repeats=15, block=200):
    """CPU microseconds per /decode request (one code) at each layer, and each layer's own share."""
    from uvicorn.server import ServerState

    from kvae_serve import Bundle, codec
    from kvae_serve.app import create_app
    from kvae_serve.server import uvicorn_config

    bundle = Bundle(bundle_dir, threads=1, spinning=False)
    app = create_app(bundle)
    service = app.state.service
    body = json.dumps({"z": np.random.default_rng(0).normal(size=(1, latent)).round(4).tolist()}).encode()
    headers = [(b"host", b"x"), (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    request = (b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
               + str(len(body)).encode() + b"\r\n\r\n" + body)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/decode", "raw_path": b"/decode", "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        pass

    async def handler():
        data = json.loads(body)
        endpoint, inputs = bundle.inputs("decode", data["z"])
        return codec.dumps(bundle.execute(endpoint, bundle.prepare(endpoint, **inputs)))

    async def service_post():
        return codec.dumps(await service.post("/decode", json.loads(body)))

    async def asgi_app():
        await app(dict(scope), receive, send)

    async def measure():
        config = uvicorn_config(app, 30.0, 1024)
        config.load()
        protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={},
                                              _loop=asyncio.get_running_loop())
        transport = _CountingTransport()
        protocol.connection_made(transport)

        async def uvicorn_protocol():
            transport.answered = asyncio.Event()
            protocol.data_received(request)
            await transport.answered.wait()

        figures = await _least_cpu_us({"handler": handler, "service": service_post, "asgi_app": asgi_app,
                                       "uvicorn_protocol": uvicorn_protocol}, repeats, block)
        assert transport.last.startswith(b"HTTP/1.1 200 ") and transport.last.endswith(await handler())
        return figures

    try:
        import uvloop

        figures = uvloop.run(measure())
    except ImportError:
        figures = asyncio.run(measure())
    names = list(figures)
    own = {f"{name}_own": figures[name] - figures[before] for before, name in zip(names, names[1:])}
    return {k: round(v, 1) for k, v in {**figures, **own}.items()}


if __name__ == "__main__":
    print(json.dumps(layers_cpu_us(sys.argv[1]), indent=1))
