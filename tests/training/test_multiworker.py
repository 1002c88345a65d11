"""MultiWorkerMirroredStrategy with two real worker processes on 127.0.0.1, configured by TF_CONFIG."""
import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np

import kvae  # noqa: F401  (registers the classes for load_model)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


OPTIONS = ["--dataset", "digits", "--epochs", "2", "--limit", "400", "--batch-size", "50", "--hidden", "32",
           "--latent-dim", "4", "--quiet"]


def test_two_workers_train_together_and_agree(tmp_path):
    run = str(tmp_path / "run")
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        cmd = [sys.executable, "-m", "kvae.cli", "train", "--strategy", "multiworker", *OPTIONS, "--out", run]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    single = str(tmp_path / "single")  # one process, one device, the same global batches
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    procs.append(subprocess.Popen([sys.executable, "-m", "kvae.cli", "train", *OPTIONS, "--out", single],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    chief = os.path.join(run, "model.keras")
    other = os.path.join(run, ".worker_1", "model.keras")
    assert os.path.isfile(chief) and os.path.isfile(os.path.join(run, "samples.png"))
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["replicas"] == 2 and config["strategy"] == "multiworker"
    assert config["steps_per_execution"] == 1  # Keras' multi-step loop fails under multi-worker collectives
    w0, w1 = keras.models.load_model(chief).get_weights(), keras.models.load_model(other).get_weights()
    assert max(float(np.abs(a - b).max()) for a, b in zip(w0, w1)) < 1e-6
    history = json.load(open(os.path.join(run, "history.json")))
    assert len(history["loss"]) == 2 and np.all(np.isfinite(history["loss"]))
    # two workers that trained independently with the same seed would also agree with each other; they
    # must also agree with one process over the same global batches, step for step
    assert history["steps"] == 2 * 8  # 400 examples / global batch 50, 2 epochs
    reference = json.load(open(os.path.join(tmp_path / "single", "history.json")))
    assert reference["steps"] == history["steps"]
    ws = keras.models.load_model(os.path.join(tmp_path / "single", "model.keras")).get_weights()
    assert max(float(np.abs(a - b).max()) for a, b in zip(w0, ws)) < 1e-4
