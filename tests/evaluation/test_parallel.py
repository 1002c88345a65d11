"""The NLL in several processes: the batches' values are one process's (same positional seeds), handed back
in order to progress, on_batch and a resume."""
import numpy as np
import pytest

import kvae
from kvae.errors import ConfigError
from kvae.evaluation.metrics import importance_sampled_nll
from kvae.evaluation.parallel import parallel_log_likelihood


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
    with pytest.raises(ConfigError, match="not a file"):
        parallel_log_likelihood(path + ".missing", x, jobs=2)
    with pytest.raises(ConfigError, match="needs model_file"):
        importance_sampled_nll(model, x, k=5, jobs=2)
