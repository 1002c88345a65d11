r"""An importance-sampled NLL that survives a kill: the per-example values computed so far, kept in a
file next to the run.

At k = 1000 a big model (a ladder VAE with a PixelCNN decoder) takes hours for a validation split;
``kvae evaluate`` writes the log-likelihoods of the finished batches to
``RUN_DIR/evaluate.journal.npz`` after each batch (atomically, :mod:`kvae.training.files`), and a rerun
of the same command continues after the last of them.  Batch b's draws are seeded by its position
(:func:`kvae.core.importance.chunked_log_likelihood`), so the continued result is the one an
uninterrupted run gives.

The journal is used only for the same evaluation: its key holds the model's identity (its class, the
sha256 of its config and of its weights, :func:`model_identity`: a model fetched or saved again, whose
``.keras`` file differs in its timestamps, continues the journal; other weights do not), the sha256 of
the examples (and labels), the estimator's settings (k, seed, batch size, and the draws per chunk,
which choose the draws: :meth:`kvae.core.endpoints.EndpointsMixin.draws_per_chunk`) and the versions
of kvae and TensorFlow; any other journal is replaced.  The journal is removed once the result is
complete.  ``kvae evaluate`` holds the run directory (:func:`hold_run_dir`) while it keeps the
journal, so a second evaluation run meanwhile keeps none; each write goes through a temporary file
of its own process besides.
"""
import errno
import hashlib
import json
import os
import sys

import numpy as np

from kvae.training.files import atomic_write, remove_if_present

FILE = "evaluate.journal.npz"
_UNREAD = object()
#: ``stream=STDERR``: the messages go to ``sys.stderr`` as it is when they are written (a default of
#: ``sys.stderr`` itself would keep the stream of the moment this module was imported)
STDERR = object()


def hold_run_dir(run_dir):
    """An exclusive ``fcntl.flock`` on ``run_dir`` itself for the journal of one evaluation at a time.

    Returns the open descriptor that holds it (close it to release; the kernel releases it when the
    process ends, however it ends), ``-1`` where there is nothing to lock (no ``fcntl``, a directory
    that cannot be opened or locked), or None when another process holds it: that evaluation owns the journal,
    and this one runs without one (two evaluations of other settings would replace each other's)."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: evaluations are not locked
        return -1
    try:
        fd = os.open(run_dir, os.O_RDONLY)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)  # held by another process, or a file system that cannot lock a directory (NFS: EBADF)
        return None if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else -1
    return fd


def _versions():
    """kvae's and TensorFlow's versions: another release may compute other values from the same model."""
    import tensorflow as tf

    import kvae

    return {"kvae": kvae.__version__, "tensorflow": tf.__version__}


def _config_value(value):
    """What a config value JSON cannot write stands for in the model's identity: Keras' serialisation
    (a numpy array's values, all of them: its repr elides the middle of a large one), else its repr."""
    import keras

    try:
        return keras.saving.serialize_keras_object(value)
    except Exception:  # not serialisable by Keras either
        return repr(value)


def model_identity(model):
    """What makes a model's log-likelihoods: ``{"class", "config_sha256", "weights_sha256"}``, the
    same for every file that holds the model.  The config's hash leaves out its ``name``; the weights'
    is :func:`kvae.evaluation.parallel.weights_fingerprint` (in the model's order of its weights)."""
    from kvae.evaluation.parallel import weights_fingerprint

    config = json.dumps({k: v for k, v in model.get_config().items() if k != "name"}, sort_keys=True,
                        default=_config_value)
    return {"class": f"{type(model).__module__}.{type(model).__qualname__}",
            "config_sha256": hashlib.sha256(config.encode()).hexdigest(), "weights_sha256": weights_fingerprint(model)}


def sha256_of_array(a):
    """Hex sha256 of an array's dtype, shape and bytes (None for None)."""
    if a is None:
        return None
    a = np.ascontiguousarray(a)
    digest = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    digest.update(a.tobytes())
    return digest.hexdigest()


class NLLJournal:
    """The log-likelihoods of an evaluation's first m examples, at ``path``, for the evaluation that
    ``key`` (a JSON-serialisable dict) names.

    ``load()`` returns them (numpy float32 [m]) or None when there is no journal for this key (or
    ``fresh``); it reads the file once, later calls return the same values.  ``save(values)``
    replaces the file; ``remove()`` deletes it.  A journal that cannot be read, written or removed
    is reported on ``stream`` and the evaluation goes on without it.
    """

    def __init__(self, path, key, stream=STDERR, fresh=False):
        self.path = path
        self.key = json.dumps(key, sort_keys=True)
        self.n, self.batch_size = key.get("n"), key.get("batch_size")
        self.stream = stream
        self.fresh = fresh
        self._writable = True
        self._loaded = _UNREAD

    @classmethod
    def for_run(cls, run_dir, model, x, y, k, seed, batch_size, draws_per_chunk=None, stream=STDERR, fresh=False):
        """The journal of ``kvae evaluate`` of ``model`` in ``run_dir``: keyed by the model's identity
        (:func:`model_identity`), the data's sha256 and the estimator's settings (``draws_per_chunk``:
        the draws per chunk of a full batch and of the last batch; by default the model's at the
        default ``max_elements``, those ``kvae evaluate`` uses)."""
        if draws_per_chunk is None:
            n = len(x)
            draws_per_chunk = [model.draws_per_chunk(min(batch_size, n), k),
                               model.draws_per_chunk(n % batch_size or batch_size, k)]
        key = {"model": model_identity(model), "x_sha256": sha256_of_array(x), "n": int(len(x)),
               "y_sha256": sha256_of_array(y), "k": int(k), "seed": int(seed), "batch_size": int(batch_size),
               "draws_per_chunk": [int(d) for d in draws_per_chunk], "versions": _versions()}
        return cls(os.path.join(run_dir, FILE), key, stream, fresh)

    def _say(self, message):
        if self.stream is not None:
            print(message, file=sys.stderr if self.stream is STDERR else self.stream)

    def load(self):
        """The kept values (numpy float32 [m]), or None: no journal of this evaluation, or ``fresh``.

        The file is read on the first call; later calls return the same values."""
        if self._loaded is _UNREAD:
            self._loaded = None if self.fresh else self._read()
        return self._loaded

    def _read(self):
        if not os.path.exists(self.path):
            return None
        try:
            with np.load(self.path, allow_pickle=False) as f:
                key, values = str(f["key"]), np.asarray(f["values"])
        except Exception as err:  # a file that is not a journal: start over, it is replaced
            self._say(f"{self.path} is not a readable journal ({type(err).__name__}): starting the evaluation "
                      "from the first example")
            return None
        if key != self.key:
            self._say(f"{self.path} is the journal of another evaluation (model, data, k, seed, batch size, "
                      "draws per chunk or versions differ): starting from the first example")
            return None
        whole = values.ndim == 1 and (self.n is None or self.batch_size is None or (
            len(values) <= self.n and (len(values) % self.batch_size == 0 or len(values) == self.n)))
        if values.dtype != np.float32 or not np.all(np.isfinite(values)) or not whole:
            self._say(f"{self.path} holds malformed values (shape {values.shape}, dtype {values.dtype}): "
                      "starting from the first example")
            return None
        if len(values):
            self._say(f"continuing the evaluation after example {len(values)} ({self.path})")
        return values

    def save(self, values):
        """Replace the file with ``values`` (the first m examples' log-likelihoods), atomically."""
        if not self._writable:
            return

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, key=np.array(self.key), values=np.asarray(values, np.float32))

        try:
            atomic_write(self.path, write, suffix=f".{os.getpid()}.tmp")  # not another process's temporary
        except OSError as err:
            self._writable = False
            self._say(f"cannot write the evaluation journal {self.path} ({err.strerror or err}): "
                      "continuing without it (an interruption restarts the evaluation)")

    def remove(self):
        """Delete the file (the evaluation is complete, or ``--fresh``)."""
        try:
            remove_if_present(self.path)
        except OSError as err:  # e.g. a read-only run directory: the result must not be lost for it
            self._say(f"cannot remove the evaluation journal {self.path} ({err.strerror or err}): it is left "
                      "in place")
