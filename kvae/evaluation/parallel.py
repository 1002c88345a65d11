r"""The importance-sampled log-likelihood in several processes (``kvae evaluate --nll-jobs N``).

Each worker process loads the model from its ``.keras`` file and computes whole batches, each with
the seeds of its position in the data (``offset``,
:func:`kvae.core.importance.chunked_log_likelihood`), so the values are those of one process up to
float32 rounding: a process uses ``cpu_count // N`` threads, and TensorFlow's kernels may sum in
another order with another number of threads.  On 2 cores, two one-thread processes evaluated a
ladder VAE faster than one two-thread process (``benchmarks/evaluate_jobs.json``).  Batches are
handed back in order, so ``progress``, ``on_batch`` (the journal, :mod:`kvae.evaluation.journal`)
and ``resume_from`` work as in one process.
"""
import concurrent.futures
import multiprocessing
import os

import numpy as np

from kvae.core.importance import resumed_examples
from kvae.errors import ConfigError

_MODEL = None


def _start_worker(model_file, threads):
    """Worker initialiser: TensorFlow's thread pools, then the model (a fresh process: before any op)."""
    global _MODEL
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    from kvae import models  # noqa: F401  (registers the model classes)

    _MODEL = keras.models.load_model(model_file, compile=False)


def _batch_log_likelihood(xb, yb, k, seed, offset, max_elements):
    return _MODEL.log_likelihood(xb, yb, k=k, batch_size=len(xb), seed=seed, max_elements=max_elements,
                                 offset=offset).numpy()


def parallel_log_likelihood(model_file, x, y=None, k=1000, batch_size=100, seed=0, jobs=2, max_elements=2**23,
                            progress=None, resume_from=None, on_batch=None):
    """log p(x) per example (numpy float32 [n]) as ``model.log_likelihood`` computes it, the batches
    shared among ``jobs`` processes that load the model from ``model_file``; ``progress``,
    ``resume_from`` and ``on_batch`` as there."""
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be a positive number of processes, got {jobs!r}")
    if not os.path.isfile(model_file):
        raise ConfigError(f"the workers load the model from {model_file!r}, which is not a file")
    x = np.asarray(x, np.float32)
    n = len(x)
    first = resumed_examples(resume_from, n, batch_size)
    out = [] if resume_from is None else [np.asarray(resume_from, np.float32)]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=_start_worker, initargs=(model_file, threads))
    finished, done = {}, first
    try:
        futures = {pool.submit(_batch_log_likelihood, x[s:s + batch_size], None if y is None else y[s:s + batch_size],
                               k, seed, s, max_elements): s for s in range(first, n, batch_size)}
        for future in concurrent.futures.as_completed(futures):
            finished[futures[future]] = future.result()
            while done in finished:  # hand back in order: the journal keeps a prefix
                out.append(finished.pop(done))
                done += len(out[-1])
                if on_batch is not None:
                    on_batch(np.concatenate(out))
                if progress is not None:
                    progress(done, n)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return np.concatenate(out) if out else np.zeros([0], np.float32)
