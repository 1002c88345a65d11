"""Callbacks that keep a run's work: checkpoints that never hold a diverged state, and resume.

:class:`SafeBackupAndRestore` is ``keras.callbacks.BackupAndRestore`` (weights, optimizer state and
the epoch, saved every ``save_freq`` steps) with five changes:

* a checkpoint is written to a temporary file and renamed over the last one (an atomic rename), so
  a kill at any moment leaves a complete checkpoint: the new one or the one before.  (Keras writes
  over the last checkpoint in place; a kill during that write left a truncated HDF5 file that
  would not load.)  The checkpoint before the last is kept (``latest.weights.h5.bkp``) and restored when
  the last one cannot be read;

* a non-finite loss stops training and is *not* checkpointed; the last good checkpoint is kept
  (not deleted at the end of training) and :attr:`diverged` says at which step it happened;
* a checkpoint that cannot be restored raises :class:`kvae.errors.RunError` naming the directory;
* :attr:`resumed_step` is the optimizer step training resumed from (0 for a fresh run);
* ``save_freq`` counts optimizer steps (Keras counts batch indices, which under
  ``steps_per_execution`` > 1 miss a step per epoch): under n steps per call a checkpoint is written
  at the end of the first call at or after every ``save_freq`` steps.

On resume, training continues at the next batch not yet applied: weights, optimizer state
and step counter (so the noise stream) are restored, the resumed epoch sees the same batch order
as before (kvae data pipelines order each epoch by its number, :class:`DataEpoch`), and the
batches of that epoch that were already applied are read and skipped without a step.  The run
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

from kvae.errors import ConfigError, RunError
from kvae.training import files


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


class FreezeGC(keras.callbacks.Callback):
    """``gc.freeze()`` at the start of training and again after the first epoch (when the steps have
    been traced), ``gc.unfreeze()`` at the end: full garbage collections then skip the long-lived
    objects of TensorFlow and Keras (measured here: a 1.2 s pause between two batches every few
    epochs of a 15 ms step, down to at most 0.1 s).  Objects created during training are collected as
    usual; frozen ones become collectable again when ``fit`` returns.  kvae models add it in ``fit``
    (``freeze_gc_during_fit``)."""

    def on_train_begin(self, logs=None):
        self._frozen = 0
        self._freeze()

    def _freeze(self):
        import gc

        gc.freeze()
        self._frozen += 1

    def on_epoch_end(self, epoch, logs=None):
        if self._frozen == 1:
            self._freeze()

    def on_train_end(self, logs=None):
        import gc

        if getattr(self, "_frozen", 0):
            gc.unfreeze()
            self._frozen = 0


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` whose checkpoints survive kills and divergence (the module docstring
    lists the changes); ``backup_dir`` and ``save_freq`` ("epoch" or every N steps) as in Keras."""

    def __init__(self, backup_dir, save_freq="epoch"):
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=True, delete_checkpoint=True)
        self.diverged = None
        self.resumed_step = 0
        self._skip = 0
        self._saved_step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch  # Keras records epoch 0 for a mid-epoch checkpoint of a resumed run

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
            if os.path.exists(tmp):
                os.remove(tmp)
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
        files.write_flushed(tmp_weights, lambda path: self.model.save_weights(path, overwrite=True))
        metadata = json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen})
        files.write_flushed(tmp_meta, metadata)
        # the complete new checkpoint exists; renames make it the last one and move the old pair to
        # .bkp, metadata first: whenever the last weights are missing (a kill after the second rename)
        # the .bkp pair is whole, and _restore takes it as the last checkpoint
        if os.path.exists(self._training_metadata_path):
            files.replace(self._training_metadata_path, self._prev_training_metadata_path)
        if os.path.exists(self._weights_path):
            files.replace(self._weights_path, self._prev_weights_path)
        files.replace(tmp_weights, self._weights_path)
        files.replace(tmp_meta, self._training_metadata_path)

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

    def on_train_end(self, logs=None):
        if self.diverged is None:
            super().on_train_end(logs)


class KeepBest(keras.callbacks.Callback):
    """Keep the weights of the epoch with the lowest ``monitor`` (validation −ELBO by default), and
    optionally stop after ``patience`` epochs without improvement (early stopping).  ``monitor`` may
    be a tuple of names, the first one the logs have is used: by default the validation negative
    ELBO, which a KL warm-up or a β ≠ 1 does not bend, else the validation loss.

    At each epoch end that improves on the best value by more than ``min_delta``, the weights are
    written to ``directory/best.weights.h5``; ``directory/best.json`` records the best epoch and
    value and the epochs waited, so a resumed run (:class:`SafeBackupAndRestore`) continues the
    count instead of starting it over; an epoch it has already seen is not counted twice.  At the
    end of training the best weights replace the model's.  With an optimizer that keeps a moving
    average of the weights (``use_ema``), the *averaged* weights of the best epoch are kept: they are
    what ``fit`` would have left in the model had it ended there.
    """

    def __init__(self, directory, monitor=("val_neg_elbo", "val_loss"), patience=None, min_delta=0.0):
        super().__init__()
        if patience is not None and (not isinstance(patience, int) or patience < 1):
            raise ConfigError(f"patience must be a positive integer or None, got {patience!r}")
        self.directory = directory
        self.monitor = monitor
        self.patience = patience
        self.min_delta = float(min_delta)
        self.weights_path = os.path.join(directory, "best.weights.h5")
        self.state_path = os.path.join(directory, "best.json")
        self.state = {"best_epoch": None, "best": None, "wait": 0, "last_epoch": -1, "stopped_epoch": None,
                      "monitor": None}

    def on_train_begin(self, logs=None):
        import json

        if os.path.isfile(self.state_path):
            try:
                with open(self.state_path) as f:
                    self.state.update(json.load(f))
            except ValueError as err:
                raise RunError(f"{self.state_path} is not valid JSON ({err}); delete it to start the count over") from None

    def _averaged(self):
        opt = self.model.optimizer
        if opt is None or not getattr(opt, "use_ema", False) or not opt.built:
            return None
        averages = getattr(opt, "_model_variables_moving_average", None)
        return list(averages) if averages else None

    def _save_weights(self):
        averages = self._averaged()
        variables = self.model.trainable_variables
        held = None
        if averages is not None and len(averages) == len(variables):
            held = [v.numpy() for v in variables]
            for v, a in zip(variables, averages):
                v.assign(a)
        try:
            files.save_weights(self.model, self.weights_path)
        finally:
            if held is not None:
                for v, h in zip(variables, held):
                    v.assign(h)

    def _write_state(self):
        files.write_json(self.state_path, self.state, indent=2)

    def on_epoch_end(self, epoch, logs=None):
        if epoch <= self.state["last_epoch"]:  # an epoch replayed after a resume: already counted
            return
        names = (self.monitor,) if isinstance(self.monitor, str) else tuple(self.monitor)
        value = next((logs[n] for n in names if n in (logs or {})), None)
        if value is None:
            raise RunError(f"KeepBest monitors {' or '.join(names)}, which the epoch's logs do not have "
                           f"(they have {sorted(logs or {})}); pass validation data")
        value = float(value)
        self.state["last_epoch"] = epoch
        self.state["monitor"] = next(n for n in names if n in logs)
        os.makedirs(self.directory, exist_ok=True)
        if math.isfinite(value) and (self.state["best"] is None or value < self.state["best"] - self.min_delta):
            self._save_weights()
            self.state.update(best=value, best_epoch=epoch, wait=0)
        else:
            self.state["wait"] += 1
            if self.patience is not None and self.state["wait"] >= self.patience:
                self.state["stopped_epoch"] = epoch
                self.model.stop_training = True
        self._write_state()

    def on_train_end(self, logs=None):
        if os.path.isfile(self.weights_path):
            self._restore()

    def _restore(self):
        """Load the best weights into the model's variables (not the optimizer's)."""
        opt = self.model.optimizer
        held = [v.numpy() for v in opt.variables] if opt is not None and opt.built else None
        self.model.load_weights(self.weights_path)
        if held is not None:  # the optimizer state stays the run's last (a resumed run continues from it)
            for v, h in zip(opt.variables, held):
                v.assign(h)


def exponential_lr(initial, rate):
    """``keras.callbacks.LearningRateScheduler`` for lr_e = initial · rate^e at epoch e (0-based):
    a function of the epoch only, so a resumed run gets the same rate as an uninterrupted one."""
    if not 0 < rate <= 1:
        raise ConfigError(f"the learning-rate decay rate must be in (0, 1], got {rate!r}")
    return keras.callbacks.LearningRateScheduler(lambda epoch, lr=None: float(initial * rate ** epoch))


class TensorBoardImages(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback that also writes, at the end of every ``every``-th epoch, to its
    validation writer (``log_dir/validation``):

    * ``samples``: a grid of ``n`` decoded prior samples from noise fixed at the start (E[x|z], so
      only the model changes from epoch to epoch),
    * ``reconstructions``: ``n`` fixed validation images each followed by its reconstruction,
    * ``kl_per_dim``: a histogram over latent dimensions of the batch-mean KL(q(z_d|x) || p(z_d))
      of those images, when q and p factorise.

    ``kvae train`` uses it for ``RUN_DIR/logs``.  Images are the :func:`kvae.evaluation.plotting.image_grid`
    of the model's outputs (grey levels in [0, 1]).
    """

    def __init__(self, log_dir, validation_images, validation_labels=None, n=16, seed=0, every=1, **kwargs):
        super().__init__(log_dir, **kwargs)
        self.validation_images = np.asarray(validation_images[:n], np.float32)
        self.validation_labels = None if validation_labels is None else np.asarray(validation_labels[:n])
        self.n, self.seed, self.every = int(n), int(seed), int(every)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if (epoch + 1) % self.every == 0:
            self.write_pictures(epoch)

    def grids(self):
        """(samples grid, reconstructions grid, KL per dimension or None) for the current weights."""
        from kvae.evaluation.plotting import image_grid

        model = self.model
        labels = None if not model.conditional else np.arange(self.n) % model.num_classes
        samples = np.asarray(model.sample(self.n, labels=labels, seed=self.seed))
        x, y = self.validation_images, (self.validation_labels if model.conditional else None)
        rec = np.asarray(model.reconstruct(x, y))
        pairs = np.stack([x, rec], axis=1).reshape((-1,) + x.shape[1:])
        kl = None
        if getattr(model, "has_density", False):
            q = model.encode(x, y)
            per_dim = model.kl_per_dimension(q)
            kl = None if per_dim is None else np.asarray(per_dim).mean(axis=0)
        def four_d(grid):  # [H, W] or [H, W, 3] -> [1, H, W, C]
            return (grid[..., None] if grid.ndim == 2 else grid)[None]

        return four_d(image_grid(samples, ncol=int(np.ceil(np.sqrt(self.n))), min_size=0)), \
            four_d(image_grid(pairs, ncol=8, min_size=0)), kl

    def write_pictures(self, epoch):
        import tensorflow as tf

        samples, recs, kl = self.grids()
        with self._val_writer.as_default():
            tf.summary.image("samples", samples, step=epoch)
            tf.summary.image("reconstructions", recs, step=epoch)
            if kl is not None:
                tf.summary.histogram("kl_per_dim", kl, step=epoch, buckets=min(30, len(kl)))
                tf.summary.scalar("active_dims_kl_above_0.01", float(np.sum(kl > 0.01)), step=epoch)
        self._val_writer.flush()
