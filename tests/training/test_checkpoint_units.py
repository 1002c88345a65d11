"""SafeBackupAndRestore's pieces called directly on a small compiled model (no fit: these are the tests
benchmarks/mutation_testing.py runs on kvae/training/checkpoint.py; tests/training/test_fault_tolerance.py
and test_resume.py kill and resume real runs)."""
import errno
import json
import os

import keras
import numpy as np
import pytest

import kvae
from kvae.errors import RunError
from kvae.training import checkpoint as C


def _model():
    model = kvae.VAE(input_shape=(2, 2, 1), latent_dim=2, hidden=(4,), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.optimizer.build(model.trainable_variables)
    return model


def _callback(tmp_path, model, save_freq="epoch"):
    cb = C.SafeBackupAndRestore(str(tmp_path / "backup"), save_freq=save_freq)
    cb.set_model(model)
    return cb


def test_finite_reads_numbers_and_lets_non_numbers_through():
    assert C._finite(1.5) and C._finite("2") and C._finite(np.float32(3))
    assert not C._finite(float("nan")) and not C._finite(np.inf) and not C._finite("-inf")
    assert C._finite(None) and C._finite("loss") and C._finite([1])


def test_metrics_state_round_trip():
    model = _model()
    tracker = model.metrics[0]
    tracker.update_state(np.array([2.0, 4.0]))
    state = C.metrics_state(model)
    assert set(state) == {m.name for m in model.metrics}
    assert state[tracker.name] == [float(v.numpy()) for v in tracker.variables]
    json.dumps(state)  # plain lists and numbers
    other = _model()
    assert other.metrics[0].result().numpy() == 0
    restored = C.restore_metrics_state(other, state)
    assert restored == [m.name for m in other.metrics]
    np.testing.assert_allclose(other.metrics[0].result().numpy(), 3.0)
    # a missing name, a different number of variables or another shape is left alone
    other.metrics[0].reset_state()
    bad = dict(state)
    bad[tracker.name] = [[1.0, 2.0], 1.0]
    assert tracker.name not in C.restore_metrics_state(other, bad)
    bad[tracker.name] = [1.0]
    assert tracker.name not in C.restore_metrics_state(other, bad)
    assert C.restore_metrics_state(other, {}) == []
    assert other.metrics[0].result().numpy() == 0


def test_a_metric_that_refuses_the_assignment_starts_from_zero():
    model = _model()
    tracker = model.metrics[0]
    tracker.update_state(np.array([5.0]))
    state = C.metrics_state(model)
    variable = tracker.variables[0]
    original = type(variable).assign
    calls = []

    def assign(self, value, *a, **k):
        calls.append(np.asarray(value).copy())
        if len(calls) == 1:
            raise ValueError("a strategy's variable")
        return original(self, value, *a, **k)

    tracker.update_state(np.array([7.0]))
    type(variable).assign = assign
    try:
        restored = C.restore_metrics_state(model, {tracker.name: state[tracker.name]})
    finally:
        type(variable).assign = original
    assert tracker.name not in restored
    assert all(float(v.numpy()) == 0.0 for v in tracker.variables)


def test_check_stops_on_a_non_finite_loss(tmp_path):
    model = _model()
    cb = _callback(tmp_path, model)
    assert cb._check({"loss": 1.0}, "batch 0") and cb._check(None, "batch 1") and cb.diverged is None
    assert not model.stop_training
    assert not cb._check({"loss": float("nan")}, "batch 3")
    assert cb.diverged["where"] == "batch 3" and cb.diverged["step"] == 0 and np.isnan(cb.diverged["loss"])
    assert model.stop_training


def test_save_writes_the_pair_and_keeps_the_previous_one(tmp_path):
    model = _model()
    cb = _callback(tmp_path, model)
    backup = tmp_path / "backup"
    assert cb._tmp_paths() == (str(backup / "writing.weights.h5"), str(backup / "writing_metadata.json"))
    assert cb._metadata() == {}
    size = cb._checkpoint_bytes()
    variables = list(model.weights) + list(model.optimizer.variables)
    assert size == sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)
    model.optimizer.iterations.assign(7)
    cb._current_epoch, cb._last_batch_seen = 2, 5
    model.metrics[0].update_state(np.array([1.0]))
    cb._save_model()
    meta = cb._metadata()
    assert (meta["epoch"], meta["batch"], meta["step"]) == (2, 5, 7)
    assert meta["metrics"] == C.metrics_state(model)
    assert sorted(os.listdir(backup)) == ["latest.weights.h5", "training_metadata.json"]
    assert cb._checkpoint_bytes() == os.path.getsize(backup / "latest.weights.h5")
    first = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1.0 for w in first])
    model.optimizer.iterations.assign(9)
    cb._save_model()
    assert sorted(os.listdir(backup)) == ["latest.weights.h5", "latest.weights.h5.bkp", "training_metadata.json",
                                          "training_metadata.json.bkp"]
    assert cb._metadata()["step"] == 9
    assert json.load(open(backup / "training_metadata.json.bkp"))["step"] == 7
    # the last checkpoint unreadable: the one before it is restored and becomes the last
    (backup / "latest.weights.h5").write_bytes(b"not hdf5")
    open(backup / "writing.weights.h5", "w").close()  # a write a kill interrupted
    cb._restore()
    for got, want in zip(model.get_weights(), first):
        np.testing.assert_array_equal(got, want)
    assert sorted(os.listdir(backup)) == ["latest.weights.h5", "training_metadata.json"]
    assert cb._metadata()["step"] == 7
    cb.discard_previous()  # nothing left to remove
    cb._save_model()
    cb.discard_previous()
    assert sorted(os.listdir(backup)) == ["latest.weights.h5", "training_metadata.json"]


def test_restore_after_a_kill_between_the_renames(tmp_path):
    model = _model()
    cb = _callback(tmp_path, model)
    backup = tmp_path / "backup"
    cb._save_model()
    saved = [w.copy() for w in model.get_weights()]
    os.replace(backup / "latest.weights.h5", backup / "latest.weights.h5.bkp")
    os.replace(backup / "training_metadata.json", backup / "training_metadata.json.bkp")
    model.set_weights([w * 0 for w in saved])
    cb._restore()
    for got, want in zip(model.get_weights(), saved):
        np.testing.assert_array_equal(got, want)
    assert sorted(os.listdir(backup)) == ["latest.weights.h5", "training_metadata.json"]
    (backup / "latest.weights.h5").write_bytes(b"broken")
    with pytest.raises(Exception):
        cb._restore()  # no previous checkpoint to fall back on


def test_non_finite_weights_and_a_full_disk_are_not_checkpointed(tmp_path, monkeypatch):
    model = _model()
    cb = _callback(tmp_path, model)
    backup = tmp_path / "backup"
    cb._save_model()
    weights = model.get_weights()
    first_float = next(i for i, w in enumerate(weights) if w.dtype.kind == "f")
    weights[first_float] = weights[first_float] * np.nan
    model.set_weights(weights)
    model.optimizer.iterations.assign(4)
    cb._save_model()
    assert cb.diverged == {"where": "weights", "step": 4, "loss": cb.diverged["loss"]} and model.stop_training
    assert np.isnan(cb.diverged["loss"]) and cb._metadata()["step"] == 0

    def full(directory, needed, what):
        raise OSError(errno.ENOSPC, "no space", directory)

    weights[first_float] = np.zeros_like(weights[first_float])
    model.set_weights(weights)
    monkeypatch.setattr(C.files, "check_free_space", full)
    with pytest.raises(RunError, match="while writing a checkpoint at step 4; the previous checkpoint is kept in"):
        cb._save_model()
    assert sorted(os.listdir(backup)) == ["latest.weights.h5", "training_metadata.json"]


def test_should_save_counts_optimizer_steps(tmp_path):
    model = _model()
    assert not _callback(tmp_path, model)._should_save_on_batch(3)
    cb = _callback(tmp_path, model, save_freq=3)
    saves = []
    for step in range(1, 9):
        model.optimizer.iterations.assign(step)
        saves.append(cb._should_save_on_batch(step - 1))
    assert saves == [False, False, True, False, False, True, False, False]
    assert cb._last_batch_seen == 7 and cb._saved_step == 6
    model.optimizer.iterations.assign(10)  # two steps per call: 6 -> 10
    assert cb._should_save_on_batch(0) and cb._saved_step == 10


def test_metrics_are_restored_past_a_skipped_one():
    model = _model()
    names = [m.name for m in model.metrics]
    assert len(names) >= 3
    for m in model.metrics:
        m.update_state(np.array([2.0]))
    state = C.metrics_state(model)
    other = _model()
    first, second = names[0], names[1]
    missing = {k: v for k, v in state.items() if k != first}
    assert C.restore_metrics_state(other, missing) == names[1:]
    wrong_shape = dict(state, **{first: [[1.0, 2.0]] * len(state[first])})
    for m in other.metrics:
        m.reset_state()
    assert C.restore_metrics_state(other, wrong_shape) == names[1:]
    np.testing.assert_allclose(other.metrics[1].result().numpy(), model.metrics[1].result().numpy())
    variable = other.metrics[0].variables[0]
    original = type(variable).assign

    def assign(self, value, *a, **k):
        if self is variable and np.ndim(value) == 0 and float(value) != 0.0:
            raise RuntimeError("refused")
        return original(self, value, *a, **k)

    type(variable).assign = assign
    try:
        restored = C.restore_metrics_state(other, state)
    finally:
        type(variable).assign = original
    assert restored == names[1:] and second in restored


def test_without_an_optimizer_and_the_restore_messages(tmp_path, capsys):
    bare = kvae.VAE(input_shape=(2, 2, 1), latent_dim=2, hidden=(4,), seed=0)
    bare.optimizer = None  # a model compiled without one
    cb = _callback(tmp_path / "bare", bare)
    assert cb._checkpoint_bytes() == sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in bare.weights)
    assert not cb._check({"loss": float("inf")}, "epoch 1") and cb.diverged["step"] == -1
    cb._save_model()
    assert cb._metadata()["step"] is None
    model = _model()
    cb = _callback(tmp_path, model)
    backup = tmp_path / "backup"
    cb._save_model()
    model.set_weights([w + 1.0 if w.dtype.kind == "f" else w for w in model.get_weights()])
    cb._save_model()
    last = [w.copy() for w in model.get_weights()]
    model.set_weights([w * 0 if w.dtype.kind == "f" else w for w in last])
    cb._restore()  # both checkpoints readable: the last one
    for got, want in zip(model.get_weights(), last):
        np.testing.assert_array_equal(got, want)
    (backup / "latest.weights.h5").write_bytes(b"broken")
    capsys.readouterr()
    cb._restore()
    out = capsys.readouterr().out
    assert out.startswith(f"the last checkpoint in {backup} could not be read (")
    assert out.rstrip().endswith("); resuming from the one before it") and "(NoneType)" not in out


def test_a_full_disk_before_the_first_checkpoint_and_during_the_metadata(tmp_path, monkeypatch):
    model = _model()
    cb = _callback(tmp_path, model)
    monkeypatch.setattr(C.files, "free_bytes", lambda directory: 0)
    with pytest.raises(RunError, match="a checkpoint needs .* free.*no checkpoint was kept in"):
        cb._save_model()
    monkeypatch.undo()
    real = C.files.write_flushed
    calls = []

    def write_flushed(path, write):
        calls.append(path)
        if len(calls) == 2:  # the weights are written, the metadata fails
            raise OSError(errno.ENOSPC, "no space", path)
        return real(path, write)

    monkeypatch.setattr(C.files, "write_flushed", write_flushed)
    with pytest.raises(RunError, match="no checkpoint was kept"):
        cb._save_model()
    assert os.listdir(tmp_path / "backup") == []  # the written temporary weights were removed
