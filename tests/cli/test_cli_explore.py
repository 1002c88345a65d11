"""`kvae explore` end to end: a subprocess exports the pretrained VAE to a temporary bundle and
serves the explorer; the page, its data and an endpoint answer; Ctrl-C stops it cleanly."""
import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read()




def _address(proc, err):
    """The URL ``kvae explore`` prints ("explorer at URL"), read until it appears or the command ends."""
    lines = []
    for line in iter(proc.stdout.readline, ""):
        lines.append(line)
        if line.startswith("explorer at "):
            return line.split()[2]
    raise AssertionError(("kvae explore printed no address", "".join(lines), open(err.name).read()[-3000:]))

def _images(url, z):
    """What /images answers for the codes ``z`` (a list of lists): ``{"images", "shape"}``."""
    req = urllib.request.Request(url + "images", json.dumps({"z": z}).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _image_shape(url, latent_dim):
    """The shape /images answers for one all-zero code."""
    return _images(url, [[0.0] * latent_dim])["shape"]


def _interrupt(proc):
    """Ctrl-C, as a user stops kvae explore; fails the test if it does not stop."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("kvae explore did not stop on Ctrl-C")


def _stopped_cleanly(proc, err, tmp_path):
    assert proc.returncode == 0, open(err.name).read()[-3000:]
    assert not [p for p in os.listdir(tmp_path) if p.startswith("kvae-explore-")]  # the bundle is removed

def test_kvae_explore_serves_a_pretrained_model(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(tmp_path))
    # stderr to a file: a pipe nobody reads fills up (export logs) and blocks the child, Ctrl-C included
    err = open(tmp_path / "stderr.txt", "w+")
    # started with SIGINT ignored, as a background job of a non-interactive shell is (and as pytest's
    # children are when pytest itself runs that way): Ctrl-C must still stop it
    proc = subprocess.Popen([sys.executable, "-m", "kvae_cli", "explore", "--pretrained", "vae-binarized-mnist",
                             "--no-browser", "--port", "0"], stdout=subprocess.PIPE, stderr=err,
                            text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        url = _address(proc, err)
        status, page = _get(url)
        assert status == 200 and b"kvae explorer" in page
        health = json.loads(_get(url + "healthz")[1])
        assert health["latent_dim"] == 50 and "/images" in health["endpoints"]
        assert health["explorer"] == bool(os.environ.get("KVAE_DATA_DIR"))  # validation digits need the data
        if health["explorer"]:
            info = json.loads(_get(url + "explorer.json")[1])
            assert info["n"] == 500 and len(info["kl_per_dim"]) == 50
        assert _image_shape(url, 50) == [1, 28, 28, 1]
    finally:
        _interrupt(proc)
    _stopped_cleanly(proc, err, tmp_path)


def test_kvae_explore_serves_a_run_directory(tmp_path):
    from kvae.cli import main as cli

    run = str(tmp_path / "run")
    assert cli.main(["train", "--epochs", "1", "--hidden", "16", "--latent-dim", "3", "--out", run, "--quiet"]) == 0
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(tmp_path))
    err = open(tmp_path / "stderr.txt", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "kvae_cli", "explore", run, "--no-browser", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        url = _address(proc, err)
        health = json.loads(_get(url + "healthz")[1])
        assert health["latent_dim"] == 3 and health["explorer"] is True  # digits' validation split is bundled
        info = json.loads(_get(url + "explorer.json")[1])
        assert info["n"] == 180 and len(info["kl_per_dim"]) == 3  # all 180 validation digits (fewer than 500)
        assert _image_shape(url, 3) == [1, 8, 8, 1]
        z = [[0.0, 0.0, 0.0], [1.5, -1.0, 0.5]]
        answer = _images(url, z)
    finally:
        _interrupt(proc)
    _stopped_cleanly(proc, err, tmp_path)
    # the served images are the run's model's E[x|z] for those codes (the run's model, not another)
    import numpy as np

    from kvae.training.runs import load_run

    model, _ = load_run(run)
    want = model.decode(np.asarray(z, np.float32)).mean().numpy()
    assert answer["shape"] == [2, 8, 8, 1] and np.abs(want[0] - want[1]).max() > 0.05
    np.testing.assert_allclose(np.asarray(answer["images"]), want, atol=1e-5)
