"""The Poincaré ball's maths and the wrapped normal (Mathieu et al. 2019), against numpy and
numerical integration."""
import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.models.poincare import geometry as poincare


def _np_mobius(x, y, c):
    xy, x2, y2 = (x * y).sum(-1, keepdims=True), (x * x).sum(-1, keepdims=True), (y * y).sum(-1, keepdims=True)
    return ((1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y) / (1 + 2 * c * xy + c * c * x2 * y2)


@pytest.mark.parametrize("c", [1.0, 0.5])
def test_mobius_addition_maps_and_distance_against_numpy(c):
    rng = np.random.RandomState(0)
    s = np.sqrt(c)
    x = rng.uniform(-0.5, 0.5, size=(6, 3)) / s
    y = rng.uniform(-0.5, 0.5, size=(6, 3)) / s
    np.testing.assert_allclose(poincare.mobius_add(tf.constant(x, tf.float32), tf.constant(y, tf.float32), c),
                               _np_mobius(x, y, c), rtol=1e-5, atol=1e-6)
    v = rng.normal(size=(6, 3))
    r = np.linalg.norm(v, axis=-1, keepdims=True)
    e = np.tanh(s * r) * v / (s * r)
    np.testing.assert_allclose(poincare.expmap0(tf.constant(v, tf.float32), c), e, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(poincare.logmap0(tf.constant(e, tf.float32), c), v, rtol=1e-3, atol=1e-4)
    want = 2 / s * np.arctanh(s * np.linalg.norm(_np_mobius(-x, y, c), axis=-1))
    np.testing.assert_allclose(poincare.distance(tf.constant(x, tf.float32), tf.constant(y, tf.float32), c), want,
                               rtol=1e-4)
    # the distance from the origin to exp_0(v) is 2 ||v|| (the metric at 0 is 4 times Euclidean)
    np.testing.assert_allclose(poincare.distance(tf.zeros([6, 3]), tf.constant(e, tf.float32), c), 2 * r[:, 0],
                               rtol=1e-3)


@pytest.mark.parametrize("c", [1.0, 0.5])
def test_wrap_log_det_equals_the_autodiff_jacobian(c):
    rng = np.random.RandomState(1)
    loc = tf.constant(rng.uniform(-0.4, 0.4, size=(5, 3)) / np.sqrt(c), tf.float32)
    v = tf.constant(rng.normal(size=(5, 3)) * 0.8, tf.float32)
    bij = poincare.PoincareWrap(loc, c)
    with tf.GradientTape() as tape:
        tape.watch(v)
        z = bij.forward(v)
    jac = tape.batch_jacobian(z, v).numpy().astype(np.float64)
    want = np.linalg.slogdet(jac)[1]
    np.testing.assert_allclose(bij.forward_log_det_jacobian(v, event_ndims=1), want, atol=2e-4)
    np.testing.assert_allclose(bij.inverse(z), v, atol=2e-4)
    np.testing.assert_allclose(bij.inverse_log_det_jacobian(z, event_ndims=1), -want, atol=2e-3)


@pytest.mark.parametrize("loc, scale, c", [((0.3, -0.2), (0.5, 0.4), 1.0), ((0.0, 0.0), (0.6, 0.6), 1.0),
                                           ((0.5, 0.4), (0.3, 0.5), 0.5)])
def test_wrapped_normal_density_integrates_to_one_on_the_disc(loc, scale, c):
    """Riemann sum of exp(log p(z)) over a 1201 x 1201 grid on the disc of radius 1/sqrt(c)."""
    radius = 1.0 / np.sqrt(c)
    g = np.linspace(-radius, radius, 1201)
    xx, yy = np.meshgrid(g, g)
    pts = np.stack([xx.ravel(), yy.ravel()], -1)
    inside = (pts ** 2).sum(-1) < (radius * (1 - 1e-4)) ** 2
    dist = poincare.wrapped_normal(tf.constant(loc, tf.float32), tf.constant(scale, tf.float32), c)
    logp = dist.log_prob(tf.constant(pts[inside], tf.float32)).numpy().astype(np.float64)
    total = np.exp(logp).sum() * (g[1] - g[0]) ** 2
    assert total == pytest.approx(1.0, abs=0.01)
    # samples: the mean distance to loc equals the distance integrated against the density
    z = dist.sample(20000, seed=[1, 2])
    d_samples = poincare.distance(tf.constant(loc, tf.float32), z, c).numpy().mean()
    d_grid = (poincare.distance(tf.constant(loc, tf.float32), tf.constant(pts[inside], tf.float32), c).numpy()
              * np.exp(logp)).sum() * (g[1] - g[0]) ** 2
    assert d_samples == pytest.approx(d_grid, rel=0.02)


def test_poincare_vae_trains_and_its_prior_samples_lie_in_the_ball():
    x, _ = kvae.data.load("digits", "train").arrays()
    model = kvae.PoincareVAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(64,), curvature=1.0, seed=0)
    model.compile(optimizer="adam")
    history = model.fit(x, batch_size=64, epochs=3, verbose=0).history
    assert history["loss"][-1] < history["loss"][0] and np.all(np.isfinite(history["kl"]))
    z = model.prior_distribution().sample(500, seed=[3, 4]).numpy()
    assert np.all((z ** 2).sum(-1) < 1.0)
    q = model.encode(x[:10])
    zq = model.sample_posterior(q, tf.constant([5, 6], tf.int32)).numpy()
    assert np.all((zq ** 2).sum(-1) < 1.0)
    ll = model.log_likelihood(x[:20], k=50).numpy()
    assert np.all(np.isfinite(ll)) and np.all(ll < 0)


def test_log_sinhc_against_numpy_across_its_branches():
    x = np.array([0.0, 1e-4, 5e-3, 0.0101, 0.0999, 0.1001, 0.5, 3.0, 40.0, 200.0])
    want = np.array([0.0] + [np.log(np.sinh(v) / v) for v in x[1:-1]] + [200.0 - np.log(2.0) - np.log(200.0)])
    np.testing.assert_allclose(poincare.log_sinhc(tf.constant(x, tf.float32)), want, rtol=1e-5, atol=1e-6)  # nats: float32 cancellation near 0.1


def test_wrap_log_det_is_accurate_near_the_boundary():
    """At |mu| = 0.95 and |v| up to 4 (|z| within 1e-3 of the boundary) the float32 log-det agrees with
    the float64 numpy formula (d - 1) log(sinh(2r)/(2r)) + d log(1 - |z|^2) to 2e-4 nats."""
    rng = np.random.RandomState(3)
    mu = rng.normal(size=(6, 3))
    mu = 0.95 * mu / np.linalg.norm(mu, axis=-1, keepdims=True)
    v = rng.normal(size=(6, 3))
    v = v / np.linalg.norm(v, axis=-1, keepdims=True) * np.linspace(0.5, 4.0, 6)[:, None]
    r = np.linalg.norm(v, axis=-1)
    y = np.tanh(r)[:, None] * v / r[:, None]
    z = _np_mobius(mu, y, 1.0)
    want = 2 * np.log(np.sinh(2 * r) / (2 * r)) + 3 * np.log(1 - (z ** 2).sum(-1))
    got = poincare.PoincareWrap(tf.constant(mu, tf.float32)).forward_log_det_jacobian(tf.constant(v, tf.float32),
                                                                                       event_ndims=1)
    np.testing.assert_allclose(got.numpy(), want, atol=2e-4)


# --- Mathieu et al.'s convention, against a numpy transcription of pvae's WrappedNormal (with geoopt's
# PoincareBall maths, which pvae's manifold inherits): rsample z = expmap_mu(transp_{0->mu}(v / lambda_0)),
# log_prob(z) = log N(lambda_0 transp_{mu->0}(logmap_mu(z)); 0, sigma^2) - (d-1) log(sinh(s d)/(s d)),
# the latter w.r.t. the Riemannian measure: kvae's Lebesgue density adds d log lambda_z.

def _np_lambda(x, c):
    return 2.0 / (1.0 - c * (x * x).sum(-1, keepdims=True))


def _np_gyration(u, v, w, c):
    u2, v2 = (u * u).sum(-1, keepdims=True), (v * v).sum(-1, keepdims=True)
    uv, uw, vw = (u * v).sum(-1, keepdims=True), (u * w).sum(-1, keepdims=True), (v * w).sum(-1, keepdims=True)
    a = -c * c * uw * v2 + c * vw + 2 * c * c * uv * vw
    b = -c * c * vw * u2 - c * uw
    d = 1 + 2 * c * uv + c * c * u2 * v2
    return w + 2 * (a * u + b * v) / d


def _np_transp(x, y, v, c):
    return _np_gyration(y, -x, v, c) * _np_lambda(x, c) / _np_lambda(y, c)


def _np_expmap(x, u, c):
    s, un = np.sqrt(c), np.linalg.norm(u, axis=-1, keepdims=True)
    return _np_mobius(x, np.tanh(s * _np_lambda(x, c) * un / 2) * u / (s * un), c)


def _np_logmap(x, y, c):
    s, sub = np.sqrt(c), _np_mobius(-x, y, c)
    sn = np.linalg.norm(sub, axis=-1, keepdims=True)
    return 2 / s / _np_lambda(x, c) * np.arctanh(s * sn) * sub / sn


def _np_pvae_rsample(loc, scale, eps, c):
    zero = np.zeros_like(loc)
    v = scale * eps / _np_lambda(zero, c)
    return _np_expmap(loc, _np_transp(zero, loc, v, c), c)


def _np_pvae_log_prob(loc, scale, z, c):
    zero, s, d = np.zeros_like(loc), np.sqrt(c), loc.shape[-1]
    u = _np_transp(loc, zero, _np_logmap(loc, z, c), c) * _np_lambda(zero, c)
    norm_pdf = (-0.5 * (u / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)).sum(-1)
    dist = 2 / s * np.arctanh(s * np.linalg.norm(_np_mobius(-loc, z, c), axis=-1))
    return norm_pdf - (d - 1) * np.log(np.sinh(s * dist) / (s * dist))


@pytest.mark.parametrize("c", [1.0, 0.5])
def test_wrapped_normal_is_pvaes_sampler_and_density(c):
    rng = np.random.RandomState(7)
    s = np.sqrt(c)
    loc = rng.uniform(-0.45, 0.45, size=(8, 3)) / s
    scale = rng.uniform(0.2, 1.2, size=(8, 3))
    eps = rng.normal(size=(8, 3))
    post = poincare.WrappedNormalPosterior(3, curvature=c)
    q = post.distribution((tf.constant(loc, tf.float32), tf.constant(scale, tf.float32)))
    z = post.reparameterize(q, tf.constant(eps, tf.float32)).numpy().astype(np.float64)
    np.testing.assert_allclose(z, _np_pvae_rsample(loc, scale, eps, c), atol=2e-5)
    want = _np_pvae_log_prob(loc, scale, z, c) + 3 * np.log(_np_lambda(z, c)[:, 0])
    np.testing.assert_allclose(q.log_prob(tf.constant(z, tf.float32)).numpy(), want, atol=5e-4)
    prior = poincare.WrappedNormalPrior(3, curvature=c, scale=0.7)
    zp = prior.from_noise(tf.constant(eps, tf.float32)).numpy().astype(np.float64)
    np.testing.assert_allclose(zp, _np_pvae_rsample(np.zeros((8, 3)), 0.7, eps, c), atol=2e-5)
    want_p = _np_pvae_log_prob(np.zeros((8, 3)), 0.7, zp, c) + 3 * np.log(_np_lambda(zp, c)[:, 0])
    np.testing.assert_allclose(prior.distribution().log_prob(tf.constant(zp, tf.float32)).numpy(), want_p, atol=5e-4)


def test_default_prior_mean_distance_to_the_origin_is_pvaes():
    """At prior_scale=1 in 2-D, d(0, z) = ||v||, v ~ N(0, I): Rayleigh mean sqrt(pi/2) = 1.2533 (kvae 0.1: 2.5066)."""
    model = kvae.PoincareVAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=0)
    z = model.prior_distribution().sample(40000, seed=[5, 6])
    mean = poincare.distance(tf.zeros([1, 2]), z).numpy().mean()
    assert mean == pytest.approx(np.sqrt(np.pi / 2), abs=0.02)
    eps = tf.constant(np.random.RandomState(2).normal(size=(40000, 2)), tf.float32)
    from_noise = poincare.distance(tf.zeros([1, 2]), model.prior.from_noise(eps)).numpy().mean()
    assert from_noise == pytest.approx(np.sqrt(np.pi / 2), abs=0.02)
    legacy = kvae.PoincareVAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=0, legacy_scale=True)
    old = poincare.distance(tf.zeros([1, 2]), legacy.prior.from_noise(eps)).numpy().mean()
    assert old == pytest.approx(2 * np.sqrt(np.pi / 2), abs=0.04)


def test_configs_without_the_convention_key_load_with_kvae_0_1s():
    import keras

    for part in (poincare.WrappedNormalPosterior(2, name="posterior"), poincare.WrappedNormalPrior(2, name="prior")):
        config = part.get_config()
        assert config["legacy_scale"] is False
        assert type(part).from_config(config).legacy_scale is False
        del config["legacy_scale"]  # as kvae 0.1 wrote it
        assert type(part).from_config(config).legacy_scale is True
    model = kvae.PoincareVAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=0)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert clone.prior.legacy_scale is False and clone.posterior.legacy_scale is False
    assert clone.get_config()["legacy_scale"] is False
