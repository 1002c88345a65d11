"""Resume equals no interruption: a run SIGKILLed at step K and rerun ends with the same optimizer
step count and the same weights as a run that was never interrupted."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

HELPER = os.path.join(os.path.dirname(__file__), "helpers", "train_and_kill.py")


def _run(out, kill_at=None):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    if kill_at:
        env["KILL_AT"] = str(kill_at)
    return subprocess.run([sys.executable, HELPER, str(out)], env=env, capture_output=True, text=True, timeout=300)


def _final(out):
    import keras

    import kvae  # noqa: F401

    model = keras.models.load_model(os.path.join(out, "model.keras"))
    with open(os.path.join(out, "history.json")) as f:
        history = json.load(f)
    return model.get_weights(), history


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "run"
    result = _run(out)
    assert result.returncode == 0, result.stderr[-2000:]
    return _final(out)


@pytest.mark.parametrize("kill_at", [7, 23])  # mid-epoch 1 (checkpoint at 5), mid-epoch 3 (checkpoint at 20)
def test_resume_after_sigkill_equals_uninterrupted(tmp_path, uninterrupted, kill_at):
    out = tmp_path / "run"
    killed = _run(out, kill_at)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "model.keras").exists()
    resumed = _run(out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    weights, history = _final(out)
    ref_weights, ref_history = uninterrupted
    assert ref_history["steps"] == 30
    assert history["steps"] == 30, f"resumed run applied {history['steps']} steps instead of 30"
    assert history["resumed_from_step"] == (kill_at // 5) * 5
    assert len(weights) == len(ref_weights)
    for w, r in zip(weights, ref_weights):
        np.testing.assert_allclose(w, r, atol=1e-6, rtol=0)
