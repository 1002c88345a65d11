"""The hyperspherical VAE's parts (Davidson et al. 2018): the reparameterised vMF sampler against
the vMF's known moments (scipy's Bessel functions) and TFP's own sampler, its gradient against a
numerical derivative, and the KL to the uniform prior against the closed form."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import stats
from scipy.special import gammaln, ive

import kvae
from kvae.models.svae import hyperspherical as hs

tfd = tfp.distributions


def _mean_cosine(kappa, m):
    """E[mu . z] = I_{m/2}(kappa) / I_{m/2-1}(kappa) under vMF(mu, kappa) on S^{m-1}."""
    return ive(m / 2, kappa) / ive(m / 2 - 1, kappa)


@pytest.mark.parametrize("m", [3, 10, 40])
@pytest.mark.parametrize("kappa", [0.5, 5.0, 50.0, 500.0])
def test_cosine_sampler_mean_and_gradient_match_the_bessel_ratio(m, kappa):
    """With stratified u = (i + 1/2)/N the sample mean of w is the integral of the inverse CDF: it equals
    A_m(kappa) = I_{m/2}/I_{m/2-1}, and its derivative in kappa (implicit reparameterisation through the
    tabulated CDF) equals the central difference of A_m."""
    n = 20000
    u = tf.constant(((np.arange(n) + 0.5) / n)[:, None], tf.float32)
    k = tf.Variable([kappa], dtype=tf.float32)
    with tf.GradientTape() as tape:
        mean = tf.reduce_mean(hs.vmf_cosine(u, k, m))
    grad = float(tape.gradient(mean, k)[0])
    want = _mean_cosine(kappa, m)
    assert float(mean) == pytest.approx(want, abs=2e-4 + 1e-3 * (1 - want))
    h = 1e-3 * kappa
    slope = (_mean_cosine(kappa + h, m) - _mean_cosine(kappa - h, m)) / (2 * h)
    assert grad == pytest.approx(slope, rel=0.03, abs=1e-7)


def test_samples_match_tfps_sampler_and_lie_on_the_sphere():
    """Full draws z = H (w, sqrt(1-w^2) v): unit norm, mu . z equals the drawn w, and the cosines follow
    the same law as TFP's (rejection) sampler (two-sample Kolmogorov-Smirnov), the mean vector A mu."""
    rng = np.random.RandomState(0)
    m, n = 6, 20000
    mu = tf.math.l2_normalize(tf.constant(rng.normal(size=(1, m)), tf.float32), -1)
    kappa = tf.constant([8.0])
    z = hs.vmf_from_noise(mu, kappa, tf.constant(rng.normal(size=(n, 1, m)), tf.float32)).numpy()[:, 0]
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, atol=1e-5)
    theirs = tfd.VonMisesFisher(mu[0], 8.0).sample(n, seed=[3, 4]).numpy()
    ours_w, their_w = z @ mu.numpy()[0], theirs @ mu.numpy()[0]
    assert stats.ks_2samp(ours_w, their_w).pvalue > 0.001
    np.testing.assert_allclose(z.mean(0), _mean_cosine(8.0, m) * mu.numpy()[0], atol=0.015)


def test_householder_reflection_maps_e1_to_mu_and_is_orthogonal():
    rng = np.random.RandomState(1)
    mu = tf.math.l2_normalize(tf.constant(rng.normal(size=(4, 5)), tf.float32), -1)
    e1 = tf.one_hot(tf.zeros(4, tf.int32), 5)
    np.testing.assert_allclose(hs.householder_to(mu, e1), mu, atol=1e-6)
    x = tf.constant(rng.normal(size=(4, 5)), tf.float32)
    np.testing.assert_allclose(np.linalg.norm(hs.householder_to(mu, x), axis=-1), np.linalg.norm(x, axis=-1),
                               rtol=1e-5)
    np.testing.assert_allclose(hs.householder_to(e1, x), x, atol=1e-6)  # mu = e_1: the identity


@pytest.mark.parametrize("m", [3, 10])
def test_kl_to_the_uniform_prior_is_the_closed_form(m):
    """KL(vMF(mu, kappa) || U(S^{m-1})) = kappa A_m(kappa) + log C_m(kappa) + log |S^{m-1}|,
    log C_m = (m/2 - 1) log kappa - (m/2) log 2 pi - log I_{m/2-1}(kappa), written with scipy."""
    model = kvae.SVAE(input_shape=(8, 8, 1), latent_dim=m, hidden=(16,), seed=0)
    kappa = np.array([0.7, 3.0, 40.0, 300.0])
    mu = np.tile(np.eye(m)[:1], (4, 1))
    q = model.posterior.distribution((tf.constant(mu, tf.float32), tf.constant(kappa, tf.float32)))
    log_i = np.log(ive(m / 2 - 1, kappa)) + kappa
    log_c = (m / 2 - 1) * np.log(kappa) - (m / 2) * np.log(2 * np.pi) - log_i
    log_area = np.log(2) + (m / 2) * np.log(np.pi) - gammaln(m / 2)
    want = kappa * _mean_cosine(kappa, m) + log_c + log_area
    np.testing.assert_allclose(model.kl_divergence(q).numpy(), want, rtol=1e-4, atol=1e-5)


def test_svae_trains_with_gradients_through_the_sample():
    x, _ = kvae.data.load("digits", "train").arrays()
    model = kvae.SVAE(input_shape=(8, 8, 1), latent_dim=5, hidden=(64,), seed=0)
    params = model.encode_params(x[:32])
    with tf.GradientTape() as tape:
        terms = model.compute_terms(x[:32], training=True, seed=tf.constant([1, 2], tf.int32))
        loss = tf.reduce_mean(model.per_example_loss(terms, 1.0)[0])
    grads = tape.gradient(loss, model.posterior.trainable_variables)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    assert params[1].shape == (32,) and float(tf.reduce_min(params[1])) > 1.0
    model.compile(optimizer="adam")
    history = model.fit(x, batch_size=64, epochs=3, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    with pytest.raises(ValueError, match="latent_dim >= 3"):
        kvae.SVAE(input_shape=(8, 8, 1), latent_dim=2)


def test_log_bessel_series_against_scipy():
    for v in (0.5, 4.0, 19.0):
        x = np.array([1e-3, 0.3, 2.0, 40.0, 700.0, 4999.0])
        got = hs.log_bessel_ive(v, tf.constant(x, tf.float32)).numpy()
        np.testing.assert_allclose(got, np.log(ive(v, x)), rtol=1e-7, atol=1e-6)  # float64: exact to its rounding


def test_exportable_log_densities_equal_tfps():
    rng = np.random.RandomState(2)
    mu = tf.math.l2_normalize(tf.constant(rng.normal(size=(5, 7)), tf.float32), -1)
    kappa = tf.constant([0.5, 3.0, 30.0, 300.0, 3000.0])
    z = tfd.VonMisesFisher(mu, kappa).sample(3, seed=[5, 6])
    np.testing.assert_allclose(hs.VonMisesFisher(mu, kappa).log_prob(z), tfd.VonMisesFisher(mu, kappa).log_prob(z),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(hs.SphericalUniform(7).log_prob(z), tfd.SphericalUniform(7).log_prob(z), rtol=1e-6)
