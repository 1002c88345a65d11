"""Callbacks of a training run: data order, the garbage collector, the best epoch, the learning
rate, TensorBoard pictures.

:class:`SafeBackupAndRestore` (checkpoints that resume exactly) lives in
:mod:`kvae.training.checkpoint` and is importable from here too.
"""
import math
import os

import keras
import numpy as np

from kvae.errors import ConfigError, RunError
from kvae.training import files
from kvae.training.checkpoint import SafeBackupAndRestore  # noqa: F401  (its kvae 0.1 home)


class DataEpoch(keras.callbacks.Callback):
    """Sets a kvae data pipeline's epoch counter (``dataset.kvae_epoch``) at the start of each epoch,
    so that epoch e's order depends on e only (see :meth:`kvae.data.Split.dataset`).  kvae models
    add it in ``fit`` when the training data carry the counter."""

    def __init__(self, variable):
        super().__init__()
        self.variable = variable

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(epoch)


class StepProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, its count never past the epoch's steps.  Under ``steps_per_execution`` n
    Keras reports the end of a call as n steps on, also for the epoch's last call that ran fewer (13
    steps per epoch at n = 10 showed ``20/13`` and an ETA of ``-1s``).  kvae models add it in ``fit``."""

    def _update_progbar(self, batch, logs=None):
        if self.target is not None:
            batch = min(batch, self.target - 1)
        super()._update_progbar(batch, logs)


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
