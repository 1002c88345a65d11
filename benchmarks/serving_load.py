"""Load test of ``kvae-serve`` (Starlette on uvicorn) on 127.0.0.1 against the in-process handler limit,
measured in the same run on the same machine (ratios, not absolute times).

* handler limit: JSON parse -> ``Bundle.prepare`` -> ``Bundle.execute`` -> the server's JSON encoding
  (:mod:`kvae_serve.codec`) of one ``/decode`` request (batch 1) in this process, steady-state median
  over repeated blocks; the same with ``json.dumps`` of ``tolist()`` (the encoding before the codec)
  and each step's CPU time (where a request's time goes inside the handler);
* the server (``--workers`` = usable cores, its own process tree) under ``C`` concurrent clients
  (an asyncio client on raw sockets, cheap enough to leave the server most of the CPU):
  keep-alive and a new connection per request, 32 / 256 / 1024 clients, micro-batching off and on;
* each unbatched/batched pair measured back to back (a fresh server each), on the VAE bundle and on
  a wide one (784-2048-2048-32) whose one-row session run costs more than the HTTP work around it;
* one keep-alive client alone (the latency Nagle + delayed ACK would add without TCP_NODELAY);
* the peak RSS of each worker (``VmHWM``) after hostile requests and the largest allowed request of
  every endpoint;
* the load average (``os.getloadavg``, as ``uptime`` shows it) before and after: the 2 cores are
  shared, and a run under load says less than one with the trainings paused.

    PYTHONPATH=export python benchmarks/serving_load.py --seconds 8 --out benchmarks/serving_load.json
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
from serving_layers import layers_cpu_us  # noqa: E402

LATENT = 32


def _median_rate(one, seconds, block=200):
    """Calls of ``one()`` per second: the median over blocks of ``block`` calls, after a warm-up."""
    for _ in range(block):
        one()
    rates, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        for _ in range(block):
            one()
        rates.append(block / (time.perf_counter() - start))
    return float(np.median(rates))


def _cpu_us(one, repeats=9, block=300):
    """CPU microseconds of one call of ``one()``: the least over ``repeats`` blocks (the steady cost)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(block):
            one()
        best = min(best, (time.process_time() - start) / block)
    return best * 1e6


def handler_limit(bundle_dir, seconds):
    """Requests per second of the JSON handler's work for /decode batch 1, in process, one core (the
    server's encoding and json.dumps), and the CPU time of each step."""
    from kvae_serve import Bundle, codec

    bundle = Bundle(bundle_dir, threads=1, spinning=False)
    body = json.dumps({"z": np.random.default_rng(0).normal(size=(1, LATENT)).round(4).tolist()}).encode()

    def one(encode):
        data = json.loads(body)
        endpoint, inputs = bundle.inputs("decode", data["z"])
        return encode(bundle.execute(endpoint, bundle.prepare(endpoint, **inputs)))

    def checked(z):
        endpoint, inputs = bundle.inputs("decode", z)
        return bundle.prepare(endpoint, **inputs)

    plain = lambda out: json.dumps({k: v.tolist() for k, v in out.items()}).encode()  # noqa: E731
    data = json.loads(body)
    endpoint, inputs = bundle.inputs("decode", data["z"])
    arrays = bundle.prepare(endpoint, **inputs)
    out = bundle.execute(endpoint, arrays)
    steps = {"json_parse": _cpu_us(lambda: json.loads(body)),
             "checks_and_conversion": _cpu_us(lambda: checked(data["z"])),
             "session_run": _cpu_us(lambda: bundle.execute(endpoint, arrays)),
             "encode_answer_codec": _cpu_us(lambda: codec.dumps(out)),
             "encode_answer_json_dumps": _cpu_us(lambda: plain(out))}
    return (_median_rate(lambda: one(codec.dumps), seconds), _median_rate(lambda: one(plain), seconds / 2),
            {k: round(v, 1) for k, v in steps.items()})


def session_rows_us(bundle_dir):
    """CPU microseconds per row of one /decode session run of 1 and of 64 rows."""
    from kvae_serve import Bundle

    bundle = Bundle(bundle_dir, threads=1, spinning=False)
    return {f"{rows}_rows": round(_cpu_us(lambda: bundle.execute("decode", {"z": np.zeros((rows, LATENT),
                                                                        np.float32)}), 5, 20) / rows, 1)
            for rows in (1, 64)}


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


class _Connection(asyncio.Protocol):
    """One client connection driven by callbacks (no coroutine, task or stream per request, so the
    client takes little of the CPU it shares with the server): it sends a request, reads the answer's
    status line, ``Content-Length`` and body, records ``(seconds, status)`` and sends the next one,
    until ``deadline``, the server closes, or (without keep-alive) after one answer.  ``done`` gets
    the index of the next payload when the connection ends."""

    def __init__(self, payloads, index, keep_alive, deadline, results, done):
        self.payloads, self.index, self.keep_alive = payloads, index, keep_alive
        self.deadline, self.results, self.done = deadline, results, done
        self.transport, self.buffer, self.need, self.start = None, bytearray(), None, None

    def connection_made(self, transport):
        self.transport = transport
        self._send()

    def _send(self):
        if time.perf_counter() >= self.deadline:
            self.start = None
            self.transport.close()
            return
        self.buffer.clear()
        self.need, self.start = None, time.perf_counter()
        self.transport.write(self.payloads[self.index % len(self.payloads)])
        self.index += 1

    def data_received(self, data):
        self.buffer += data
        if self.need is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            length = int(head[at + 17:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            self.need, self.status = end + 4 + length, int(head[9:12])
            self.closing = b"\r\nconnection: close" in head
        if len(self.buffer) >= self.need:
            self.results.append((time.perf_counter() - self.start, self.status))
            if self.closing or not self.keep_alive:
                self.start = None
                self.transport.close()
            else:
                self._send()

    def connection_lost(self, exc):
        if self.start is not None:  # a request in flight: a connection error
            self.results.append((time.perf_counter() - self.start, type(exc).__name__ if exc else "ConnectionClosed"))
        if not self.done.done():
            self.done.set_result(self.index)


async def _client(port, payloads, keep_alive, deadline, results):
    """One client: connections one after the other (one for all its requests with keep-alive)."""
    loop = asyncio.get_running_loop()
    index = 0
    while time.perf_counter() < deadline:
        done = loop.create_future()
        start = time.perf_counter()
        try:
            transport, _ = await loop.create_connection(
                lambda: _Connection(payloads, index, keep_alive, deadline, results, done), "127.0.0.1", port)
        except OSError as err:
            results.append((time.perf_counter() - start, type(err).__name__))
            continue
        try:
            index = await asyncio.wait_for(done, deadline - time.perf_counter() + 60)
        except asyncio.TimeoutError:
            transport.abort()
            results.append((time.perf_counter() - start, "TimeoutError"))
            return


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

    start, client_cpu = time.perf_counter(), time.process_time()
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    wall, client_cpu = time.perf_counter() - start, time.process_time() - client_cpu
    server_cpu = server.cpu_seconds() - cpu
    ok = [r[0] for r in results if r[1] == 200]
    statuses = [r[1] for r in results]
    return {"clients": clients, "keep_alive": keep_alive, "seconds": wall, "requests": len(results),
            "ok": len(ok), "requests_per_second": len(ok) / wall,
            "p50_ms": float(np.median(ok) * 1e3) if ok else None, "p99_ms": float(np.percentile(ok, 99) * 1e3)
            if ok else None, "status_503": statuses.count(503),
            "status_5xx_other": sum(isinstance(s, int) and s >= 500 and s != 503 for s in statuses),
            "status_4xx": sum(isinstance(s, int) and 400 <= s < 500 for s in statuses),
            "connection_errors": sum(isinstance(s, str) for s in statuses),
            "server_cpu_ms_per_ok_request": server_cpu * 1e3 / max(len(ok), 1),
            "server_cores_used": server_cpu / wall, "client_cores_used": client_cpu / wall,
            "client_cpu_us_per_request": client_cpu * 1e6 / max(len(results), 1)}


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


def batching_pair(bundle, cores, clients, seconds):
    """Unbatched then micro-batched, a fresh server each, back to back: their two runs."""
    runs = []
    for config, options in (("unbatched", []), ("batched (--max-batch 64 --max-wait-ms 2)", BATCHED)):
        server = Server(bundle, cores, *options)
        try:
            runs.append({"config": config, **load(server, clients, True, seconds)})
        finally:
            server.stop()
    return runs


BATCHED = ["--max-batch", "64", "--max-wait-ms", "2"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--out")
    args = p.parse_args(argv)
    import kvae
    from kvae.export import bundle as export

    load_before = os.getloadavg()
    bundle = os.path.join(tempfile.mkdtemp(), "vae")
    export.export(kvae.VAE(input_shape=(28, 28, 1), latent_dim=LATENT, hidden=(500, 500), seed=0), bundle,
                  check=False)
    wide = os.path.join(tempfile.mkdtemp(), "wide")
    export.export(kvae.VAE(input_shape=(28, 28, 1), latent_dim=LATENT, hidden=(2048, 2048), seed=0), wide,
                  check=False)
    cores = len(os.sched_getaffinity(0))
    limit, limit_json_dumps, steps = handler_limit(bundle, args.seconds)
    rows = {"vae": session_rows_us(bundle), "wide": session_rows_us(wide)}
    layers = layers_cpu_us(bundle, LATENT)
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
    for clients in (32, 256, 1024):  # each pair back to back: the shared machine drifts less between them
        runs += batching_pair(bundle, cores, clients, args.seconds)
    wide_runs = batching_pair(wide, cores, 256, args.seconds)

    def find(config, clients, keep_alive=True, among=runs):
        return next(r for r in among if r["config"].startswith(config) and r["clients"] == clients
                    and r["keep_alive"] == keep_alive)

    ka32 = find("unbatched", 32)

    def batching_bound(session_rows, among):
        """What micro-batching can gain on the server's CPU per request if it only cuts the session's
        per-row cost (everything else stays per request): at most ``unbatched / (unbatched - session
        alone)`` (a free session), about ``unbatched / (unbatched - alone + in a run of 64)``."""
        unbatched = find("unbatched", 256, among=among)["server_cpu_ms_per_ok_request"] * 1e3
        alone, stacked = session_rows["1_rows"], session_rows["64_rows"]
        return {"unbatched_server_cpu_us_per_request": unbatched, "session_cpu_us_per_row_alone": alone,
                "session_cpu_us_per_row_in_64": stacked, "session_share_of_unbatched_request": alone / unbatched,
                "bound_batched_vs_unbatched_free_session": unbatched / (unbatched - alone),
                "estimate_batched_vs_unbatched_64_rows": unbatched / (unbatched - alone + stacked),
                "measured_batched_vs_unbatched_server_cpu": unbatched / (
                    find("batched", 256, among=among)["server_cpu_ms_per_ok_request"] * 1e3),
                "measured_batched_vs_unbatched_requests_per_second": find("batched", 256, among=among)[
                    "requests_per_second"] / find("unbatched", 256, among=among)["requests_per_second"]}

    from kvae_serve.server import uvicorn_config

    config = uvicorn_config("kvae_serve.app:create_app_from_env", 30.0, 1024, cores)
    report = {"benchmark": "serving_load", "date": time.strftime("%Y-%m-%d"),
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": cores,
                          "python": platform.python_version(),
                          "load_average_1_5_15_min": {"before": [round(x, 2) for x in load_before],
                                                      "after": [round(x, 2) for x in os.getloadavg()]},
                          "note": "the 2 cores were shared with two long training runs and the load client"},
              "model": f"VAE 784-500-500-{LATENT}, POST /decode with one code per request",
              "workers": cores, "handler_limit_per_core_per_second": limit,
              "handler_limit_with_json_dumps_per_core_per_second": limit_json_dumps,
              "handler_cpu_us_per_step": steps, "decode_session_cpu_us_per_row": rows,
              "server_cpu_us_per_request_by_layer_in_process": layers,
              "server_stack": {"loop": config.loop, "http": " < ".join(c.__name__ for c in config.http.__mro__[:2]),
                               "access_log": config.access_log, "proxy_headers": config.proxy_headers},
              "runs": runs,
              "wide_model": f"VAE 784-2048-2048-{LATENT} (its one-row decode costs more than the HTTP work)",
              "wide_runs": wide_runs,
              "largest_requests_statuses": statuses, "log_prob_peak_rss": log_prob_peak, "worker_peak_rss_mb": peaks,
              "sigterm_exit_code": code,
              "targets": {
                  # the headline: "the cores the server uses" read as its workers (one core each)
                  "keepalive_32_vs_half_handler_limit_x_cores": ka32["requests_per_second"] / (0.5 * limit * cores),
                  # the same with the cores the server's processes actually consumed (CPU time / wall time)
                  "keepalive_32_vs_half_handler_limit_x_server_cores_used": ka32["requests_per_second"]
                  / (0.5 * limit * ka32["server_cores_used"]),
                  "keepalive_32_server_cores_used": ka32["server_cores_used"],
                  "keepalive_32_client_cores_used": ka32["client_cores_used"],
                  "keepalive_32_client_cpu_us_per_request": ka32["client_cpu_us_per_request"],
                  "keepalive_32_p50_ms": ka32["p50_ms"],
                  "keepalive_32_p99_ms": ka32["p99_ms"],
                  "batched_vs_unbatched_256": find("batched", 256)["requests_per_second"]
                  / find("unbatched", 256)["requests_per_second"],
                  "batched_vs_unbatched_256_wide_model": find("batched", 256, among=wide_runs)["requests_per_second"]
                  / find("unbatched", 256, among=wide_runs)["requests_per_second"],
                  # the same from the server's CPU per answered request (what the cores could serve when
                  # the server has them): steadier than requests/s on a machine shared with other work
                  "batched_vs_unbatched_256_server_cpu": find("unbatched", 256)["server_cpu_ms_per_ok_request"]
                  / find("batched", 256)["server_cpu_ms_per_ok_request"],
                  "batched_vs_unbatched_256_wide_model_server_cpu":
                  find("unbatched", 256, among=wide_runs)["server_cpu_ms_per_ok_request"]
                  / find("batched", 256, among=wide_runs)["server_cpu_ms_per_ok_request"],
                  "batching_bound_256": batching_bound(rows["vae"], runs),
                  "batching_bound_256_wide_model": batching_bound(rows["wide"], wide_runs),
                  "worker_peak_rss_mb_max": max(peaks),
                  "log_prob_peak_increase_mb": log_prob_peak["increase_mb"]}}
    emit(report, args.out)


if __name__ == "__main__":
    main()
