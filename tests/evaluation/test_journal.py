"""The evaluation journal: an interrupted importance-sampled NLL continues where it stopped and gives the
uninterrupted result; a journal of another evaluation, or an unreadable or malformed one, is not used."""
import io
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
