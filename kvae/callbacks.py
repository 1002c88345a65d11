"""Callbacks that keep a run's work: checkpoints that never hold a diverged state, and resume.

:class:`SafeBackupAndRestore` is ``keras.callbacks.BackupAndRestore`` (weights, optimizer state and
the epoch, saved every ``save_freq`` steps, double-buffered so a kill during a write leaves the
previous checkpoint) with three changes:

* a non-finite loss stops training and is *not* checkpointed; the last good checkpoint is kept
  (not deleted at the end of training) and :attr:`diverged` says at which step it happened;
* a checkpoint that cannot be restored raises :class:`kvae.errors.RunError` naming the directory;
* :attr:`resumed_step` is the optimizer step training resumed from (0 for a fresh run).

On resume the interrupted epoch restarts from its first batch with the restored weights,
optimizer state and step counter (so the noise stream continues): at most ``save_freq`` steps of
work are redone, none is lost.
"""
import math
import os

import keras
import numpy as np

from .errors import RunError


def _finite(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    def __init__(self, backup_dir, save_freq="epoch"):
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=True, delete_checkpoint=True)
        self.diverged = None
        self.resumed_step = 0

    def on_train_begin(self, logs=None):
        had_checkpoint = os.path.exists(self._weights_path)
        try:
            super().on_train_begin(logs)
        except Exception as err:
            msg = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise RunError(f"the checkpoint in {self.backup_dir} is corrupt or does not fit this model "
                           f"({type(err).__name__}: {msg}); delete that directory to start over") from None
        if had_checkpoint and self.model.optimizer is not None:
            self.resumed_step = int(self.model.optimizer.iterations.numpy())
            print(f"resumed from the checkpoint in {self.backup_dir} at step {self.resumed_step}", flush=True)

    def _check(self, logs, where):
        loss = (logs or {}).get("loss")
        if _finite(loss):
            return True
        step = int(self.model.optimizer.iterations.numpy()) if self.model.optimizer is not None else -1
        self.diverged = {"where": where, "step": step, "loss": float(loss)}
        self.model.stop_training = True
        return False

    def _save_model(self):
        """Checkpoint only finite weights: a step can leave huge-but-finite or NaN weights whose loss
        is only seen at the next step."""
        if any(not np.all(np.isfinite(w)) for w in self.model.get_weights()):
            step = int(self.model.optimizer.iterations.numpy())
            self.diverged = {"where": "weights", "step": step, "loss": float("nan")}
            self.model.stop_training = True
            return
        super()._save_model()

    def on_train_batch_end(self, batch, logs=None):
        if self._check(logs, f"batch {batch}"):
            super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged is None and self._check(logs, f"epoch {epoch + 1}"):
            super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        if self.diverged is None:
            super().on_train_end(logs)
