r"""The importance-sampled log-likelihood in several processes (``kvae evaluate --nll-jobs N``).

Each worker process loads the model from its ``.keras`` file and computes whole batches, each with
the seeds of its position in the data (``offset``,
:func:`kvae.core.importance.chunked_log_likelihood`), so the values are those of one process up to
float32 rounding: the usable CPUs are shared among the processes (:func:`worker_plan`), and
TensorFlow's kernels may sum in another order with another number of threads.  On 2 cores, two
one-thread processes evaluated a ladder VAE faster than one two-thread process
(``benchmarks/evaluate_jobs.json``).  Batches are handed back in order, so ``progress``, ``on_batch``
(the journal, :mod:`kvae.evaluation.journal`) and ``resume_from`` work as in one process.

A worker loads the model's file itself: given the model's :func:`weights_fingerprint`, it checks
that the file holds those weights.  A worker that dies (killed, out of memory) ends the call with a
:class:`~kvae.errors.KvaeError` after the batches before it were handed back; on any error or
interruption of the calling process the workers are stopped before the call returns, and a
calling process that is killed or terminated takes its workers with it.
"""
import concurrent.futures
import hashlib
import multiprocessing
import multiprocessing.connection
import os
import threading

import numpy as np

from kvae.core.importance import resumed_examples
from kvae.errors import ConfigError, KvaeError, RunError

_MODEL = None
_LOAD_ERROR = None


def usable_cpus():
    """The CPUs this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_plan(jobs, batches, cpus=None):
    """(processes, TensorFlow threads per process) for ``jobs`` processes asked and ``batches`` to
    compute: no more processes than batches, the usable CPUs (``cpus``) shared among them."""
    cpus = usable_cpus() if cpus is None else cpus
    processes = max(1, min(jobs, batches))
    return processes, max(1, cpus // processes)


def weights_fingerprint(model):
    """Hex sha256 of a model's weights, each one's dtype, shape and bytes in the model's order of its
    weights (two weights of one shape swapped are another model): the same for a model and its
    ``.keras`` file loaded in another process."""
    digest = hashlib.sha256()
    for w in model.weights:
        a = np.ascontiguousarray(w.numpy())
        digest.update(f"{a.dtype.str}{a.shape};".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def _exit_with(parent):
    """End this worker as soon as ``parent`` (the calling process) has ended, however it ended."""
    multiprocessing.connection.wait([parent.sentinel])
    os._exit(1)


def _start_worker(model_file, threads, fingerprint):
    """Worker initialiser: a watch on the calling process (killed or terminated, it cannot stop its
    workers: they end with it instead of running on as orphans), TensorFlow's thread pools, then the
    model (a fresh process: before any op).  A failure is kept and raised by the first batch (an
    initialiser's error would break the pool with a traceback on stderr and no message)."""
    global _MODEL, _LOAD_ERROR
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="exit-with-parent").start()
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        import keras

        from kvae import models  # noqa: F401  (registers the model classes)

        _MODEL = keras.models.load_model(model_file, compile=False)
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0][:200]
        _LOAD_ERROR = RunError(f"a --nll-jobs worker could not load {model_file} ({type(err).__name__}: {first})")
        return
    if fingerprint is not None and weights_fingerprint(_MODEL) != fingerprint:
        _LOAD_ERROR = ConfigError(f"{model_file} does not hold the weights of the model being evaluated: the "
                                  "worker processes would compute another model's log-likelihood")


def _batch_log_likelihood(xb, yb, k, seed, offset, max_elements):
    if _LOAD_ERROR is not None:
        raise _LOAD_ERROR
    return _MODEL.log_likelihood(xb, yb, k=k, batch_size=len(xb), seed=seed, max_elements=max_elements,
                                 offset=offset).numpy()


def _worker_threads():
    """TensorFlow's (intra-op, inter-op) threads in a worker (for tests)."""
    import tensorflow as tf

    return (tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads())


def start_pool(model_file, processes, threads, fingerprint=None):
    """A pool of ``processes`` spawned workers of ``threads`` threads holding the model of ``model_file``."""
    return concurrent.futures.ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=_start_worker,
                                                  initargs=(model_file, threads, fingerprint))


def pool_workers(pool):
    """The worker processes a pool has started (Python < 3.14 has no public list: its ``_processes``)."""
    return list((getattr(pool, "_processes", None) or {}).values())


def stop_pool(pool, workers=()):
    """Stop a pool's workers now (their batches are abandoned) and wait until they have ended: those it
    holds and ``workers`` (taken before: a broken pool forgets its processes while it stops them)."""
    workers = list({id(p): p for p in [*workers, *pool_workers(pool)]}.values())
    for process in workers:
        process.terminate()  # a process that has ended already: nothing happens
    pool.shutdown(wait=False, cancel_futures=True)
    left = {process.sentinel: process for process in workers}
    for sentinel in multiprocessing.connection.wait(list(left), timeout=10):
        del left[sentinel]
    for process in left.values():  # SIGTERM ignored for 10 s
        process.kill()
    if left:  # (wait([]) would wait for ever)
        multiprocessing.connection.wait(list(left))
    for process in workers:  # reaped (a process closes its sentinel before it has quite ended)
        process.join()


def parallel_log_likelihood(model_file, x, y=None, k=1000, batch_size=100, seed=0, jobs=2, max_elements=2**23,
                            progress=None, resume_from=None, on_batch=None, fingerprint=None):
    """log p(x) per example (numpy float32 [n]) as ``model.log_likelihood`` computes it, the batches
    shared among ``jobs`` processes (at most one per batch) that load the model from ``model_file``;
    ``progress``, ``resume_from`` and ``on_batch`` as there.  The workers are spawned: they import
    the main module, so a script calls this under ``if __name__ == "__main__":``.

    Args:
        fingerprint: the evaluated model's :func:`weights_fingerprint`; the workers refuse a
            ``model_file`` with other weights (``ConfigError``).

    Raises:
        ConfigError: ``jobs`` is not a positive integer or exceeds the usable CPUs, ``model_file`` is
            not a file or (with ``fingerprint``) holds other weights.
        KvaeError: a worker died (killed, out of memory); the batches before its are handed back.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be a positive number of processes, got {jobs!r}")
    if jobs > usable_cpus():
        raise ConfigError(f"jobs={jobs} processes on {usable_cpus()} usable CPUs: at most {usable_cpus()} "
                          "(a process per CPU)")
    if not os.path.isfile(model_file):
        raise ConfigError(f"the workers load the model from {model_file!r}, which is not a file")
    x = np.asarray(x, np.float32)
    n = len(x)
    first = resumed_examples(resume_from, n, batch_size)
    out = [] if resume_from is None else [np.asarray(resume_from, np.float32)]
    starts = list(range(first, n, batch_size))
    if not starts:
        return np.concatenate(out) if out else np.zeros([0], np.float32)
    pool = start_pool(model_file, *worker_plan(jobs, len(starts)), fingerprint)
    finished, done, workers = {}, first, []
    try:
        futures = {pool.submit(_batch_log_likelihood, x[s:s + batch_size], None if y is None else y[s:s + batch_size],
                               k, seed, s, max_elements): s for s in starts}
        workers = pool_workers(pool)  # all started: spawned as the batches were submitted
        for future in concurrent.futures.as_completed(futures):
            try:
                finished[futures[future]] = future.result()
            except concurrent.futures.process.BrokenProcessPool:
                raise KvaeError(f"a --nll-jobs worker process died (killed, or out of memory?) before the batch "
                                f"at example {done} was handed back; {done} examples were computed (with a journal, "
                                "a rerun continues after them): try fewer --nll-jobs") from None
            while done in finished:  # hand back in order: the journal keeps a prefix
                out.append(finished.pop(done))
                done += len(out[-1])
                if on_batch is not None:
                    on_batch(np.concatenate(out))
                if progress is not None:
                    progress(done, n)
    finally:  # done, an error, a dead worker, KeyboardInterrupt: no worker may go on running.  Not
        # shutdown(wait=True): after a worker killed while holding the task queue's lock (once every
        # result was in) the others never read their stop signal, and it waits for them forever
        stop_pool(pool, workers)
    return np.concatenate(out)
