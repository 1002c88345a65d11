"""Callbacks that keep a run's work: checkpoints that never hold a diverged state, and resume.

:class:`SafeBackupAndRestore` is ``keras.callbacks.BackupAndRestore`` (weights, optimizer state and
the epoch, saved every ``save_freq`` steps, double-buffered so a kill during a write leaves the
previous checkpoint) with three changes:

* a non-finite loss stops training and is *not* checkpointed; the last good checkpoint is kept
  (not deleted at the end of training) and :attr:`diverged` says at which step it happened;
* a checkpoint that cannot be restored raises :class:`kvae.errors.RunError` naming the directory;
* :attr:`resumed_step` is the optimizer step training resumed from (0 for a fresh run).

On resume, training continues at the next batch not yet applied: weights, optimizer state
and step counter (so the noise stream) are restored, the resumed epoch sees the same batch order
as before (kvae data pipelines order each epoch by its number, :class:`DataEpoch`), and the
batches of that epoch that were already applied are read and skipped without a step.  The run
ends with the same step count and weights as an uninterrupted one.  Skipping needs a kvae model
and a known number of steps per epoch; otherwise the interrupted epoch restarts from its first
batch.
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


class DataEpoch(keras.callbacks.Callback):
    """Sets a kvae data pipeline's epoch counter (``dataset.kvae_epoch``) at the start of each epoch,
    so that epoch e's order depends on e only (see :meth:`kvae.data.Split.dataset`).  kvae models
    add it in ``fit`` when the training data carry the counter."""

    def __init__(self, variable):
        super().__init__()
        self.variable = variable

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(epoch)


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    def __init__(self, backup_dir, save_freq="epoch"):
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=True, delete_checkpoint=True)
        self.diverged = None
        self.resumed_step = 0
        self._skip = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch  # Keras records epoch 0 for a mid-epoch checkpoint of a resumed run

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
            epoch = int(getattr(self.model, "_initial_epoch", 0) or 0)
            steps = (self.params or {}).get("steps")
            skip = self.resumed_step - epoch * steps if steps else 0
            if steps and 0 < skip <= steps and hasattr(self.model, "skip_batches"):
                self.model.skip_batches(skip)
                self._skip = skip
                self._last_batch_seen = skip - 1
            print(f"resumed from the checkpoint in {self.backup_dir} at step {self.resumed_step} "
                  f"(epoch {epoch + 1}, batch {self._skip + 1})", flush=True)

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
        if batch < self._skip:  # a batch applied before the interruption, read and skipped
            return
        if self._check(logs, f"batch {batch}"):
            super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._skip = 0
        if self.diverged is None and self._check(logs, f"epoch {epoch + 1}"):
            super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        if self.diverged is None:
            super().on_train_end(logs)
