"""The ex-post Gaussian mixture against scikit-learn's and against its own definition (eager)."""
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from kvae.parts.densities import GaussianMixtureDensity


def _codes(n=600, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal([-3.0, 0.0], [0.5, 1.0], size=(n // 2, 2))
    b = rng.normal([2.0, 1.0], [1.0, 0.3], size=(n - n // 2, 2))
    return np.concatenate([a, b])


def test_mixture_density_equals_scikit_learns_and_samples_by_component():
    density = GaussianMixtureDensity(2, num_components=3)
    density.build()
    assert not density.is_fitted
    assert density.get_config()["latent_dim"] == 2 and density.get_config()["num_components"] == 3
    z = _codes()
    gmm = density.fit(z, seed=1)
    assert density.is_fitted
    np.testing.assert_allclose(density(z.astype("float32")).numpy(), gmm.score_samples(z), rtol=1e-4, atol=1e-4)
    # written out: sum_k pi_k N(z; mu_k, Sigma_k)
    manual = np.log(sum(w * multivariate_normal(m, c).pdf(z)
                        for w, m, c in zip(gmm.weights_, gmm.means_, gmm.covariances_)))
    np.testing.assert_allclose(density.distribution().log_prob(z.astype("float32")).numpy(), manual, rtol=1e-4,
                               atol=1e-4)
    # from_noise: component k = #{j : u > cdf_j}, z = mu_k + L_k eps
    cdf = np.cumsum(gmm.weights_)
    u = np.array([0.0, cdf[0] - 1e-4, cdf[0] + 1e-4, cdf[1] + 1e-4, 1.0], np.float32)
    eps = np.random.default_rng(2).standard_normal((5, 2)).astype("float32")
    got = density.from_noise(eps, u).numpy()
    comps = np.minimum((u[:, None] > cdf[None, :]).sum(1), 2)
    want = np.stack([gmm.means_[k] + np.linalg.cholesky(gmm.covariances_[k]) @ e for k, e in zip(comps, eps)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert list(comps) == [0, 0, 1, 2, 2]


def test_mixture_with_fewer_codes_than_components():
    density = GaussianMixtureDensity(2, num_components=10)
    density.build()
    z = _codes(4)
    density.fit(z)
    weights = np.exp(density.logits.numpy())
    assert weights[:4].sum() == pytest.approx(1.0, abs=1e-5) and np.all(weights[4:] < 1e-10)
    np.testing.assert_allclose(density.scale_tril.numpy()[4:], np.tile(np.eye(2), (6, 1, 1)))
    np.testing.assert_allclose(density.means.numpy()[4:], 0.0)


def test_a_kvae_01_mixture_config_loads_under_the_new_argument_name():
    import keras

    density = GaussianMixtureDensity(2, num_components=3, name="density")
    old = keras.saving.serialize_keras_object(density)
    config = old["config"]
    config["n_components"] = config.pop("num_components")  # as kvae 0.1 wrote it
    loaded = keras.saving.deserialize_keras_object(old)
    assert type(loaded) is GaussianMixtureDensity and loaded.num_components == 3 and loaded.n_components == 3
    assert "n_components" not in loaded.get_config() and loaded.get_config()["num_components"] == 3
