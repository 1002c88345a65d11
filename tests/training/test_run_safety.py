"""A run's directory under faults: a full disk during a checkpoint write, two writers, and the
progress bar's count under several steps per call."""
import errno
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from kvae.cli import main as cli

TRAIN = ["train", "--model", "vae", "--dataset", "digits", "--hidden", "16", "--latent-dim", "2", "--quiet"]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def _no_space(path):
    return OSError(errno.ENOSPC, "No space left on device", path)


def test_a_full_disk_during_a_checkpoint_write_stops_with_one_line_and_keeps_the_previous_checkpoint(
        tmp_path, monkeypatch, capsys):
    """The second checkpoint write of a run fails with ENOSPC half way: one line naming the disk and
    the checkpoint directory, exit 1, the previous checkpoint (the first write's) and an earlier
    model.keras byte-identical, no temporary file left; the rerun resumes from that checkpoint."""
    run = tmp_path / "run"
    assert cli.main(TRAIN + ["--epochs", "1", "--out", str(run)]) == 0
    model_before = (run / "model.keras").read_bytes()
    backup = run / "backup"
    save_weights = keras.Model.save_weights
    written = []

    def fills_the_disk(self, filepath, *args, **kwargs):
        if str(filepath).startswith(str(backup)) and written:
            with open(filepath, "wb") as f:
                f.write(b"\x89HDF\r\n\x1a\n half")
            raise _no_space(filepath)
        save_weights(self, filepath, *args, **kwargs)
        if str(filepath).startswith(str(backup)):
            written.append(open(filepath, "rb").read())

    monkeypatch.setattr(keras.Model, "save_weights", fills_the_disk)
    code = cli.main(TRAIN + ["--epochs", "4", "--checkpoint-every", "13", "--out", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("kvae train: error: no space left on the disk ")
    assert f"(holding {backup})" in err[0] and "previous checkpoint is kept" in err[0]
    monkeypatch.undo()
    assert len(written) == 1 and (backup / "latest.weights.h5").read_bytes() == written[0]
    assert (run / "model.keras").read_bytes() == model_before
    assert not any(name.startswith("writing") for name in os.listdir(backup))
    model = keras.models.load_model(run / "model.keras")
    model.load_weights(backup / "latest.weights.h5")  # the kept checkpoint loads
    assert cli.main(TRAIN + ["--epochs", "4", "--checkpoint-every", "13", "--out", str(run)]) == 0
    assert "resumed from the checkpoint in" in capsys.readouterr().out


def test_too_little_free_space_refuses_the_checkpoint_before_writing(tmp_path, monkeypatch, capsys):
    """Less free space than the checkpoint needs: refused before h5py writes a byte (a write that fills
    the disk crashed h5py with a segmentation fault), one line with the sizes."""
    import shutil

    from kvae.training import files

    run = tmp_path / "run"
    writes = []
    real_usage = shutil.disk_usage
    monkeypatch.setattr(files.shutil, "disk_usage",
                        lambda path: real_usage(path)._replace(free=300 * 1024))
    monkeypatch.setattr(keras.Model, "save_weights", lambda self, path, *a, **k: writes.append(path))
    code = cli.main(TRAIN + ["--epochs", "2", "--checkpoint-every", "5", "--out", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert "no space left on the disk" in err[0] and "needs 1.0 MiB free, the disk has 300 KiB" in err[0]
    assert "no checkpoint was kept" in err[0] and writes == []
    assert not (run / "model.keras").exists() and os.listdir(run / "backup") == []


def test_a_full_disk_when_the_model_is_saved_keeps_the_checkpoint_and_the_rerun_finishes(tmp_path, monkeypatch, capsys):
    from kvae.training import runs

    run = tmp_path / "run"

    def fails(model, path):
        raise _no_space(path + ".tmp.keras")

    monkeypatch.setattr(runs, "atomic_save", fails)
    assert cli.main(TRAIN + ["--epochs", "2", "--out", str(run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kvae train: error: no space left on the disk "), err
    assert f"(holding {run}) while writing the trained model; the checkpoint in {run / 'backup'} is kept" in err[0]
    monkeypatch.undo()
    assert cli.main(TRAIN + ["--epochs", "2", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "at step 26: all 2 epochs were trained" in out and (run / "model.keras").is_file()


def test_the_free_space_rule(monkeypatch):
    import shutil

    from kvae.training import files

    here = os.path.dirname(__file__)
    assert os.path.ismount(files.mount_point(here))
    assert files.mount_point(os.path.join(here, "no", "such", "dir")) == files.mount_point(here)
    usage = shutil.disk_usage(here)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: usage._replace(free=5 * 2**20))
    files.check_free_space(here, 4 * 2**20, "x")  # 4 MiB + the 1 MiB margin fit in 5 MiB
    with pytest.raises(OSError) as info:
        files.check_free_space(here, 4 * 2**20 + 1, "a checkpoint")
    assert info.value.errno == errno.ENOSPC
    line = files.describe_write_error(info.value, here)
    assert line == (f"no space left on the disk {files.mount_point(here)} (holding {here}) "
                    "(a checkpoint needs 5.0 MiB free, the disk has 5.0 MiB)")


def _wait_for(predicate, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_two_trainings_into_one_directory_the_second_names_the_holder(tmp_path, capsys):
    from kvae.training.locks import RunLock

    run = tmp_path / "run"
    lock = run / "train.lock"
    first = subprocess.Popen([sys.executable, "-m", "kvae.cli", *TRAIN, "--epochs", "500", "--out", str(run)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        assert _wait_for(lambda: lock.exists() and f'"pid": {first.pid}' in lock.read_text()), "no lock"
        code = cli.main(TRAIN + ["--epochs", "1", "--out", str(run)])
        err = capsys.readouterr().err.strip().splitlines()
        assert first.poll() is None, "the first run ended before the second started"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert code == 1 and len(err) == 1, err
    import re
    import socket

    assert re.fullmatch(
        re.escape(f"kvae train: error: {run} is in use by another training run (pid {first.pid} on "
                  f"{socket.gethostname()} since ") + r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC" +
        re.escape(f": kvae train --model vae --dataset digits --hidden 16 --latent-dim 2 --quiet --epochs 500 "
                  f"--out {run}); wait for it to end or choose another --out"), err[0]), err[0]
    # the holder died (SIGKILL, no cleanup): its lock does not block
    with RunLock(str(run)):
        assert f'"pid": {os.getpid()}' in lock.read_text()


def test_the_lock_is_held_for_the_run_only(tmp_path):
    from kvae.errors import RunError
    from kvae.training.locks import RunLock

    holder = RunLock(str(tmp_path)).acquire()
    with pytest.raises(RunError, match=f"pid {os.getpid()} on "):
        RunLock(str(tmp_path)).acquire()
    holder.release()
    with RunLock(str(tmp_path)):
        pass


def test_the_progress_bar_counts_at_most_the_epochs_steps(monkeypatch):
    """13 steps per epoch at 10 per call: Keras' bar went to 20/13 (ETA -1s); kvae's stops at 13."""
    import kvae
    from keras.src.utils import progbar
    from kvae.data import datasets as data

    shown = []
    update = progbar.Progbar.update
    monkeypatch.setattr(progbar.Progbar, "update", lambda self, current, *a, **k: (
        shown.append((current, self.target)), update(self, current, *a, **k))[1])
    x, _ = data.load("digits", "train").arrays()
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=0)
    model.compile(optimizer="adam", steps_per_execution=10)
    model.fit(x[:1300], batch_size=100, epochs=1, verbose=1)
    assert shown and {t for _, t in shown} == {13}
    assert [c for c, _ in shown] == [10, 13, 13]  # the first call, the last (3 steps), the epoch's end
