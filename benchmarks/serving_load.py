"""Load test of ``kvae-serve`` (Starlette on uvicorn) on 127.0.0.1 against the in-process handler limit,
measured in the same run on the same machine (ratios, not absolute times).

* handler limit: JSON parse -> ``Bundle.prepare`` -> ``Bundle.execute`` -> JSON dump of one
  ``/decode`` request (batch 1) in this process, steady-state median over repeated blocks;
* the server (``--workers`` = usable cores, its own process tree) under ``C`` concurrent clients
  (an asyncio client on raw sockets, cheap enough to leave the server most of the CPU):
  keep-alive and a new connection per request, 32 / 256 / 1024 clients, micro-batching off and on;
* each unbatched/batched pair measured back to back (a fresh server each);
* one keep-alive client alone (the latency Nagle + delayed ACK would add without TCP_NODELAY);
* the peak RSS of each worker (``VmHWM``) after hostile requests and the largest allowed request of
  every endpoint.

    python benchmarks/serving_load.py [--seconds 8] [--out benchmarks/serving_load.json]
"""
import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "export"))
from _report import emit  # noqa: E402

LATENT = 32


def handler_limit(bundle_dir, seconds):
    """Requests per second of the JSON handler's work for /decode batch 1, in process, one core."""
    from kvae_serve import Bundle

    bundle = Bundle(bundle_dir, threads=1, spinning=False)
    body = json.dumps({"z": np.random.default_rng(0).normal(size=(1, LATENT)).round(4).tolist()}).encode()

    def one():
        data = json.loads(body)
        endpoint, inputs = bundle.inputs("decode", data["z"])
        out = bundle.execute(endpoint, bundle.prepare(endpoint, **inputs))
        return json.dumps({k: v.tolist() for k, v in out.items()}).encode()

    for _ in range(200):
        one()
    rates, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        for _ in range(200):
            one()
        rates.append(200 / (time.perf_counter() - start))
    return float(np.median(rates))


LOG_PROB_PEAK = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[2])
from kvae_serve import Bundle
def peak():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
b = Bundle(sys.argv[1], threads=1, spinning=False)
x = (np.random.default_rng(0).uniform(size=(256, 28, 28, 1)) > 0.5).astype(np.float32)
b.log_prob(x[:1], k=1, seed=0)
before = peak()
b.log_prob(x, k=100, seed=0)
b.log_prob(x[:5], k=5000, seed=0)
print(before, peak())
"""


def log_prob_peak_mb(bundle_dir):
    """Peak RSS of a fresh process before and after the largest /log_prob requests the default limits
    allow (256 images x k=100 and 5 images x k=5000, 25,600 samples each), MB."""
    out = subprocess.run([sys.executable, "-c", LOG_PROB_PEAK, bundle_dir, os.path.join(HERE, "..", "export")],
                         capture_output=True, text=True, check=True).stdout.split()
    return {"before_mb": float(out[0]), "after_mb": float(out[1]), "increase_mb": float(out[1]) - float(out[0])}


def _request(path, body):
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)


async def _read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status, b"connection: close" in head.lower()


async def _client(port, payloads, keep_alive, deadline, results):
    reader = writer = None
    i = 0
    while time.perf_counter() < deadline:
        payload = payloads[i % len(payloads)]
        i += 1
        start = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(payload)
            status, closing = await asyncio.wait_for(_read_response(reader), 60)
            if closing or not keep_alive:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as err:
            results.append((time.perf_counter() - start, type(err).__name__))
            if writer is not None:
                writer.close()
            writer = None
            continue
        results.append((time.perf_counter() - start, status))
    if writer is not None:
        writer.close()


def load(server, clients, keep_alive, seconds):
    """``clients`` concurrent clients sending /decode batch 1 for ``seconds``; the figures of the run
    (with the server's CPU time per answered request)."""
    port, cpu = server.port, server.cpu_seconds()
    rng = np.random.default_rng(1)
    payloads = [_request("/decode", json.dumps({"z": rng.normal(size=(1, LATENT)).round(4).tolist()}).encode())
                for _ in range(64)]
    results = []

    async def main():
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*[_client(port, payloads, keep_alive, deadline, results) for _ in range(clients)])

    start = time.perf_counter()
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    wall = time.perf_counter() - start
    ok = [r[0] for r in results if r[1] == 200]
    statuses = [r[1] for r in results]
    return {"clients": clients, "keep_alive": keep_alive, "seconds": wall, "requests": len(results),
            "ok": len(ok), "requests_per_second": len(ok) / wall,
            "p50_ms": float(np.median(ok) * 1e3) if ok else None, "p99_ms": float(np.percentile(ok, 99) * 1e3)
            if ok else None, "status_503": statuses.count(503),
            "status_5xx_other": sum(isinstance(s, int) and s >= 500 and s != 503 for s in statuses),
            "status_4xx": sum(isinstance(s, int) and 400 <= s < 500 for s in statuses),
            "connection_errors": sum(isinstance(s, str) for s in statuses),
            "server_cpu_ms_per_ok_request": (server.cpu_seconds() - cpu) * 1e3 / max(len(ok), 1)}


class Server:
    def __init__(self, bundle, workers, *options):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=os.path.join(HERE, "..", "export") + os.pathsep +
                   os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "kvae_serve", bundle, "--port", str(self.port),
                                      "--workers", str(workers), *options], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, text=True)
        for _ in range(600):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(100).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                time.sleep(0.1)
        time.sleep(0.5 * workers)  # every worker up

    def peak_rss_mb(self):
        """VmHWM (peak resident set) of every worker process, MB."""
        pids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        peaks = []
        for pid in pids or [str(self.proc.pid)]:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
        return peaks

    def cpu_seconds(self):
        """User + system CPU seconds of the server's processes so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        pids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        total = 0.0
        for pid in pids + [str(self.proc.pid)]:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks
        return total

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=60)
        return self.proc.returncode


def largest_requests(port):
    """The largest request every endpoint allows at the default limits, plus hostile bodies; statuses."""
    rng = np.random.default_rng(2)
    x = (rng.uniform(size=(256, 28, 28, 1)) > 0.5).astype(int).tolist()
    z = rng.normal(size=(256, LATENT)).round(4).tolist()
    bodies = [("/sample", {"n": 256, "seed": 0}), ("/decode", {"z": z}), ("/images", {"z": z, "seed": 0}),
              ("/encode", {"x": x}), ("/reconstruct", {"x": x, "seed": 0}),
              ("/log_prob", {"x": x, "k": 100, "seed": 0}), ("/log_prob", {"x": x[:5], "k": 5000, "seed": 0})]
    raw = [_request(path, json.dumps(body).encode()) for path, body in bodies]
    raw += [_request("/decode", b"[" * 100000), _request("/decode", b"1" * 6000000),
            b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 4301 + b"\r\n\r\n",
            b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n"]
    statuses = []
    for request in raw:
        with socket.create_connection(("127.0.0.1", port), timeout=300) as s:
            answer = b""
            try:
                s.sendall(request)
                s.shutdown(socket.SHUT_WR)
            except OSError:  # answered (413, 431) and closed before the whole request was sent
                pass
            try:
                while chunk := s.recv(1 << 20):
                    answer += chunk
            except ConnectionResetError:
                pass
        statuses.append(int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None)
    return statuses


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--out")
    args = p.parse_args(argv)
    import kvae
    from kvae.export import bundle as export

    bundle = os.path.join(tempfile.mkdtemp(), "vae")
    export.export(kvae.VAE(input_shape=(28, 28, 1), latent_dim=LATENT, hidden=(500, 500), seed=0), bundle,
                  check=False)
    cores = len(os.sched_getaffinity(0))
    limit = handler_limit(bundle, args.seconds)
    log_prob_peak = log_prob_peak_mb(bundle)
    runs = []
    server = Server(bundle, cores)
    try:
        runs.append({"config": "unbatched", **load(server, 1, True, args.seconds)})
        runs.append({"config": "unbatched", **load(server, 32, False, args.seconds)})
        statuses = largest_requests(server.port)
        peaks = server.peak_rss_mb()
    finally:
        code = server.stop()
    batched = ["--max-batch", "64", "--max-wait-ms", "2"]
    for clients in (32, 256, 1024):  # each pair back to back: the shared machine drifts less between them
        for config, options in (("unbatched", []), ("batched (--max-batch 64 --max-wait-ms 2)", batched)):
            server = Server(bundle, cores, *options)
            try:
                runs.append({"config": config, **load(server, clients, True, args.seconds)})
            finally:
                server.stop()

    def find(config, clients, keep_alive=True):
        return next(r for r in runs if r["config"].startswith(config) and r["clients"] == clients
                    and r["keep_alive"] == keep_alive)

    ka32 = find("unbatched", 32)
    report = {"benchmark": "serving_load", "date": time.strftime("%Y-%m-%d"),
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": cores,
                          "python": platform.python_version(),
                          "note": "the 2 cores were shared with two long training runs and the load client"},
              "model": f"VAE 784-500-500-{LATENT}, POST /decode with one code per request",
              "workers": cores, "handler_limit_per_core_per_second": limit, "runs": runs,
              "largest_requests_statuses": statuses, "log_prob_peak_rss": log_prob_peak, "worker_peak_rss_mb": peaks, "sigterm_exit_code": code,
              "targets": {
                  "keepalive_32_vs_half_handler_limit_x_cores": ka32["requests_per_second"] / (0.5 * limit * cores),
                  "keepalive_32_p99_ms": ka32["p99_ms"],
                  "batched_vs_unbatched_256": find("batched", 256)["requests_per_second"]
                  / find("unbatched", 256)["requests_per_second"],
                  "worker_peak_rss_mb_max": max(peaks),
                  "log_prob_peak_increase_mb": log_prob_peak["increase_mb"]}}
    emit(report, args.out)


if __name__ == "__main__":
    main()
