"""Checkpoints that resume exactly and survive kills and full disks.

:class:`SafeBackupAndRestore` is ``keras.callbacks.BackupAndRestore`` (weights, optimizer state and
the epoch, saved every ``save_freq`` steps) with these changes:

* a checkpoint is written to a temporary file and renamed over the last one (an atomic rename), so
  a kill at any moment leaves a complete checkpoint: the new one or the one before.  (Keras writes
  over the last checkpoint in place; a kill during that write left a truncated HDF5 file that
  would not load.)  The checkpoint before the last is kept (``latest.weights.h5.bkp``) and restored when
  the last one cannot be read;
* the metadata file also holds the optimizer step and the state of the model's metrics (the running
  means of the epoch so far), restored when training resumes mid-epoch, so the resumed epoch logs
  the uninterrupted run's training metrics.  A checkpoint without that state (written by kvae 0.1)
  resumes too, its epoch's metrics then averaging the batches after the resume only;
* a checkpoint is also written at the end of the last epoch (and of an epoch after which training
  stops), and none is deleted at the end of training: the caller keeps the last one until the
  trained model is on disk (:func:`kvae.training.runs.train` keeps it, so a larger ``--epochs``
  continues the run), :meth:`discard_previous` removes the one before it;
* before each write the free space is checked (a write that fills the disk crashed h5py here), and a
  write that fails with an ``OSError`` raises :class:`kvae.errors.RunError` naming the directory and
  its disk: the previous checkpoint stays as it was and no temporary file is left;
* a non-finite loss stops training and is *not* checkpointed; the last good checkpoint is kept
  and :attr:`diverged` says at which step it happened;
* a checkpoint that cannot be restored raises :class:`kvae.errors.RunError` naming the directory;
* :attr:`resumed_step` is the optimizer step training resumed from (0 for a fresh run);
* ``save_freq`` counts optimizer steps (Keras counts batch indices, which under
  ``steps_per_execution`` > 1 miss a step per epoch): under n steps per call a checkpoint is written
  at the end of the first call at or after every ``save_freq`` steps.

On resume, training continues at the next batch not yet applied: weights, optimizer state
and step counter (so the noise stream) are restored, the resumed epoch sees the same batch order
as before (kvae data pipelines order each epoch by its number, :class:`kvae.training.callbacks.DataEpoch`),
and the batches of that epoch that were already applied are read and skipped without a step.  The run
ends with the same step count and weights as an uninterrupted one (under n steps per call the
skipped batches are read n per call).  Skipping needs a kvae model
and a known number of steps per epoch; otherwise the interrupted epoch restarts from its first
batch.
"""
import json
import math
import os

import keras
import numpy as np

from kvae.errors import RunError
from kvae.training import files


def _finite(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


def metrics_state(model):
    """``{metric name: [its variables' values as lists]}`` of ``model.metrics``."""
    return {m.name: [np.asarray(v).tolist() for v in m.variables] for m in model.metrics}


def restore_metrics_state(model, state):
    """Assign :func:`metrics_state`'s values to the metrics of the same name and shape; returns their
    names.  A metric whose variables refuse the assignment (a distribution strategy's) starts from zero."""
    restored = []
    for m in model.metrics:
        values = state.get(m.name)
        if values is None or len(values) != len(m.variables):
            continue
        if any(np.shape(v) != tuple(var.shape) for v, var in zip(values, m.variables)):
            continue
        try:
            for var, value in zip(m.variables, values):
                var.assign(np.asarray(value, dtype=var.dtype))
        except (ValueError, RuntimeError, NotImplementedError):  # e.g. a sum-aggregated variable of a strategy
            for var in m.variables:
                var.assign(np.zeros(var.shape, var.dtype))
            continue
        restored.append(m.name)
    return restored


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` whose checkpoints survive kills, full disks and divergence (the
    module docstring lists the changes); ``backup_dir`` and ``save_freq`` ("epoch" or every N steps) as in Keras."""

    def __init__(self, backup_dir, save_freq="epoch"):
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=True, delete_checkpoint=False)
        self.diverged = None
        self.resumed_step = 0
        self._skip = 0
        self._saved_step = 0
        self._pending_metrics = None

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch  # Keras records epoch 0 for a mid-epoch checkpoint of a resumed run
        if self._pending_metrics is not None:  # Keras has just reset the metrics: the resumed epoch's means so far
            restore_metrics_state(self.model, self._pending_metrics)
            self._pending_metrics = None

    def _metadata(self):
        try:
            with open(self._training_metadata_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def _tmp_paths(self):
        return (os.path.join(self.backup_dir, "writing.weights.h5"),
                os.path.join(self.backup_dir, "writing_metadata.json"))

    def _promote_previous(self):
        """The checkpoint before the last (``.bkp``) becomes the last one."""
        files.replace(self._prev_weights_path, self._weights_path)
        if os.path.exists(self._prev_training_metadata_path):
            files.replace(self._prev_training_metadata_path, self._training_metadata_path)

    def _restore(self):
        """Load the last checkpoint; if it cannot be read, the one before it."""
        for tmp in self._tmp_paths():  # a write the kill interrupted
            files.remove_if_present(tmp)
        if not os.path.exists(self._weights_path) and os.path.exists(self._prev_weights_path):
            self._promote_previous()  # killed between the renames of a save: the previous one is the last
        try:
            self._load_model()
        except Exception as first:
            if not os.path.exists(self._prev_weights_path):
                raise first
            self._promote_previous()
            print(f"the last checkpoint in {self.backup_dir} could not be read "
                  f"({type(first).__name__}); resuming from the one before it", flush=True)
            self._load_model()

    def on_train_begin(self, logs=None):
        had_checkpoint = os.path.exists(self._weights_path) or os.path.exists(self._prev_weights_path)
        try:
            self._restore()
        except Exception as err:
            msg = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise RunError(f"the checkpoint in {self.backup_dir} is corrupt or does not fit this model "
                           f"({type(err).__name__}: {msg}); delete that directory to start over") from None
        if had_checkpoint and self.model.optimizer is not None:
            self.resumed_step = int(self.model.optimizer.iterations.numpy())
            epoch = int(getattr(self.model, "_initial_epoch", 0) or 0)
            steps = (self.params or {}).get("steps")
            if steps:
                # the epoch from the restored optimizer step, not from Keras' metadata file: Keras writes
                # the weights, then the metadata, so a kill between the two leaves the file an epoch
                # behind the weights (and the epoch's batches would be applied twice)
                epoch = self.resumed_step // steps
                self.model._initial_epoch = epoch
                self._current_epoch = epoch
            skip = self.resumed_step - epoch * steps if steps else 0
            if steps and 0 < skip <= steps and hasattr(self.model, "skip_batches"):
                self.model.skip_batches(skip)
                self._skip = skip
                self._last_batch_seen = skip - 1
                metadata = self._metadata()
                if metadata.get("step") == self.resumed_step and "metrics" in metadata:
                    self._pending_metrics = metadata["metrics"]
            epochs = (self.params or {}).get("epochs")
            if epochs is not None and epoch >= epochs and not self._skip:
                print(f"resumed from the checkpoint in {self.backup_dir} at step {self.resumed_step}: "
                      f"all {epochs} epochs were trained", flush=True)
            else:
                print(f"resumed from the checkpoint in {self.backup_dir} at step {self.resumed_step} "
                      f"(epoch {epoch + 1}, batch {self._skip + 1})", flush=True)
            if self._skip % self.model.steps_per_execution:
                print(f"(the checkpoint is not at a multiple of this run's {self.model.steps_per_execution} steps per "
                      f"call: Keras will say the input ran out of data at the end of epoch {epoch + 1}; the epoch "
                      f"ends there and training goes on)", flush=True)
        optimizer = self.model.optimizer
        self._saved_step = int(optimizer.iterations.numpy()) if optimizer is not None else 0

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
        os.makedirs(self.backup_dir, exist_ok=True)
        tmp_weights, tmp_meta = self._tmp_paths()
        step = int(self.model.optimizer.iterations.numpy()) if self.model.optimizer is not None else None
        metadata = json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen, "step": step,
                               "metrics": metrics_state(self.model)})
        kept = "the previous checkpoint is kept" if os.path.exists(self._weights_path) else "no checkpoint was kept"
        try:
            files.check_free_space(self.backup_dir, self._checkpoint_bytes(), "a checkpoint")
            files.write_flushed(tmp_weights, lambda path: self.model.save_weights(path, overwrite=True))
            files.write_flushed(tmp_meta, metadata)
        except OSError as err:
            for tmp in (tmp_weights, tmp_meta):
                files.remove_if_present(tmp)
            raise RunError(f"{files.describe_write_error(err, self.backup_dir)} while writing a checkpoint at step "
                           f"{step}; {kept} in {self.backup_dir}: free space and rerun the command to resume") from None
        # the complete new checkpoint exists; renames make it the last one and move the old pair to
        # .bkp, metadata first: whenever the last weights are missing (a kill after the second rename)
        # the .bkp pair is whole, and _restore takes it as the last checkpoint
        if os.path.exists(self._training_metadata_path):
            files.replace(self._training_metadata_path, self._prev_training_metadata_path)
        if os.path.exists(self._weights_path):
            files.replace(self._weights_path, self._prev_weights_path)
        files.replace(tmp_weights, self._weights_path)
        files.replace(tmp_meta, self._training_metadata_path)

    def _checkpoint_bytes(self):
        """The size of the next checkpoint: the last one's, else the model's and optimizer's variables."""
        if os.path.exists(self._weights_path):
            return os.path.getsize(self._weights_path)
        optimizer = self.model.optimizer
        variables = list(self.model.weights) + (list(optimizer.variables) if optimizer is not None else [])
        return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)

    def discard_previous(self):
        """Remove the checkpoint before the last one (``.bkp``): the last one was read back."""
        for path in (self._prev_weights_path, self._prev_training_metadata_path):
            files.remove_if_present(path)

    def _should_save_on_batch(self, batch):
        """Save when ``save_freq`` optimizer steps have passed since the last save.  Keras counts
        batch indices instead, and under ``steps_per_execution`` > 1 its count misses a step at the
        start of every epoch (its last index seen restarts at 0, not -1)."""
        if self.save_freq == "epoch":
            return False
        self._last_batch_seen = batch
        step = int(self.model.optimizer.iterations.numpy())
        if step - self._saved_step >= self.save_freq:
            self._saved_step = step
            return True
        return False

    def on_train_batch_end(self, batch, logs=None):
        if batch < self._skip:  # a batch applied before the interruption, read and skipped
            return
        if self._check(logs, f"batch {batch}"):
            super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._skip = 0
        if self.diverged is None and self._check(logs, f"epoch {epoch + 1}"):
            super().on_epoch_end(epoch, logs)
            last = epoch + 1 >= (self.params or {}).get("epochs", math.inf) or self.model.stop_training
            optimizer = self.model.optimizer
            step = int(optimizer.iterations.numpy()) if optimizer is not None else 0
            if last and self.save_freq != "epoch" and self.diverged is None and step > self._saved_step:
                self._saved_step = step  # the state training ends with: what a larger --epochs continues from
                self._save_model()


