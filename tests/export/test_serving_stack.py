"""The ASGI stack at its boundary, on echo bundles (no TensorFlow): keep-alive with TCP_NODELAY, the
header cases that used to be 500s, a deadline for slow requests, load shedding with 503 +
Retry-After, /metrics, the KServe/Triton v2 protocol through the real ``tritonclient.http``, and
``--workers 2`` in a subprocess stopped by SIGTERM."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORT_DIR = os.path.join(HERE, "..", "export")
sys.path.insert(0, os.path.join(HERE, "helpers"))
from echo_bundle import write_echo_bundle  # noqa: E402
from serving import exchange  # noqa: E402
from kvae_serve import Bundle  # noqa: E402
from kvae_serve.server import make_server  # noqa: E402

D, SHAPE = 3, (2, 2, 1)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return Bundle(write_echo_bundle(str(tmp_path_factory.mktemp("echo") / "b"), num_classes=4))


@pytest.fixture(scope="module")
def server(bundle):
    import threading

    srv = make_server(bundle, port=0, max_samples=16, read_timeout=2.0, queue=4)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.server.started:
            break
        time.sleep(0.02)
    yield srv
    srv.shutdown()
    srv.server_close()


def _exchange(port, data, timeout=10.0):
    """Send raw bytes, read until the server closes; (status or None, answer bytes)."""
    return exchange(port, data, timeout)


def _head(path, length, extra=b""):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + length + b"\r\n" + extra + b"\r\n")


def test_keep_alive_reuses_one_connection_with_tcp_nodelay(server):
    port = server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    bodies = []
    for i in range(3):
        conn.request("POST", "/decode", json.dumps({"z": [[i, 1.0, 2.0]], "labels": [1]}),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        bodies.append(json.loads(response.read()))
        assert response.status == 200 and response.getheader("Connection") is None  # kept alive
        if i == 0:
            first = conn.sock
    assert conn.sock is first  # the same socket answered all three
    np.testing.assert_array_equal(bodies[2]["probs"], [[2.0, 1.0, 2.0, 1.0]])  # z, then the label
    sockets = [p.transport.get_extra_info("socket") for p in server.server.server_state.connections]
    assert sockets and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)
    conn.close()


@pytest.mark.parametrize("length, status", [
    (b"\xb2", 400),  # a latin-1 superscript two (httptools refuses it, as it refuses lengths over 2**64)
    (b"1" * 4301, 400), (b"99999999999999999999", 400), (b"99999999999", 413), (b"-5", 400), (b"+5", 400),
    (b"0x10", 400),
    (b"5, 5", 400), (b"\xd9\xa3", 400),  # an Arabic-Indic digit in UTF-8
])
def test_content_length_cases_are_client_errors(server, length, status):
    got, answer = _exchange(server.server_address[1], _head(b"/decode", length) + b'{"z": []}')
    assert got == status, answer[:300]


def test_no_length_or_chunked_is_411(server):
    port = server.server_address[1]
    assert _exchange(port, b"POST /decode HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0] == 411
    chunked = b"POST /decode HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    assert _exchange(port, chunked)[0] == 411


def test_open_connections_over_the_cap_get_503(bundle):
    import threading

    srv = make_server(bundle, port=0, max_connections=2)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        while not srv.server.started:
            time.sleep(0.02)
        port = srv.server_address[1]
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        time.sleep(0.2)  # both accepted
        status, _ = _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        for s in idle:
            s.close()
        assert status == 503
    finally:
        srv.shutdown()
        srv.server_close()


def test_short_runs_stay_on_the_loop_long_ones_get_a_thread():
    import asyncio
    import concurrent.futures
    import threading

    from kvae_serve.batching import Runner

    class Timed:
        row_seconds = {"short": 1e-5, "long": 1e-3}

        def execute(self, endpoint, arrays):
            return threading.current_thread().name

    runner = Runner(Timed(), concurrent.futures.ThreadPoolExecutor(1, "kvae-run"))

    async def names():
        rows = {"x": np.zeros((10, 1))}  # 10 rows: 0.1 ms and 10 ms estimated
        return await runner("short", rows), await runner("long", rows)

    assert asyncio.run(names()) == ("MainThread", "kvae-run_0")


def test_the_cli_defaults_and_every_command_line_in_the_docs_parse():
    import re

    from kvae_serve.server import parser

    assert parser().parse_args(["b"]).workers == len(os.sched_getaffinity(0))
    with open(os.path.join(HERE, "..", "docs", "export.md")) as f:
        lines = [line.split(" #")[0].split() for block in re.findall(r"```bash\n(.*?)```", f.read(), re.S)
                 for line in block.splitlines() if line.startswith("kvae-serve ")]
    assert len(lines) >= 3
    for words in lines:
        parser().parse_args(words[1:])


def test_uvicorn_runs_httptools_and_uvloop_without_access_log_or_proxy_headers(server):
    """The stack kvae-serve asks uvicorn for (never h11 or the asyncio loop when uvloop is installed),
    in one process and in the workers' config, and the loop the test server actually runs on."""
    import importlib.util

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from kvae_serve.server import uvicorn_config

    for config in (uvicorn_config(server.app, 30.0, 1024), uvicorn_config("kvae_serve.app:create_app_from_env",
                                                                          30.0, 1024, workers=2)):
        assert issubclass(config.http, HttpToolsProtocol)
        assert config.loop == ("uvloop" if importlib.util.find_spec("uvloop") else "asyncio")
        assert config.access_log is False and config.proxy_headers is False
    if importlib.util.find_spec("uvloop"):
        import uvloop

        loops = [s for s in server.server.servers]
        assert loops and all(isinstance(s.get_loop(), uvloop.Loop) for s in loops)


def test_a_request_in_progress_is_answered_through_sigterm(bundle):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=EXPORT_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "kvae_serve", bundle.path, "--port", str(port), "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_up(port, proc)
        body = json.dumps({"z": [[1.0, 2.0, 3.0]], "labels": [2]}).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(_head(b"/decode", str(len(body)).encode()) + body[:5])  # half the request
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)  # the server is shutting down: no new connections, this one is in progress
            s.sendall(body[5:])
            answer = s.makefile("rb").read()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'"probs": [[1.0, 2.0, 3.0, 2.0]], '
                                                                   b'"logits": [[-1.0, -2.0, -3.0, -2.0]]}')
    assert proc.returncode == 0 and "Traceback" not in err


def test_a_large_valid_request_is_answered(bundle):
    """A body of 400 KB (5000 rows) in one piece: only the request line and headers count toward 431."""
    import threading

    srv = make_server(bundle, port=0, max_samples=5000)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        while not srv.server.started:
            time.sleep(0.02)
        z = np.random.default_rng(0).normal(size=(5000, 3)).astype(np.float32)
        body = json.dumps({"z": z.tolist(), "labels": 1}).encode()
        assert len(body) > 300000
        status, answer = _exchange(srv.server_address[1], _head(b"/decode", str(len(body)).encode()) + body, 60)
    finally:
        srv.shutdown()
        srv.server_close()
    assert status == 200
    probs = np.asarray(json.loads(answer.split(b"\r\n\r\n", 1)[1])["probs"])
    np.testing.assert_array_equal(probs, np.concatenate([z, np.ones((5000, 1), np.float32)], 1))


def test_oversized_headers_get_431(server):
    status, answer = _exchange(server.server_address[1], _head(b"/decode", b"2", b"X-Big: " + b"a" * 70000 + b"\r\n"))
    assert status == 431 and b"over 65536 bytes" in answer


def test_an_oversized_body_is_refused_from_its_header_alone(server):
    limit = server.app.state.service.max_body
    status, answer = _exchange(server.server_address[1], _head(b"/decode", str(limit + 1).encode()))
    assert status == 413 and b"the largest request this server accepts" in answer  # no byte of the body sent
    assert b"connection: close" in answer.lower()


def test_a_slow_or_silent_client_gets_408_and_is_dropped(server):
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:  # headers trickling in
        s.sendall(b"POST /decode HTTP/1.1\r\n")
        answer = b""
        for _ in range(30):
            try:
                s.sendall(b"X: y\r\n")
            except OSError:
                break
            s.settimeout(0.3)
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                break
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    status, answer = _exchange(port, _head(b"/decode", b"100") + b'{"z": ')  # a body that never ends
    assert status == 408 and b"within" in answer
    status, _ = _exchange(port, b"")  # connected, silent
    assert status == 408


def test_a_half_closed_client_gets_its_answer(server):
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as s:
        body = json.dumps({"z": [[0.5, 0.5, 0.5]], "labels": [0]}).encode()
        s.sendall(_head(b"/decode", str(len(body)).encode()) + body)
        s.shutdown(socket.SHUT_WR)
        answer = s.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"probs": [[0.5, 0.5, 0.5, 0.0]]' in answer


def test_a_full_queue_sheds_with_503_and_retry_after(server):
    port = server.server_address[1]
    service = server.app.state.service
    body = json.dumps({"z": [[0.0, 0.0, 0.0]], "labels": [0]}).encode()
    holds = [service.shedder("/decode") for _ in range(4)]  # the queue (4) taken
    for hold in holds:
        hold.__enter__()
    try:
        status, answer = _exchange(port, _head(b"/decode", str(len(body)).encode()) + body)
    finally:
        for hold in holds:
            hold.__exit__(None, None, None)
    assert status == 503 and b"retry-after: 1" in answer.lower()
    assert _exchange(port, _head(b"/decode", str(len(body)).encode()) + body)[0] == 200  # free again
    other = json.dumps({"x": np.zeros((1, *SHAPE)).tolist(), "labels": [3]}).encode()
    assert _exchange(port, _head(b"/encode", str(len(other)).encode()) + other)[0] == 200  # queues are per endpoint
    metrics = _metrics(port)
    assert metrics[("kvae_rejected_total", (("endpoint", "/decode"), ("reason", "queue_full")))] == 1


def test_log_prob_cost_is_checked_before_anything_is_built(server):
    port = server.server_address[1]
    body = json.dumps({"x": np.zeros((16, *SHAPE)).tolist(), "k": 2000, "labels": 0}).encode()
    status, answer = _exchange(port, _head(b"/log_prob", str(len(body)).encode()) + body)
    assert status == 400 and b"16 examples x k=2000 = 32000 samples is over this server's limit of 25600" in answer
    body = json.dumps({"x": np.zeros((1, *SHAPE)).tolist(), "k": 5001, "labels": 0}).encode()
    status, answer = _exchange(port, _head(b"/log_prob", str(len(body)).encode()) + body)
    assert status == 400 and b"k=5001 is over the limit of 5000" in answer


def _metrics(port):
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_requests_latency_and_batch_rows(bundle):
    import threading

    srv = make_server(bundle, port=0, max_samples=16)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        port = srv.server_address[1]
        while not srv.server.started:
            time.sleep(0.02)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for rows in (1, 3, 5):
            conn.request("POST", "/sample", json.dumps({"n": rows, "seed": 0}))
            assert conn.getresponse().read() and True
        conn.request("POST", "/sample", json.dumps({"n": 99}))
        assert conn.getresponse().status == 400
        m = _metrics(port)
    finally:
        srv.shutdown()
        srv.server_close()
    assert m[("kvae_requests_total", (("endpoint", "/sample"), ("status", "200")))] == 3
    assert m[("kvae_requests_total", (("endpoint", "/sample"), ("status", "400")))] == 1
    assert m[("kvae_request_seconds_count", (("endpoint", "/sample"),))] == 4
    assert m[("kvae_batch_rows_sum", (("endpoint", "sample"),))] == 9  # rows run: 1 + 3 + 5
    assert m[("kvae_batch_rows_bucket", (("endpoint", "sample"), ("le", "2.0")))] == 1
    assert m[("kvae_rejected_total", (("endpoint", "/sample"), ("reason", "400")))] == 1


def test_v2_protocol_with_tritonclient(server, bundle):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(f"127.0.0.1:{server.server_address[1]}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("decode")
    meta = client.get_model_metadata("decode")
    assert meta["inputs"] == [{"name": "z", "datatype": "FP32", "shape": [-1, 3]},
                              {"name": "labels", "datatype": "INT32", "shape": [-1]}]
    assert [o["name"] for o in meta["outputs"]] == ["probs", "logits"]
    z = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 0], np.int32)
    for binary in (True, False):
        inputs = [triton.InferInput("z", list(z.shape), "FP32"), triton.InferInput("labels", [5], "INT32")]
        inputs[0].set_data_from_numpy(z, binary_data=binary)
        inputs[1].set_data_from_numpy(labels, binary_data=binary)
        outputs = [triton.InferRequestedOutput("logits", binary_data=binary)]
        result = client.infer("decode", inputs, outputs=outputs)
        want = bundle.decode(z, labels=labels)["logits"]
        np.testing.assert_array_equal(result.as_numpy("logits"), want)
        np.testing.assert_array_equal(want, -np.concatenate([z, labels[:, None]], 1))  # the echo, negated
    bad = triton.InferInput("z", [1, 2], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 2), np.float32))
    with pytest.raises(InferenceServerException, match=r"decode: z must have shape \[N, 3\] float32, got \[1, 2\]"):
        client.infer("decode", [bad, inputs[1]])
    x = triton.InferInput("x", [2, *SHAPE], "FP32")
    x.set_data_from_numpy(np.zeros((2, *SHAPE), np.float32))
    eps = triton.InferInput("eps", [2049, 2, D], "FP32")
    eps.set_data_from_numpy(np.zeros((2049, 2, D), np.float32))
    with pytest.raises(InferenceServerException, match=r"log_prob: K x N = 4098 samples is over the v2 limit of 4096"):
        client.infer("log_prob", [x, eps, inputs[1]])
    with pytest.raises(InferenceServerException, match="unknown model 'train'"):
        client.get_model_metadata("train")
    with pytest.raises(InferenceServerException, match="unknown model 'train'"):
        client.infer("train", inputs)


def _wait_up(port, proc):
    for _ in range(300):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read())
            time.sleep(0.1)
    raise AssertionError("kvae-serve did not start")


def _connections_per_worker(parent, port, clients):
    """Open ``clients`` keep-alive connections at once (one request answered on each), then count the
    connections each worker process of ``parent`` holds (Linux: /proc/net/tcp and /proc/PID/fd)."""
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(clients)]
    try:
        for c in conns:
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in conns:
            assert c.recv(65536).startswith(b"HTTP/1.1 200")
        with open("/proc/net/tcp") as f:  # the server's side of each: local port = port, ESTABLISHED
            inodes = {line.split()[9] for line in f.readlines()[1:]
                      if int(line.split()[1].split(":")[1], 16) == port and line.split()[3] == "01"}
        held = []
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) != parent:
                        continue
                links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            except (OSError, ValueError):
                continue
            count = sum(link[8:-1] in inodes for link in links if link.startswith("socket:["))
            if count:
                held.append(count)
        return sorted(held)
    finally:
        for c in conns:
            c.close()


def test_two_workers_serve_count_together_and_stop_on_sigterm(bundle):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=EXPORT_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "kvae_serve", bundle.path, "--port", str(port), "--workers", "2",
                             "--max-batch", "8"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_up(port, proc)
        for i in range(20):  # a new connection each: the kernel spreads them over the workers
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", "/decode", json.dumps({"z": [[i, 0, 0]], "labels": [0]}))
            assert json.loads(conn.getresponse().read())["probs"] == [[i, 0, 0, 0]]
            conn.close()
        metrics = _metrics(port)
        assert metrics[("kvae_requests_total", (("endpoint", "/decode"), ("status", "200")))] == 20
        # both workers hold a share of 32 keep-alive clients, once the second worker is up too: a worker
        # opens its own SO_REUSEPORT socket only when its sessions are ready, and until then the kernel
        # gives every connection to the first (the full suite can keep the second loading for a while)
        deadline = time.monotonic() + 120
        held = _connections_per_worker(proc.pid, port, 32)
        while len(held) < 2 and time.monotonic() < deadline:
            time.sleep(1.0)
            held = _connections_per_worker(proc.pid, port, 32)
        assert len(held) == 2 and min(held) >= 4, f"connections per worker after 120 s: {held}"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and out.splitlines()[0].endswith(f":{port} (2 workers)")


def _plain(value):
    """``value`` with its arrays as nested lists: what the server used to pass to ``json.dumps``."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, list) else value


def test_the_json_codec_writes_the_bytes_json_dumps_writes():
    """orjson plus the spelling fixes equal json.dumps(tolist()) on every kind of float: random float32
    bit patterns (subnormals to 3e38), float64 ones, every decade, the 1e-5 and e-7 cases, NaN."""
    from kvae_serve.codec import dumps

    rng = np.random.default_rng(0)
    f32 = rng.integers(0, 2 ** 32, 300000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    f64 = rng.integers(0, 2 ** 64, 100000, dtype=np.uint64).view(np.float64)
    decades = rng.uniform(1, 10, 100000) * 10.0 ** rng.integers(-12, 20, 100000) * rng.choice([-1, 1], 100000)
    arrays = [f32[np.isfinite(f32)][:280000].reshape(-1, 7), f64[np.isfinite(f64)], decades,
              decades.astype(np.float32).reshape(100, 10, 100, 1),
              np.array([1e-05, 1.5e-05, -1.5e-05, 10.00001, 100000.00001, 9.99999e-5, 1e-4, 1e-7, -2.5e-9, 1e-10,
                        0.0, -0.0, 1e16, 1.5e16, 1e-45]),
              np.array([1.0, np.nan, np.inf]), np.array(2.5), np.zeros((0, 3)), np.arange(6).reshape(2, 3),
              np.array([True, False]), np.array([2 ** 63 + 5], np.uint64), np.array([1, -2], ">i4"),
              np.arange(12, dtype=np.float32).reshape(3, 4).T]
    for array in arrays:
        assert dumps(array) == json.dumps(array.tolist()).encode(), array[:5]
    payload = {"probs": f32[:9].reshape(3, 3), "shape": [3, 3], "k": 5, "note": "a, b: [c]",
               "outputs": [{"name": "x", "data": decades[:4]}, {"name": "y", "data": np.float32([1e-6])}], "e": {}}
    assert dumps(payload) == json.dumps(_plain(payload)).encode()


def test_decode_and_v2_answers_are_the_bytes_of_the_plain_json_encoding(server, bundle):
    """The server's answers, spelled as json.dumps of the outputs' tolist() (the answers before orjson)."""
    port = server.server_address[1]
    z = np.float32([[1.5e-05, -2.5e-07, 3.0], [0.1, 1e-30, 12345.678]])
    body = json.dumps({"z": z.tolist(), "labels": [1, 3]}).encode()
    status, answer = _exchange(port, _head(b"/decode", str(len(body)).encode()) + body)
    expected = bundle.decode(z, labels=[1, 3])
    assert status == 200 and answer.split(b"\r\n\r\n", 1)[1] == json.dumps(_plain(expected)).encode()
    v2_body = json.dumps({"inputs": [{"name": "z", "shape": [2, 3], "datatype": "FP32", "data": z.ravel().tolist()},
                                     {"name": "labels", "shape": [2], "datatype": "INT32", "data": [1, 3]}]}).encode()
    status, answer = _exchange(port, _head(b"/v2/models/decode/infer", str(len(v2_body)).encode()) + v2_body)
    outputs = [{"name": k, "datatype": "FP32", "shape": list(v.shape), "data": v.ravel().tolist()}
               for k, v in expected.items()]
    assert status == 200 and answer.split(b"\r\n\r\n", 1)[1] == json.dumps(
        {"model_name": "decode", "model_version": "1", "outputs": outputs}).encode()


def test_a_response_head_leaves_with_its_body_in_one_write():
    import asyncio

    from kvae_serve.protocol import CoalescingTransport

    class Recorder:
        def __init__(self):
            self.calls = []

        def write(self, data):
            self.calls.append(data)

        def close(self):
            self.calls.append("close")

        def get_extra_info(self, name):
            return name

    async def scenario():
        raw = Recorder()
        t = CoalescingTransport(raw, asyncio.get_running_loop())
        head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
        t.write(head)
        assert raw.calls == []  # held for its body
        t.write(b"{}")
        t.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # an interim answer goes at once
        t.write(head)
        await asyncio.sleep(0)  # a head without a body leaves on the loop's next turn
        await asyncio.sleep(0)
        t.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        t.close()  # and before a close
        return raw.calls, t.get_extra_info("socket")

    calls, extra = asyncio.run(scenario())
    assert calls == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", b"HTTP/1.1 100 Continue\r\n\r\n",
                     b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n", "close"]
    assert extra == "socket"  # the rest is the wrapped transport's


def test_requests_arriving_during_a_run_go_together_in_the_next_batch():
    """One stacked run at a time: what arrives meanwhile forms the next batch (up to max_batch rows,
    whole requests only), and every request gets its own rows back."""
    import asyncio

    from kvae_serve.batching import Batcher

    async def scenario():
        release, runs = asyncio.Event(), []

        async def run(endpoint, arrays):
            runs.append(arrays["x"][:, 0].tolist())
            if len(runs) == 1:
                await release.wait()  # the first run is slow: the others queue behind it
            return {"y": arrays["x"] * 2.0}

        batcher = Batcher("e", run, max_batch=4, max_wait_ms=0.0, observe=None)
        first = asyncio.ensure_future(batcher.submit({"x": np.full((1, 2), 0.0)}))
        await asyncio.sleep(0)
        sizes = [1, 1, 2, 1, 3, 1]
        rest = [asyncio.ensure_future(batcher.submit({"x": np.full((n, 2), float(i + 1))}))
                for i, n in enumerate(sizes)]
        await asyncio.sleep(0.01)
        assert runs == [[0.0]]  # nothing else ran while the first run was in progress
        release.set()
        answers = await asyncio.gather(first, *rest)
        return runs, answers

    runs, answers = asyncio.run(scenario())
    assert runs == [[0.0], [1.0, 2.0, 3.0, 3.0], [4.0, 5.0, 5.0, 5.0], [6.0]]
    for i, (n, answer) in enumerate(zip([1, 1, 1, 2, 1, 3, 1], answers)):
        np.testing.assert_array_equal(answer["y"], np.full((n, 2), 2.0 * i))


def _asgi(app, method, path, body, headers):
    """The ASGI messages ``app`` sends for one request (its body in one message)."""
    import asyncio

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_the_raw_asgi_posts_send_what_starlette_sends(server, bundle):
    """The JSON API's POSTs answered before Starlette (FastPosts, raw ASGI, the Answer's own headers):
    the same messages as through Starlette's routing, and the headers starlette's Response writes."""
    from starlette.responses import Response

    fast, routed = server.app, server.app.app
    z = np.float32([[0.5, -1.25, 3.0]])
    good = json.dumps({"z": z.tolist(), "labels": [2]}).encode()
    x = json.dumps({"x": np.ones((1, *SHAPE)).tolist(), "labels": [1], "seed": 3}).encode()
    cases = [("/decode", good, b"application/json", 200), ("/reconstruct", x, b"application/json", 200),
             ("/encode", json.dumps({"x": np.ones((1, *SHAPE)).tolist(), "labels": [1]}).encode(), b"", 200),
             ("/decode", b"{not json", b"application/json", 400), ("/decode", good, b"text/plain", 415),
             ("/decode", json.dumps({"z": np.zeros((17, D)).tolist()}).encode(), b"application/json", 400),
             ("/decode", json.dumps({"z": z.tolist(), "labels": [9]}).encode(), b"application/json", 400),
             ("/sample", b'{"n": 2, "seed": 1, "source": "nowhere"}', b"application/json", 400)]
    for path, body, ctype, status in cases:
        headers = [(b"host", b"x"), (b"content-length", str(len(body)).encode())]
        headers += [(b"content-type", ctype)] if ctype else []
        sent = _asgi(fast, "POST", path, body, headers)
        assert sent == _asgi(routed, "POST", path, body, headers), path
        start, answer = sent
        assert start["status"] == status, (path, answer)
        extra = {"Connection": "close"} if status >= 400 else None
        assert start["headers"] == Response(answer["body"], status, extra, media_type="application/json").raw_headers
    assert json.loads(_asgi(fast, "POST", "/decode", good, [(b"content-length", str(len(good)).encode())])[1]["body"]) \
        == _plain(bundle.decode(z, labels=[2]))
    shed = server.app.state.service.shedder("/decode")
    shed.active = shed.queue  # a full queue: 503 with Retry-After, then Connection: close
    try:
        start, answer = _asgi(fast, "POST", "/decode", good, [(b"content-length", str(len(good)).encode())])
    finally:
        shed.active = 0
    assert start["headers"] == Response(answer["body"], 503, {"Retry-After": "1", "Connection": "close"},
                                        media_type="application/json").raw_headers
    assert _asgi(fast, "GET", "/decode", b"", [])[0]["status"] == 405  # other methods: Starlette's


@pytest.mark.parametrize("change, status", [
    ({"shape": [10 ** 20, D]}, 400),  # beyond int64 (over the row limit): no OverflowError
    ({"shape": [1, 2 ** 32, 2 ** 32]}, 413),  # wraps to 0 in int64: no reshape error
    ({"datatype": ["FP32"]}, 400),  # unhashable
    ({"datatype": None}, 400),
    ({"parameters": [1]}, 400),
])
def test_malformed_v2_input_tensors_are_client_errors(server, change, status):
    """Each malformed input tensor is a 4xx through the raw-ASGI path and the v2 route alike, with the
    headers starlette's Response writes for an error answer (never a 500)."""
    from starlette.responses import Response

    item = {"name": "z", "shape": [1, D], "datatype": "FP32", "data": [0.0] * D, **change}
    body = json.dumps({"inputs": [item, {"name": "labels", "shape": [1], "datatype": "INT32", "data": [0]}]}).encode()
    headers = [(b"host", b"x"), (b"content-length", str(len(body)).encode())]
    sent = _asgi(server.app, "POST", "/v2/models/decode/infer", body, headers)
    assert sent == _asgi(server.app.app, "POST", "/v2/models/decode/infer", body, headers)
    assert sent[0]["status"] == status, sent[1]["body"]
    expected = Response(sent[1]["body"], status, {"Connection": "close"}, media_type="application/json")
    assert sent[0]["headers"] == expected.raw_headers


@pytest.mark.parametrize("request_change", [
    {"parameters": [1]}, {"parameters": "x"}, {"outputs": [{"name": ["probs"]}]},
    {"outputs": [{"name": "probs", "parameters": "x"}]}, {"outputs": [{"name": "nothing"}]}, {"outputs": "probs"},
])
def test_malformed_v2_request_parameters_and_outputs_are_400(server, request_change):
    """Request-level parameters and the requested outputs are checked before the session runs: 400, never 500."""
    inputs = [{"name": "z", "shape": [1, D], "datatype": "FP32", "data": [0.0] * D},
              {"name": "labels", "shape": [1], "datatype": "INT32", "data": [0]}]
    body = json.dumps({"inputs": inputs, **request_change}).encode()
    headers = [(b"host", b"x"), (b"content-length", str(len(body)).encode())]
    sent = _asgi(server.app, "POST", "/v2/models/decode/infer", body, headers)
    assert sent == _asgi(server.app.app, "POST", "/v2/models/decode/infer", body, headers)
    assert sent[0]["status"] == 400, sent[1]["body"]


def test_the_raw_asgi_v2_infer_sends_what_the_v2_routes_send(server, bundle):
    """v2 infer requests answered before Starlette: the same messages as through its routes, for
    JSON and binary tensors, both paths of a model, and the errors; other paths stay Starlette's."""
    from kvae_serve.v2 import infer_path

    fast, routed = server.app, server.app.app
    z = np.float32([[0.5, -1.25, 3.0], [1e-5, 2.0, -7.5]])
    inputs = [{"name": "z", "shape": [2, D], "datatype": "FP32", "data": z.ravel().tolist()},
              {"name": "labels", "shape": [2], "datatype": "INT32", "data": [0, 3]}]
    plain = json.dumps({"inputs": inputs, "id": "a"}).encode()
    head = json.dumps({"inputs": [{**inputs[0], "parameters": {"binary_data_size": z.nbytes}, "data": None},
                                  inputs[1]], "parameters": {"binary_data_output": True}}).encode()
    binary = head + z.tobytes()
    cases = [("/v2/models/decode/infer", plain, [], 200), ("/v2/models/decode/versions/1/infer", plain, [], 200),
             ("/v2/models/decode/infer", binary, [(b"inference-header-content-length", str(len(head)).encode())], 200),
             ("/v2/models/decode/versions/2/infer", plain, [], 404), ("/v2/models/nothing/infer", plain, [], 404),
             ("/v2/models/decode/infer", b"{oops", [], 400), ("/v2/models/decode/more/infer", plain, [], 404),
             ("/v2/models//infer", plain, [], 404)]
    for path, body, extra, status in cases:
        headers = [(b"host", b"x"), (b"content-length", str(len(body)).encode())] + extra
        sent = _asgi(fast, "POST", path, body, headers)
        assert sent == _asgi(routed, "POST", path, body, headers), path
        assert sent[0]["status"] == status, (path, sent[1])
    answer = json.loads(_asgi(fast, "POST", cases[0][0], plain, [(b"content-length", str(len(plain)).encode())])[1][
        "body"])
    expected = bundle.decode(z, labels=[0, 3])
    assert answer["id"] == "a" and {o["name"]: o["data"] for o in answer["outputs"]} == {
        k: v.ravel().tolist() for k, v in expected.items()}
    assert [infer_path(p) for p in ("/v2/models/m/infer", "/v2/models/m/versions/7/infer", "/v2/models/m",
                                    "/v2/models/m/versions//infer", "/v2/models/m/infer/")] == [
        ("m", "1"), ("m", "7"), None, None, None]
