"""Resume equals no interruption: a run SIGKILLed at step K, or between the end of training and the
save of its model, and rerun ends with the same optimizer step count, the same weights and the same
history (every epoch once, the resumed epoch's training metrics included) as a run that was never
interrupted, and the same record of its best epoch (``keep_best``) under the same learning-rate decay.
A finished run rerun does nothing; with a larger ``--epochs`` it continues as an uninterrupted longer run."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

HELPER = os.path.join(os.path.dirname(os.path.dirname(__file__)), "helpers", "train_and_kill.py")


def _run(out, kill_at=None, phase=None, epochs=None):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    if kill_at:
        env["KILL_AT"] = str(kill_at)
    if phase:
        env["KILL_PHASE"] = phase
    if epochs:
        env["EPOCHS"] = str(epochs)
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
    _assert_same_history(history, ref_history)


def _assert_same_history(history, ref_history):
    """Every epoch once, in history.json and history.csv, with the uninterrupted run's metrics: the
    resumed epoch's training means restored from the checkpoint cover its batches before the kill."""
    metrics = [k for k, v in ref_history.items() if isinstance(v, list) and k not in ("rows",)]
    assert "loss" in metrics and "val_loss" in metrics
    for key in metrics:
        assert len(history[key]) == len(ref_history[key]) == 3, key
        np.testing.assert_allclose(history[key], ref_history[key], rtol=0, atol=1e-5, err_msg=key)
    assert [r["epoch"] for r in history["rows"]] == ["0", "1", "2"]
    for row, ref in zip(history["rows"], ref_history["rows"]):
        assert row.keys() == ref.keys()
        np.testing.assert_allclose([float(row[k]) for k in ref], [float(ref[k]) for k in ref], rtol=0, atol=1e-5)


@pytest.mark.parametrize("phase", ["model", pytest.param("figures", marks=pytest.mark.slow)])
def test_a_kill_after_training_before_the_model_is_saved_loses_nothing(tmp_path, uninterrupted, phase):
    """SIGKILL when training has ended and model.keras is about to be written (or is written and the
    figures are next): the checkpoint of the last step is still there, so the rerun applies no step
    (it resumes at step 30 of 30) and writes the uninterrupted run's model and history."""
    out = tmp_path / "run"
    killed = _run(out, phase=phase)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (out / "model.keras").exists() == (phase == "figures")
    assert (out / "backup" / "latest.weights.h5").exists()
    resumed = _run(out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "at step 30: all 3 epochs were trained" in resumed.stdout
    weights, history = _final(out)
    assert history["resumed_from_step"] == 30 and history["steps"] == 30
    assert history["finished"] is True and history["epochs_done"] == 3
    for w, r in zip(weights, uninterrupted[0]):
        np.testing.assert_allclose(w, r, atol=1e-6, rtol=0)
    _assert_same_history(history, uninterrupted[1])


def test_a_finished_run_rerun_does_nothing_and_continues_with_more_epochs(tmp_path, uninterrupted):
    out = tmp_path / "run"
    shutil.copytree(uninterrupted[1]["out"], out)
    before = {name: (out / name).read_bytes() for name in ("model.keras", "history.csv", "history.json")}
    again = _run(out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.strip().splitlines() == [f"{out} already finished 3 epochs: nothing to do "
                                                 "(pass --epochs above 3 to continue it)"]
    assert {name: (out / name).read_bytes() for name in before} == before
    # --epochs 4 continues from the last checkpoint: the same run as one of 4 epochs from the start
    longer = _run(out, epochs=4)
    assert longer.returncode == 0, longer.stderr[-2000:]
    reference = tmp_path / "four"
    assert _run(reference, epochs=4).returncode == 0
    weights, history = _final(out)
    ref_weights, ref_history = _final(reference)
    assert history["resumed_from_step"] == 30 and history["steps"] == ref_history["steps"] == 40
    assert len(history["rows"]) == len(ref_history["rows"]) == 4
    for key in ("loss", "val_loss", "learning_rate"):
        np.testing.assert_allclose(history[key], ref_history[key], rtol=0, atol=1e-5, err_msg=key)
    assert history["best_state"] == pytest.approx(ref_history["best_state"])
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
    step, so it still applies 30 steps and ends with the uninterrupted run's weights.  The file is
    written as kvae 0.1 wrote it (no step, no metrics state): such a checkpoint still resumes."""
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
    # without the metrics state, epoch 2's training means cover its batches after the resume only
    assert history["loss"][0] == pytest.approx(uninterrupted[1]["loss"][0], abs=1e-5)
    assert history["loss"][1] != pytest.approx(uninterrupted[1]["loss"][1], abs=1e-3)
    assert history["val_loss"] == pytest.approx(uninterrupted[1]["val_loss"], abs=1e-5)
