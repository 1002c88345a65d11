"""Load test of the kvae_serve HTTP server on 127.0.0.1: C concurrent clients send R requests in
all (half POST /decode, half POST /sample), each on a new connection, and we count throughput,
p50/p99 latency, connection errors and 5xx answers.

Two configurations of the same standard-library server, measured in the same run:
``backlog=5`` (socketserver's default listen queue, what kvae_serve used before) and
``backlog=1024`` (kvae_serve's ``Server.request_queue_size`` today).  The server runs in its own
process; the clients are threads of this one.

    python benchmarks/serving_load.py [--clients 32] [--requests 5000] [--out benchmarks/serving_load.json]
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = """
import sys
from kvae_serve import server
server.Server.request_queue_size = int(sys.argv[2])
srv = server.make_server(sys.argv[1], port=0, max_samples=64)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


def _one(port, i, latent_dim):
    if i % 2:
        path, body = "/sample", {"n": 4, "seed": i}
    else:
        path, body = "/decode", {"z": np.random.default_rng(i).normal(size=(4, latent_dim)).round(4).tolist()}
    payload = json.dumps(body).encode()
    start = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", path, payload, {"Content-Type": "application/json"})
        status = conn.getresponse().status
        conn.close()
    except OSError as err:
        return time.perf_counter() - start, type(err).__name__
    return time.perf_counter() - start, status


def run(bundle, backlog, clients, requests, latent_dim):
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, "..", "export") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", SERVER, bundle, str(backlog)], stdout=subprocess.PIPE, env=env,
                            text=True)
    try:
        port = int(proc.stdout.readline())
        _one(port, 0, latent_dim)  # warm-up (ONNX sessions)
        _one(port, 1, latent_dim)
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(lambda i: _one(port, i, latent_dim), range(requests)))
        wall = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    latencies = np.array([r[0] for r in results])
    outcomes = [r[1] for r in results]
    return {"backlog": backlog, "clients": clients, "requests": requests, "seconds": wall,
            "requests_per_second": requests / wall, "p50_ms": float(np.median(latencies) * 1e3),
            "p99_ms": float(np.percentile(latencies, 99) * 1e3),
            "ok": sum(o == 200 for o in outcomes), "status_5xx": sum(isinstance(o, int) and o >= 500 for o in outcomes),
            "connection_errors": sum(isinstance(o, str) for o in outcomes),
            "other_status": sorted({o for o in outcomes if isinstance(o, int) and o != 200})}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--out")
    args = p.parse_args(argv)
    import kvae
    from kvae.export import bundle as export

    bundle = os.path.join(tempfile.mkdtemp(), "vae")
    model = kvae.VAE(input_shape=(28, 28, 1), latent_dim=50, hidden=(500, 500), seed=0)
    export.export(model, bundle, check=False)
    report = {"benchmark": "serving_load", "date": time.strftime("%Y-%m-%d"), "machine": {
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()},
        "model": "VAE 784-500-500-50, 4 images or codes per request",
        "results": [run(bundle, backlog, args.clients, args.requests, 50) for backlog in (5, 1024)]}
    emit(report, args.out)


if __name__ == "__main__":
    main()
