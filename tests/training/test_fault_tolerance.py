"""A run that dies keeps its work: kill and resume, divergence, bad data and corrupt files."""
import json
import re
import os
import signal
import subprocess
import sys

import keras
import numpy as np

from kvae.cli import main as cli

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers"))
from waiting import wait_for  # noqa: E402

TRAIN = [sys.executable, "-m", "kvae.cli", "train", "--model", "vae", "--dataset", "digits", "--hidden", "64",
         "--latent-dim", "4", "--quiet"]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def _weights(path):
    return keras.models.load_model(path).get_weights()


def _epoch(metadata):
    """The epoch in Keras' checkpoint metadata, 0 while it is absent or half written (Keras writes it in place)."""
    try:
        with open(metadata) as f:
            return json.load(f).get("epoch", 0)
    except (OSError, ValueError):
        return 0


def _checkpoint_steps(steps_per_epoch, per_call, every, epochs):
    """The optimizer steps at which checkpoints are written, by the documented rule."""
    saved, last = [], 0
    for epoch in range(epochs):
        for end in list(range(per_call, steps_per_epoch, per_call)) + [steps_per_epoch]:
            step = epoch * steps_per_epoch + end
            if step - last >= every:
                saved.append(step)
                last = step
    return saved


def _digits_vae(steps_per_execution):
    import kvae
    from kvae.data import datasets as data

    x, _ = data.load("digits", "train").arrays()
    keras.utils.set_random_seed(0)  # the same initial weights for every model built
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), seed=0)
    model.compile(optimizer="adam", steps_per_execution=steps_per_execution)
    return model, x[:1000]  # 10 steps of 100 per epoch


def test_checkpoints_follow_the_optimizer_step_under_several_steps_per_call(tmp_path):
    from kvae.training.callbacks import SafeBackupAndRestore

    class Recording(SafeBackupAndRestore):
        def _save_model(self):
            saved.append(int(self.model.optimizer.iterations.numpy()))
            super()._save_model()

    saved = []
    model, x = _digits_vae(steps_per_execution=3)
    model.fit(x, batch_size=100, epochs=2, verbose=0, callbacks=[Recording(str(tmp_path / "b"), save_freq=4)])
    # calls end at steps 3, 6, 9, 10 of each epoch; Keras' batch count would miss a step per epoch
    assert saved == _checkpoint_steps(steps_per_epoch=10, per_call=3, every=4, epochs=2) == [6, 10, 16, 20]


def test_resume_with_more_steps_per_call_than_the_checkpoint_had_equals_uninterrupted(tmp_path):
    """Checkpoint at step 6 of a one-step-per-call run; resumed at four per call, the six applied
    batches are read (four, then two and a call of four), and the run ends as an uninterrupted one."""
    from kvae.training.callbacks import SafeBackupAndRestore

    reference, x = _digits_vae(steps_per_execution=1)
    reference.fit(x, batch_size=100, epochs=2, verbose=0)

    class Crash(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 7:
                raise RuntimeError("crash")

    first, _ = _digits_vae(steps_per_execution=1)
    try:
        first.fit(x, batch_size=100, epochs=2, verbose=0,
                  callbacks=[SafeBackupAndRestore(str(tmp_path / "b"), save_freq=3), Crash()])
    except RuntimeError:
        pass
    resumed, _ = _digits_vae(steps_per_execution=4)
    backup = SafeBackupAndRestore(str(tmp_path / "b"), save_freq=3)
    resumed.fit(x, batch_size=100, epochs=2, verbose=0, callbacks=[backup])
    assert backup.resumed_step == 6
    assert int(resumed.optimizer.iterations.numpy()) == 20
    for w, r in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(w, r, atol=1e-6, rtol=0)


def test_sigkill_then_rerun_resumes_from_the_checkpoint_and_never_truncates_the_model(tmp_path):
    run = str(tmp_path / "run")
    model_path = os.path.join(run, "model.keras")
    assert cli.main(TRAIN[3:] + ["--epochs", "1", "--out", run]) == 0  # an earlier, good model file
    earlier = open(model_path, "rb").read()
    cmd = TRAIN + ["--epochs", "60", "--checkpoint-every", "5", "--out", run]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV)
    metadata = os.path.join(run, "backup", "training_metadata.json")
    try:
        wait_for(lambda: _epoch(metadata) >= 2, "a checkpoint after epoch 2", process=proc)
    except AssertionError:
        proc.kill()
        raise
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert open(model_path, "rb").read() == earlier  # the earlier model file is intact
    _weights(model_path)
    second = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    line = [l for l in second.stdout.splitlines() if l.startswith("resumed from the checkpoint")]
    assert line, second.stdout[-2000:]
    step = int(re.search(r"at step (\d+) \(epoch \d+, batch \d+\)$", line[0]).group(1))
    # at least two epochs of 13 steps were kept, and the checkpoint is one the default schedule writes:
    # at the end of the first call (10 steps, or the epoch's last 3) at or after every 5 steps
    assert step >= 2 * 13 and step in _checkpoint_steps(steps_per_epoch=13, per_call=10, every=5, epochs=60)
    history = json.load(open(os.path.join(run, "history.json")))
    assert history["resumed_from_step"] == step
    assert len(history["loss"]) == 60  # one entry per epoch, the epochs before the kill included
    assert history["steps"] == 60 * 13  # and no batch was applied twice
    _weights(model_path)
    # a finished run keeps its last checkpoint (the end of training), not the one before it
    assert sorted(os.listdir(os.path.join(run, "backup"))) == ["latest.weights.h5", "training_metadata.json"]
    assert json.load(open(os.path.join(run, "backup", "training_metadata.json")))["step"] == 60 * 13


def test_divergence_stops_with_a_clear_error_and_keeps_the_good_checkpoint(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert cli.main(TRAIN[3:] + ["--epochs", "1", "--out", run]) == 0
    import shutil

    shutil.rmtree(os.path.join(run, "backup"))  # a model.keras without the run's state: the next run starts afresh
    for name in ("history.json", "history.csv"):
        os.remove(os.path.join(run, name))
    model_path = os.path.join(run, "model.keras")
    earlier = open(model_path, "rb").read()
    code = cli.main(TRAIN[3:] + ["--epochs", "5", "--lr", "1e30", "--checkpoint-every", "1",
                                    "--steps-per-execution", "1", "--out", run])  # a checkpoint after step 1
    err = capsys.readouterr().err
    assert code == 1 and "diverged" in err and "last good checkpoint" in err and len(err.strip().splitlines()) == 1
    assert open(model_path, "rb").read() == earlier
    backup = os.path.join(run, "backup")
    assert os.path.isdir(backup)
    model = keras.models.load_model(model_path)
    model.load_weights(os.path.join(backup, "latest.weights.h5"))  # the kept checkpoint loads and is finite
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


def test_bad_data_file_is_rejected_before_training(tmp_path, capsys):
    np.savez(tmp_path / "binarized_mnist.npz", train=np.full((10, 784), 7, np.uint8),
             valid=np.zeros((5, 784), np.uint8))
    code = cli.main(["train", "--dataset", "binarized_mnist", "--data-dir", str(tmp_path), "--epochs", "1",
                     "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "outside [0, 1]" in err and "array 'train'" in err


def test_corrupt_checkpoint_is_named(tmp_path, capsys):
    run = tmp_path / "run"
    backup = run / "backup"
    backup.mkdir(parents=True)
    (backup / "latest.weights.h5").write_bytes(b"not an h5 file")
    code = cli.main(TRAIN[3:] + ["--epochs", "1", "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 1 and str(backup) in err and "corrupt" in err


def test_a_save_that_fails_half_way_leaves_the_old_model_byte_identical(tmp_path, monkeypatch):
    import kvae
    from kvae.training import runs

    path = str(tmp_path / "model.keras")
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=0)
    runs.atomic_save(model, path)
    before = open(path, "rb").read()

    def broken_save(self, filepath, *args, **kwargs):  # writes part of a file, then the disk "fails"
        with open(filepath, "wb") as f:
            f.write(before[: len(before) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(type(model), "save", broken_save)
    other = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=1)
    try:
        runs.atomic_save(other, path)
        raise AssertionError("the save should have failed")
    except OSError:
        pass
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["model.keras"]  # no partial temporary file left behind



def test_atomic_files_leave_the_old_file_or_the_new_one_and_no_temporary(tmp_path):
    import pytest

    from kvae.training import files

    path = str(tmp_path / "state.json")
    files.write_json(path, {"epoch": 1}, indent=2)
    assert open(path).read() == json.dumps({"epoch": 1}, indent=2)
    with pytest.raises(TypeError):  # not serialisable: raises before any file is touched
        files.write_json(path, {"epoch": object()})

    def dies_half_way(tmp):
        with open(tmp, "w") as f:
            f.write('{"epo')
        raise OSError("No space left on device")

    with pytest.raises(OSError):
        files.atomic_write(path, dies_half_way)
    assert json.load(open(path)) == {"epoch": 1}
    files.write_bytes(str(tmp_path / "b.bin"), b"\x00\x01")
    files.write_text(str(tmp_path / "c.txt"), "c")
    assert open(tmp_path / "b.bin", "rb").read() == b"\x00\x01" and open(tmp_path / "c.txt").read() == "c"
    assert sorted(os.listdir(tmp_path)) == ["b.bin", "c.txt", "state.json"]

def _checkpointed_vae(backup, seed):
    import kvae
    from kvae.training.callbacks import SafeBackupAndRestore

    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit((np.random.default_rng(seed).random((16, 8, 8, 1)) > 0.5).astype("float32"), epochs=1, batch_size=8, verbose=0)
    callback = SafeBackupAndRestore(str(backup))
    callback.set_model(model)
    callback.set_params({"steps": 2, "epochs": 1})
    return model, callback


def test_a_kill_while_a_checkpoint_is_written_leaves_a_complete_checkpoint(tmp_path, monkeypatch):
    """The checkpoint is written beside the last one and renamed over it: a write that dies half way
    (here: half a file, then an error, as a kill would leave it) leaves the last checkpoint readable,
    and the next run restores it.  (Keras' own callback writes in place; CI's kill test once caught a
    truncated HDF5 file that would not load.)"""
    backup = tmp_path / "backup"
    model, callback = _checkpointed_vae(backup, seed=0)
    callback._save_model()
    saved = model.get_weights()
    complete = open(backup / "latest.weights.h5", "rb").read()
    changed, callback = _checkpointed_vae(backup, seed=1)

    def dies_half_way(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(complete[: len(complete) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(type(changed), "save_weights", dies_half_way)
    try:
        callback._save_model()
        raise AssertionError("the save should have been interrupted")
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    assert open(backup / "latest.weights.h5", "rb").read() == complete
    fresh, callback = _checkpointed_vae(backup, seed=2)
    callback.on_train_begin()
    for a, b in zip(fresh.get_weights(), saved):
        np.testing.assert_array_equal(a, b)
    assert sorted(os.listdir(backup)) == ["latest.weights.h5", "training_metadata.json"]  # the partial file removed


def test_an_unreadable_last_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    backup = tmp_path / "backup"
    first, callback = _checkpointed_vae(backup, seed=0)
    callback._save_model()
    second, callback = _checkpointed_vae(backup, seed=1)
    callback._save_model()
    assert (backup / "latest.weights.h5.bkp").exists()
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    fresh, callback = _checkpointed_vae(backup, seed=2)
    callback.on_train_begin()
    for a, b in zip(fresh.get_weights(), first.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert "resuming from the one before it" in capsys.readouterr().out
    # killed between the save's two renames: only the previous checkpoint is there
    os.remove(backup / "latest.weights.h5")
    os.rename(backup / "training_metadata.json", backup / "training_metadata.json.bkp")
    second, callback = _checkpointed_vae(backup, seed=1)
    callback._save_model()
    os.replace(backup / "latest.weights.h5", backup / "latest.weights.h5.bkp")
    fresh, callback = _checkpointed_vae(backup, seed=3)
    callback.on_train_begin()
    for a, b in zip(fresh.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
