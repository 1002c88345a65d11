"""The NLL in several processes: the batches' values are one process's (same positional seeds), handed back
in order to progress, on_batch and a resume."""
import multiprocessing
import os
import signal

import numpy as np
import pytest

import kvae
from kvae.errors import ConfigError, KvaeError, RunError
from kvae.evaluation import parallel
from kvae.evaluation.metrics import importance_sampled_nll
from kvae.evaluation.parallel import parallel_log_likelihood


@pytest.fixture(autouse=True)
def two_cpus(monkeypatch):
    """Two usable CPUs whatever the machine has (jobs=2 is allowed; the workers get one thread each)."""
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 2)


_CHILDREN_BEFORE = set()


@pytest.fixture(autouse=True)
def children_before():
    """The children this process had before the test (joblib's loky workers from an earlier test in the
    same process idle for 300 s): :func:`_alive_workers` leaves them out."""
    _CHILDREN_BEFORE.clear()
    _CHILDREN_BEFORE.update(p.pid for p in multiprocessing.active_children())


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = kvae.VAE(input_shape=(4, 4, 1), latent_dim=2, hidden=(8,), seed=0)
    x = (np.random.RandomState(0).uniform(size=(7, 4, 4, 1)) > 0.5).astype("float32")
    model(x[:1])
    path = str(tmp_path_factory.mktemp("m") / "model.keras")
    model.save(path)
    return model, path, x


def test_two_processes_give_one_process_values_in_order(saved):
    model, path, x = saved
    want = model.log_likelihood(x, k=30, batch_size=2, seed=4).numpy()
    progress, seen = [], []
    got = parallel_log_likelihood(path, x, k=30, batch_size=2, seed=4, jobs=2, resume_from=want[:2] - 50.0,
                                  progress=lambda done, total: progress.append((done, total)),
                                  on_batch=lambda v: seen.append(len(v)))
    np.testing.assert_array_equal(got[:2], want[:2] - 50.0)  # the resumed values are kept, not recomputed
    np.testing.assert_allclose(got[2:], want[2:], rtol=0, atol=1e-4)
    assert np.abs(got[2:] - want[2:]).max() < 1e-4 < np.abs(np.diff(want)).max()
    assert progress == [(4, 7), (6, 7), (7, 7)] and seen == [4, 6, 7]


def test_conditional_models_send_their_labels(tmp_path):
    model = kvae.ConditionalVAE(input_shape=(4, 4, 1), num_classes=3, latent_dim=2, hidden=(8,), seed=0)
    x = (np.random.RandomState(1).uniform(size=(5, 4, 4, 1)) > 0.5).astype("float32")
    y = np.array([0, 1, 2, 1, 0])
    model((x[:1], y[:1]))
    path = str(tmp_path / "model.keras")
    model.save(path)
    want = importance_sampled_nll(model, x, y, k=20, batch_size=2, seed=1)
    got = importance_sampled_nll(model, x, y, k=20, batch_size=2, seed=1, jobs=2, model_file=path)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    other = importance_sampled_nll(model, x, (y + 1) % 3, k=20, batch_size=2, seed=1)
    assert np.abs(other - want).max() > 1e-2  # the labels matter, so they were sent


def test_bad_jobs_and_model_file_are_refused(saved):
    model, path, x = saved
    with pytest.raises(ConfigError, match="jobs must be a positive"):
        parallel_log_likelihood(path, x, jobs=0)
    with pytest.raises(ConfigError, match="jobs=3 processes on 2 usable CPUs: at most 2"):
        parallel_log_likelihood(path, x, jobs=3)
    with pytest.raises(ConfigError, match="not a file"):
        parallel_log_likelihood(path + ".missing", x, jobs=2)
    with pytest.raises(ConfigError, match="needs model_file"):
        importance_sampled_nll(model, x, k=5, jobs=2)


def _running(pid):
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _alive_workers():
    """This process's children started during the test that still run (by /proc: Process.is_alive can race
    with the pool's own reaping of a process)."""
    return [p.pid for p in multiprocessing.active_children() if p.pid not in _CHILDREN_BEFORE and _running(p.pid)]


def test_a_killed_worker_is_one_error_after_the_batches_before_it(saved, monkeypatch):
    """A worker killed (SIGKILL, as the out-of-memory killer does) while batches remain: a KvaeError that
    says so, the batches handed back before it kept (on_batch), and no worker left running."""
    model, path, _ = saved
    # 2048 batches of k = 200,000: about 40 ms each here, so more than a minute of work remains when the
    # first is handed back, whatever the machine (32 batches were all done before it once, in CI)
    x = (np.random.RandomState(2).uniform(size=(2048, 4, 4, 1)) > 0.5).astype("float32")
    pools, seen, killed = [], [], []
    start_pool = parallel.start_pool
    monkeypatch.setattr(parallel, "start_pool", lambda *a: pools.append(start_pool(*a)) or pools[-1])

    def kill_a_worker(values):
        if not seen:  # one of this call's own workers (not any child of the test process)
            killed.append(parallel.pool_workers(pools[0])[0].pid)
            os.kill(killed[0], signal.SIGKILL)
        seen.append(len(values))

    with pytest.raises(KvaeError, match="a --nll-jobs worker process died") as err:
        parallel_log_likelihood(path, x, k=200_000, batch_size=1, jobs=2, on_batch=kill_a_worker)
    assert len(pools) == 1 and len(killed) == 1
    assert f"{seen[-1]} examples were computed" in str(err.value) and seen[-1] < len(x)
    assert _alive_workers() == []


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_an_error_in_the_caller_stops_the_workers_at_once(saved, error):
    """KeyboardInterrupt or an error of on_batch (a journal write) in the calling process: the call
    raises it and no worker is left running (they were abandoned to finish their batches before)."""
    model, path, _ = saved
    x = (np.random.RandomState(3).uniform(size=(64, 4, 4, 1)) > 0.5).astype("float32")

    def interrupted(values):
        raise error("in the caller")

    with pytest.raises(error, match="in the caller"):
        parallel_log_likelihood(path, x, k=100, batch_size=1, jobs=2, on_batch=interrupted)
    assert _alive_workers() == []


def test_workers_share_the_cpus_and_are_no_more_than_the_batches(saved):
    """worker_plan: at most one process per batch, the usable CPUs' threads shared among them; a
    worker's TensorFlow runs with the planned threads (intra- and inter-op)."""
    assert parallel.worker_plan(2, 10, cpus=2) == (2, 1)
    assert parallel.worker_plan(2, 1, cpus=2) == (1, 2)  # one batch left: one process of both CPUs
    assert parallel.worker_plan(3, 10, cpus=8) == (3, 2)
    _, path, _ = saved
    pool = parallel.start_pool(path, 1, 3)
    try:
        assert pool.submit(parallel._worker_threads).result() == (3, 3)
    finally:
        pool.shutdown()


def test_a_model_file_of_other_weights_or_corrupt_is_one_error(saved, tmp_path):
    """The workers load model_file themselves: with other weights than the evaluated model's it is
    refused (ConfigError), a file they cannot load is a RunError naming it (not a broken pool)."""
    model, path, x = saved
    other = kvae.VAE(input_shape=(4, 4, 1), latent_dim=2, hidden=(8,), seed=0)
    other(x[:1])
    for mine, theirs in zip(other.weights, model.weights):  # not left to initialisers (a global seed may
        mine.assign(theirs.numpy() + 0.5)  # give two models the same values): one value differs, all do
    with pytest.raises(ConfigError, match="does not hold the weights of the model being evaluated"):
        importance_sampled_nll(other, x, k=5, batch_size=2, jobs=2, model_file=path)
    broken = tmp_path / "model.keras"
    broken.write_bytes(open(path, "rb").read()[:200])
    with pytest.raises(RunError, match=f"could not load {broken}"):
        parallel_log_likelihood(str(broken), x, k=5, batch_size=2, jobs=2)
    assert _alive_workers() == []


_KILLED_CALLER = """
import multiprocessing, os, signal, sys
import numpy as np
from kvae.evaluation import parallel
parallel.usable_cpus = lambda: 2
x = (np.random.RandomState(4).uniform(size=(64, 4, 4, 1)) > 0.5).astype("float32")

def killed(values):  # the calling process killed after the first batch (SIGKILL: nothing of it runs)
    print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

parallel.parallel_log_likelihood(sys.argv[1], x, k=100, batch_size=1, jobs=2, on_batch=killed)
"""


def test_workers_end_with_a_killed_caller(saved, tmp_path):
    """A calling process killed (SIGKILL, or SIGTERM, which Python does not turn into an exception)
    cannot stop its workers: they watch it and end with it instead of running on as orphans."""
    import subprocess
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers"))
    from waiting import wait_for

    _, path, _ = saved
    out = tmp_path / "caller.out"
    with open(out, "w") as printed:  # a file, not a pipe: orphaned workers would hold a pipe open
        code = subprocess.run([sys.executable, "-c", _KILLED_CALLER, path], stdout=printed, stderr=subprocess.STDOUT,
                              timeout=600).returncode
    assert code == -signal.SIGKILL, out.read_text()[-2000:]
    workers = [int(pid) for pid in out.read_text().split()[:2]]

    try:
        wait_for(lambda: not any(_running(pid) for pid in workers), "the workers of a killed caller to end", limit=300)
    finally:
        for pid in workers:  # orphans (the fault this test finds) are not left behind
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_an_error_inside_the_model_reaches_the_caller(saved):
    """An exception the model raises in a worker (here: data of another shape) is raised by the call with
    Keras' message (not a broken pool, not a hang), and no worker is left running.  (In one process the
    same data raise a ValueError or, once traced, TensorFlow's InvalidArgumentError.)"""
    _, path, _ = saved
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 16"):
        parallel_log_likelihood(path, np.zeros((4, 4, 4, 2), np.float32), k=5, batch_size=2, jobs=2)
    assert _alive_workers() == []
