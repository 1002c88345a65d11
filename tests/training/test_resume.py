"""Resume equals no interruption: a run SIGKILLed at step K and rerun ends with the same optimizer
step count and the same weights as a run that was never interrupted, and the same record of its
best epoch (``keep_best``) under the same learning-rate decay."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

HELPER = os.path.join(os.path.dirname(os.path.dirname(__file__)), "helpers", "train_and_kill.py")


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
    with open(os.path.join(out, "best", "best.json")) as f:
        history["best_state"] = json.load(f)
    with open(os.path.join(out, "history.csv")) as f:
        history["rows"] = list(csv.DictReader(f))
    history["out"] = str(out)
    return model.get_weights(), history


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "run"
    result = _run(out)
    assert result.returncode == 0, result.stderr[-2000:]
    return _final(out)


@pytest.mark.parametrize("kill_at,checkpoint", [(6, 4), (26, 24)])  # mid-epoch 1 and mid-epoch 3
def test_resume_after_sigkill_equals_uninterrupted(tmp_path, uninterrupted, kill_at, checkpoint):
    """Two steps per call: the skipped batches of the resumed epoch are read two per call."""
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
    assert history["resumed_from_step"] == checkpoint
    assert history["best_state"] == pytest.approx(ref_history["best_state"])
    assert len(weights) == len(ref_weights)
    for w, r in zip(weights, ref_weights):
        np.testing.assert_allclose(w, r, atol=1e-6, rtol=0)


def test_the_run_keeps_its_best_epoch_under_the_decayed_rate(uninterrupted):
    import keras

    weights, history = uninterrupted
    model = keras.models.load_model(os.path.join(history["out"], "model.keras"))
    model.load_weights(os.path.join(history["out"], "best", "best.weights.h5"))
    for w, b in zip(weights, model.get_weights()):  # model.keras holds the best epoch's weights
        np.testing.assert_array_equal(w, b)
    rows = history["rows"]
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx([1e-3, 5e-4, 2.5e-4])
    val = [float(r["val_loss"]) for r in rows]
    assert history["best_epoch"] == int(np.argmin(val)) + 1
    assert history["best_val_loss"] == pytest.approx(min(val))
    assert history["best_state"]["best_epoch"] == int(np.argmin(val))


def test_resume_when_the_metadata_file_lags_the_weights(tmp_path, uninterrupted):
    """Keras writes a checkpoint's weights, then its metadata file: a kill between the two leaves the
    file behind the weights (here: the weights at step 16, epoch 2 batch 6; the file at the step-8
    checkpoint, epoch 1 batch 8).  The resumed run takes the epoch from the restored optimizer
    step, so it still applies 30 steps and ends with the uninterrupted run's weights."""
    out = tmp_path / "run"
    killed = _run(out, 18)
    assert killed.returncode == -9, killed.stderr[-2000:]
    with open(out / "backup" / "training_metadata.json", "w") as f:
        json.dump({"epoch": 0, "batch": 7}, f)
    resumed = _run(out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    weights, history = _final(out)
    assert history["steps"] == 30, f"resumed run applied {history['steps']} steps instead of 30"
    assert history["resumed_from_step"] == 16
    for w, r in zip(weights, uninterrupted[0]):
        np.testing.assert_allclose(w, r, atol=1e-6, rtol=0)
