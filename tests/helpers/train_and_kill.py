"""Train a small VAE on digits (10 steps per epoch, two steps per call of the compiled step) with
checkpoints every 4 steps; with KILL_AT=K, SIGKILL this process
right after optimizer step K (a hard crash: no cleanup, no Python exception handling); with
KILL_PHASE=model, SIGKILL it when training has ended and model.keras is about to be written, with
KILL_PHASE=figures, when model.keras is written and the figures are next.  EPOCHS (default 3) is
the run's --epochs.  The run keeps its best epoch and decays the learning rate (lr · 0.5^e), so
resuming covers their state too."""
import os
import signal
import sys

import keras

from kvae.training import runs


class KillAt(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def _killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


phase = os.environ.get("KILL_PHASE")
if phase == "model":
    runs.atomic_save = _killed
elif phase == "figures":
    runs.write_figures = _killed
out = sys.argv[1]
kill_at = int(os.environ.get("KILL_AT", "0"))
runs.train(model="vae", dataset="digits", out=out, epochs=int(os.environ.get("EPOCHS", "3")), batch_size=50, limit=500,
           hidden=(32,), latent_dim=4, seed=1, checkpoint_every=4, steps_per_execution=2, verbose=0,
           callbacks=[KillAt(kill_at)] if kill_at else [], keep_best=True, lr_decay=0.5)
