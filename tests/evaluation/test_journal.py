"""The evaluation journal: an interrupted importance-sampled NLL continues where it stopped and gives the
uninterrupted result; a journal of another evaluation, or an unreadable or malformed one, is not used."""
import io
import json
import os

import numpy as np
import pytest

import kvae
from kvae.evaluation.journal import NLLJournal, sha256_of_array
from kvae.evaluation.metrics import importance_sampled_nll


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def model_and_data():
    model = kvae.VAE(input_shape=(4, 4, 1), latent_dim=2, hidden=(8,), seed=0)
    x = (np.random.RandomState(0).uniform(size=(7, 4, 4, 1)) > 0.5).astype("float32")
    return model, x


def _journal(tmp_path, x, k=20, seed=3, batch_size=2, stream=None):
    key = {"model": "m", "x_sha256": sha256_of_array(x), "n": len(x), "k": k, "seed": seed, "batch_size": batch_size}
    return NLLJournal(str(tmp_path / "evaluate.journal.npz"), key, stream=stream)


def test_an_interrupted_evaluation_continues_to_the_uninterrupted_result(model_and_data, tmp_path):
    model, x = model_and_data
    want = importance_sampled_nll(model, x, k=20, batch_size=2, seed=3)

    def stop_after_two_batches(done, total):
        if done >= 4:
            raise Interrupt

    stream = io.StringIO()
    with pytest.raises(Interrupt):
        importance_sampled_nll(model, x, k=20, batch_size=2, seed=3, progress=stop_after_two_batches,
                               journal=_journal(tmp_path, x, stream=stream))
    kept = _journal(tmp_path, x).load()
    np.testing.assert_array_equal(-kept, want[:4])  # the two finished batches were kept
    got = importance_sampled_nll(model, x, k=20, batch_size=2, seed=3, journal=_journal(tmp_path, x, stream=stream))
    np.testing.assert_array_equal(got, want)
    assert "continuing the evaluation after example 4" in stream.getvalue()
    assert not os.path.exists(tmp_path / "evaluate.journal.npz")  # removed once complete


def test_the_kept_values_are_used_not_recomputed(model_and_data, tmp_path):
    model, x = model_and_data
    journal = _journal(tmp_path, x)
    journal.save(np.array([1.0, 2.0], np.float32))
    got = importance_sampled_nll(model, x, k=20, batch_size=2, seed=3, journal=_journal(tmp_path, x))
    np.testing.assert_array_equal(got[:2], [-1.0, -2.0])
    np.testing.assert_array_equal(got[2:], importance_sampled_nll(model, x, k=20, batch_size=2, seed=3)[2:])


@pytest.mark.parametrize("change", [{"k": 21}, {"seed": 4}, {"batch_size": 3}])
def test_a_journal_of_another_evaluation_is_not_used(model_and_data, tmp_path, change):
    model, x = model_and_data
    _journal(tmp_path, x).save(np.array([1.0, 2.0], np.float32))
    stream = io.StringIO()
    args = {"k": 20, "seed": 3, "batch_size": 2, **change}
    other = _journal(tmp_path, x, stream=stream, **args)
    assert other.load() is None
    assert "journal of another evaluation" in stream.getvalue()
    got = importance_sampled_nll(model, x, journal=other, **args)
    np.testing.assert_array_equal(got, importance_sampled_nll(model, x, **args))


def test_other_examples_are_another_evaluation(model_and_data, tmp_path):
    _, x = model_and_data
    _journal(tmp_path, x).save(np.array([1.0, 2.0], np.float32))
    changed = x.copy()
    changed[6, 0, 0, 0] = 1 - changed[6, 0, 0, 0]  # one pixel of the last example
    assert _journal(tmp_path, changed, stream=io.StringIO()).load() is None
    assert _journal(tmp_path, x).load() is not None


@pytest.mark.parametrize("values, why", [
    (np.array([1.0, np.nan], np.float32), "malformed values"),
    (np.array([1.0, 2.0, 3.0], np.float32), "malformed values"),  # not a whole number of batches
    (np.ones(8, np.float32), "malformed values"),  # more values than examples
    (np.array([1.0, 2.0], np.float64), "malformed values"),
    (np.ones((2, 1), np.float32), "malformed values"),
])
def test_malformed_values_are_not_used(model_and_data, tmp_path, values, why):
    _, x = model_and_data
    journal = _journal(tmp_path, x)
    np.savez(journal.path, key=np.array(journal.key), values=values)
    stream = io.StringIO()
    assert _journal(tmp_path, x, stream=stream).load() is None
    assert why in stream.getvalue()


def test_an_unreadable_journal_is_not_used(model_and_data, tmp_path):
    _, x = model_and_data
    (tmp_path / "evaluate.journal.npz").write_bytes(b"not a journal")
    stream = io.StringIO()
    assert _journal(tmp_path, x, stream=stream).load() is None
    assert "not a readable journal" in stream.getvalue()


def test_a_journal_that_cannot_be_written_does_not_stop_the_evaluation(model_and_data, tmp_path):
    model, x = model_and_data
    stream = io.StringIO()
    journal = NLLJournal(str(tmp_path / "missing" / "evaluate.journal.npz"), {"k": 20}, stream=stream)
    got = importance_sampled_nll(model, x, k=20, batch_size=2, seed=3, journal=journal)
    np.testing.assert_array_equal(got, importance_sampled_nll(model, x, k=20, batch_size=2, seed=3))
    assert stream.getvalue().count("cannot write the evaluation journal") == 1


def test_a_journal_that_cannot_be_removed_does_not_lose_the_result(model_and_data, tmp_path, monkeypatch):
    """A read-only run directory (os.remove refused): the complete result is returned and the journal,
    left in place, is said to be."""
    model, x = model_and_data
    _journal(tmp_path, x).save(np.array([1.0, 2.0], np.float32))

    def refused(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "remove", refused)
    stream = io.StringIO()
    got = importance_sampled_nll(model, x, k=20, batch_size=2, seed=3, journal=_journal(tmp_path, x, stream=stream))
    np.testing.assert_array_equal(got[:2], [-1.0, -2.0])
    assert "cannot remove the evaluation journal" in stream.getvalue()
    assert str(tmp_path / "evaluate.journal.npz") in stream.getvalue()


def test_fresh_does_not_use_a_journal_it_could_not_remove(model_and_data, tmp_path):
    model, x = model_and_data
    _journal(tmp_path, x).save(np.array([1.0, 2.0], np.float32))
    fresh = NLLJournal(_journal(tmp_path, x).path, json.loads(_journal(tmp_path, x).key), stream=None, fresh=True)
    assert fresh.load() is None
    got = importance_sampled_nll(model, x, k=20, batch_size=2, seed=3, journal=fresh)
    np.testing.assert_array_equal(got, importance_sampled_nll(model, x, k=20, batch_size=2, seed=3))


def test_a_scalar_in_place_of_the_values_is_malformed(model_and_data, tmp_path):
    _, x = model_and_data
    journal = _journal(tmp_path, x)
    np.savez(journal.path, key=np.array(journal.key), values=np.float32(1.0))
    stream = io.StringIO()
    assert _journal(tmp_path, x, stream=stream).load() is None
    assert "malformed values" in stream.getvalue()


def test_a_write_leaves_another_processs_temporary_file_alone(model_and_data, tmp_path):
    """Two evaluations of one run directory: a write does not truncate, rename or remove the
    temporary file another process is writing."""
    _, x = model_and_data
    journal = _journal(tmp_path, x)
    theirs = tmp_path / "evaluate.journal.npz.tmp"
    theirs.write_bytes(b"half of another process's journal")
    journal.save(np.array([1.0, 2.0], np.float32))
    assert theirs.read_bytes() == b"half of another process's journal"
    np.testing.assert_array_equal(_journal(tmp_path, x).load(), [1.0, 2.0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluate.journal.npz", "evaluate.journal.npz.tmp"]


def test_the_draws_per_chunk_are_part_of_the_key(model_and_data, tmp_path, monkeypatch):
    """The chunking chooses the draws (another max_elements gives other values), so a journal of
    another chunking is another evaluation."""
    model, x = model_and_data
    a = model.log_likelihood(x, k=20, batch_size=2, seed=3).numpy()
    b = model.log_likelihood(x, k=20, batch_size=2, seed=3, max_elements=2 * 16 * 5).numpy()
    assert model.draws_per_chunk(2, 20) == 20 and model.draws_per_chunk(2, 20, 2 * 16 * 5) == 5
    assert not np.allclose(a, b)
    for_run = [NLLJournal.for_run(str(tmp_path), model, x, None, 20, 3, 2, chunks, stream=io.StringIO())
               for chunks in ([20, 20], [5, 5])]
    for_run[0].save(a[:2])
    assert for_run[1].load() is None and "journal of another evaluation" in for_run[1].stream.getvalue()
    np.testing.assert_array_equal(NLLJournal.for_run(str(tmp_path), model, x, None, 20, 3, 2, [20, 20]).load(), a[:2])
    # by default the model's draws per chunk at the default max_elements (those kvae evaluate uses)
    assert NLLJournal.for_run(str(tmp_path), model, x, None, 20, 3, 2).key == for_run[0].key
    assert NLLJournal.for_run(str(tmp_path), model, x, None, 20, 3, 2).key != for_run[1].key
    monkeypatch.setattr(model, "draws_per_chunk", lambda b, k, max_elements=2**23: 100 * b + k)
    for n, batch, want in [(7, 2, [220, 120]), (6, 2, [220, 220]), (3, 5, [320, 320])]:  # full batch, last batch
        key = json.loads(NLLJournal.for_run(str(tmp_path), model, x[:n], None, 20, 3, batch).key)
        assert key["draws_per_chunk"] == want, (n, batch)


def test_another_kvae_or_tensorflow_version_is_another_evaluation(model_and_data, tmp_path, monkeypatch):
    import tensorflow as tf

    model, x = model_and_data

    def journal():
        return NLLJournal.for_run(str(tmp_path), model, x, None, 20, 3, 2, [20, 20], stream=None)

    journal().save(np.array([1.0, 2.0], np.float32))
    assert journal().load() is not None
    for module in (kvae, tf):
        with monkeypatch.context() as m:
            m.setattr(module, "__version__", module.__version__ + ".post1")
            assert journal().load() is None


def test_the_same_model_saved_again_continues_and_other_weights_do_not(model_and_data, tmp_path):
    """The key is the model's class, config and weights, not its file's bytes: a model saved again (a
    pretrained model fetched again: other timestamps in the .keras file) continues the journal; one
    weight changed, or another config, is another evaluation."""
    import keras

    model, x = model_and_data
    model(x[:1])
    paths = [str(tmp_path / f"m{i}.keras") for i in (1, 2)]
    for path in paths:
        model.save(path)
    loaded = [keras.models.load_model(p, compile=False) for p in paths]

    def journal(m):
        return NLLJournal.for_run(str(tmp_path), m, x, None, 20, 3, 2, [20, 20], stream=None)

    journal(loaded[0]).save(np.array([1.0, 2.0], np.float32))
    np.testing.assert_array_equal(journal(loaded[1]).load(), [1.0, 2.0])
    kernel = next(w for w in loaded[1].weights if "kernel" in w.path)
    kernel.assign(kernel + 1e-6)
    assert journal(loaded[1]).load() is None
    def same(**options):  # a model of the saved one's name and weights (the name is left out of the key)
        m = kvae.VAE(input_shape=(4, 4, 1), latent_dim=2, hidden=(8,), seed=0, name=loaded[0].name, **options)
        m(x[:1])
        m.set_weights(loaded[0].get_weights())
        return m

    assert journal(same()).load() is not None
    assert journal(same(beta=2.0)).load() is None  # another config
    swapped = same()
    biases = [w for w in swapped.weights if tuple(w.shape) == (8,)]  # the encoder's and the decoder's
    assert len(biases) == 2
    biases[0].assign(np.arange(8.0)), biases[1].assign(-np.arange(8.0))
    journal(swapped).save(np.array([3.0, 4.0], np.float32))
    assert journal(swapped).load() is not None
    biases[0].assign(-np.arange(8.0)), biases[1].assign(np.arange(8.0))
    assert journal(swapped).load() is None  # two weights of one shape swapped: another model


def test_config_values_json_cannot_write_are_keyed_by_their_whole_value():
    """A config holding a numpy array (JSON cannot write it): two arrays that differ only in the middle
    are two models (their reprs, which elide the middle of a large array, are equal), and the identity
    of equal ones is the same in another instance; an object Keras cannot serialise is keyed by its repr."""
    import keras

    from kvae.evaluation.journal import model_identity

    class Holding(keras.Model):
        def __init__(self, table, **kwargs):
            super().__init__(**kwargs)
            self.table = table

        def get_config(self):
            return {"table": self.table}

    a, b = np.zeros(2000), np.zeros(2000)
    b[1000] = 1.0
    assert repr(a) == repr(b)
    assert model_identity(Holding(a))["config_sha256"] != model_identity(Holding(b))["config_sha256"]
    assert model_identity(Holding(a))["config_sha256"] == model_identity(Holding(a.copy()))["config_sha256"]

    class Opaque:
        def __repr__(self):
            return "Opaque()"

    assert model_identity(Holding(Opaque()))["config_sha256"] == model_identity(Holding(Opaque()))["config_sha256"]


def test_messages_go_to_the_stderr_of_the_moment(model_and_data, tmp_path):
    """The default stream is sys.stderr when the message is written, not when the module was imported
    (a closed or replaced stream raised 'I/O operation on closed file' in kvae evaluate under pytest)."""
    import contextlib

    _, x = model_and_data
    journal = _journal(tmp_path, x)
    journal.save(np.array([1.0, 2.0], np.float32))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        NLLJournal(journal.path, json.loads(journal.key)).load()
    assert f"continuing the evaluation after example 2 ({journal.path})" in err.getvalue()


def test_a_conditional_model_continues_to_the_uninterrupted_result(tmp_path):
    """Labels go with their examples: a conditional model stopped after the second of batches 2, 2, 1
    continues to the uninterrupted values (and the labels are part of the key)."""
    model = kvae.ConditionalVAE(input_shape=(4, 4, 1), num_classes=3, latent_dim=2, hidden=(8,), seed=1)
    x = (np.random.RandomState(2).uniform(size=(5, 4, 4, 1)) > 0.5).astype("float32")
    y, other_y = np.array([0, 1, 2, 1, 0]), np.array([2, 2, 0, 0, 1])
    want = importance_sampled_nll(model, x, y, k=20, batch_size=2, seed=3)
    assert not np.allclose(want, importance_sampled_nll(model, x, other_y, k=20, batch_size=2, seed=3))
    key = {"x_sha256": sha256_of_array(x), "y_sha256": sha256_of_array(y), "n": 5, "batch_size": 2}
    journal = str(tmp_path / "evaluate.journal.npz")

    def stop(done, total):
        if done >= 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        importance_sampled_nll(model, x, y, k=20, batch_size=2, seed=3, progress=stop,
                               journal=NLLJournal(journal, key, stream=None))
    assert len(NLLJournal(journal, key, stream=None).load()) == 4
    other = {**key, "y_sha256": sha256_of_array(other_y)}
    assert NLLJournal(journal, other, stream=None).load() is None
    got = importance_sampled_nll(model, x, y, k=20, batch_size=2, seed=3, journal=NLLJournal(journal, key, stream=None))
    np.testing.assert_array_equal(got, want)


def test_a_complete_journal_is_the_result(model_and_data, tmp_path):
    """Killed after the last batch's write, before the journal's removal: the rerun computes nothing and
    returns the kept values (the last batch, 1 example, included)."""
    model, x = model_and_data
    want = importance_sampled_nll(model, x, k=20, batch_size=2, seed=3)
    _journal(tmp_path, x).save(-want)
    calls = []
    got = importance_sampled_nll(model, x, k=20, batch_size=2, seed=3, progress=lambda *a: calls.append(a),
                                 journal=_journal(tmp_path, x))
    np.testing.assert_array_equal(got, want)
    assert calls == [] and not os.path.exists(tmp_path / "evaluate.journal.npz")


def test_an_interrupt_during_a_write_keeps_the_previous_journal(model_and_data, tmp_path, monkeypatch):
    """KeyboardInterrupt inside the write of batch 2: the journal of batch 1 stays, whole, and no
    temporary file is left."""
    _, x = model_and_data
    journal = _journal(tmp_path, x)
    journal.save(np.array([1.0, 2.0], np.float32))
    savez = np.savez

    def interrupted(f, **arrays):
        f.write(b"PK\x03\x04 a part")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        journal.save(np.array([1.0, 2.0, 3.0, 4.0], np.float32))
    monkeypatch.setattr(np, "savez", savez)
    assert [p.name for p in tmp_path.iterdir()] == ["evaluate.journal.npz"]
    np.testing.assert_array_equal(_journal(tmp_path, x).load(), [1.0, 2.0])


def test_a_run_directory_is_held_by_one_evaluation(tmp_path, monkeypatch):
    """hold_run_dir: a descriptor for the first holder, None while it holds, a descriptor again once
    released; a file system that cannot lock a directory (EBADF, as NFS) is 'nothing to lock' (-1), not
    'held by another'."""
    import errno
    import fcntl

    from kvae.evaluation.journal import hold_run_dir

    first = hold_run_dir(str(tmp_path))
    assert first >= 0 and hold_run_dir(str(tmp_path)) is None
    os.close(first)
    again = hold_run_dir(str(tmp_path))
    assert again >= 0
    os.close(again)

    def cannot_lock(fd, op):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(fcntl, "flock", cannot_lock)
    assert hold_run_dir(str(tmp_path)) == -1
    assert hold_run_dir(str(tmp_path / "missing")) == -1
