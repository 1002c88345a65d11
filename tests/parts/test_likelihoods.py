"""Likelihood heads against numpy / scipy transcriptions: the Dense head (spatial and flattened), Bernoulli
and Gaussian densities, the PixelCNN density's broadcasting and the MS-SSIM score (small eager layers:
these are the tests benchmarks/mutation_testing.py runs on kvae/parts/likelihoods.py)."""
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import expit
from scipy.stats import norm

import kvae
from kvae.parts import likelihoods as L


def _dense(layer, h):
    kernel, bias = (w.numpy() for w in layer.weights)
    return h @ kernel + bias


def _bern(logits, x):
    logits = logits.astype(np.float64)
    return x * -np.logaddexp(0, -logits) + (1 - x) * -np.logaddexp(0, logits)


def _x(shape, seed=0):
    return (np.random.RandomState(seed).uniform(size=shape) > 0.5).astype("float32")


def test_bernoulli_log_prob_is_stable_at_large_logits():
    logits = np.array([-60.0, -20.0, -1.5, 0.0, 0.7, 25.0, 80.0], np.float32)
    for x in (np.zeros(7, np.int32), np.ones(7, np.int32), np.array([0, 1, 0, 1, 1, 0, 1])):
        got = L.bernoulli_log_prob(tf.constant(logits), tf.constant(x)).numpy()
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, _bern(logits, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("features_shape", [(3, 5), (3, 2, 3, 6)])  # flattened and spatial (1x1) heads
def test_bernoulli_head(features_shape):
    head = L.BernoulliLikelihood((2, 3, 1))
    h = np.random.RandomState(1).normal(size=features_shape).astype("float64")
    (logits,) = head(h)
    assert logits.dtype == tf.float32 and tuple(logits.shape) == (3, 2, 3, 1)
    flat = h.reshape(3, -1) if len(features_shape) == 2 else h
    want = _dense(head.dense, flat).reshape(3, 2, 3, 1)
    np.testing.assert_allclose(logits.numpy(), want, rtol=1e-5, atol=1e-6)
    x = _x((3, 2, 3, 1))
    p = head.distribution((logits,))
    assert p.event_shape == [2, 3, 1]
    np.testing.assert_allclose(p.log_prob(x).numpy(), _bern(want, x).sum((1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(head.images((logits,)).numpy(), expit(want), rtol=1e-5)
    named = head.named_params((logits,))
    assert sorted(named) == ["logits", "probs"] and named["logits"] is logits
    np.testing.assert_allclose(named["probs"].numpy(), expit(want), rtol=1e-5)
    assert p.sample(seed=(1, 2)).dtype == tf.float32
    k_logits = np.stack([want, -want])  # [k, B, H, W, C]: decoded importance samples
    pk = head.distribution((tf.constant(k_logits, tf.float32),))
    assert pk.batch_shape == [2, 3] and pk.event_shape == [2, 3, 1]
    np.testing.assert_allclose(pk.log_prob(x).numpy(), _bern(k_logits, x).sum((2, 3, 4)), rtol=1e-5)
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")  # kvae's --precision mixed_float16
    try:
        mixed = L.BernoulliLikelihood((2, 3, 1))
        assert mixed(h)[0].dtype == tf.float32  # parameters stay float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("features_shape", [(3, 5), (3, 2, 3, 6)])
def test_gaussian_heads(features_shape):
    h = np.random.RandomState(2).normal(size=features_shape).astype("float32")
    flat = h.reshape(3, -1) if len(features_shape) == 2 else h
    x = np.random.RandomState(3).normal(size=(3, 2, 3, 2)).astype("float32")

    predicted = L.GaussianLikelihood((2, 3, 2), scale="predicted", min_scale=0.05)
    loc, scale = predicted(h)
    out = _dense(predicted.dense, flat).reshape(3, 2, 3, 4)
    np.testing.assert_allclose(loc.numpy(), out[..., :2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scale.numpy(), np.logaddexp(0, out[..., 2:]) + 0.05, rtol=1e-5)
    (joined,) = predicted.raw_params(h, split=False)
    np.testing.assert_allclose(joined.numpy(), out, rtol=1e-5, atol=1e-6)
    p = predicted.distribution((loc, scale))
    assert p.event_shape == [2, 3, 2]
    np.testing.assert_allclose(p.log_prob(x).numpy(),
                               norm.logpdf(x, out[..., :2], np.logaddexp(0, out[..., 2:]) + 0.05).sum((1, 2, 3)),
                               rtol=1e-5)
    assert predicted.named_params((loc, scale))["scale"] is scale
    pk = predicted.distribution((tf.stack([loc, loc + 1.0]), tf.stack([scale, scale])))
    assert pk.batch_shape == [2, 3] and pk.event_shape == [2, 3, 2]

    learned = L.GaussianLikelihood((2, 3, 2), scale="learned", min_scale=0.05)
    learned(h)
    raw = np.random.RandomState(4).normal(size=(2, 3, 2)).astype("float32")
    learned.raw_scale.assign(raw)
    loc, scale = learned(h)
    np.testing.assert_allclose(loc.numpy(), _dense(learned.dense, flat).reshape(3, 2, 3, 2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scale.numpy(), np.broadcast_to(np.logaddexp(0, raw + 0.5413) + 0.05, (3, 2, 3, 2)),
                               rtol=1e-5)
    learned.raw_scale.assign(np.zeros_like(raw))
    np.testing.assert_allclose(learned(h)[1].numpy(), 1.05, rtol=1e-4)  # softplus(0.5413) = 1

    fixed = L.GaussianLikelihood((2, 3, 2), scale=0.3)
    loc, scale = fixed(h)
    np.testing.assert_allclose(scale.numpy(), np.full((3, 2, 3, 2), 0.3), rtol=1e-6)
    np.testing.assert_allclose(fixed.images((loc, scale)).numpy(), loc.numpy())
    with pytest.raises(kvae.errors.ConfigError, match="scale must be a positive number, 'learned' or 'predicted'"):
        L.GaussianLikelihood((2, 2, 1), scale=-1.0)


def test_pixelcnn_density_is_the_network_s_bernoulli_and_broadcasts_over_draws():
    head = L.PixelCNNLikelihood((4, 4, 1), num_layers=2, kernel_size=3, filters=4, cond_channels=2)
    h = np.random.RandomState(5).normal(size=(3, 6)).astype("float32")
    (cond,) = head(h)
    assert tuple(cond.shape) == (3, 4, 4, 2)
    np.testing.assert_allclose(cond.numpy(), _dense(head.dense, h).reshape(3, 4, 4, 2), rtol=1e-5, atol=1e-6)
    p = head.distribution((cond,))
    assert p.event_shape == [4, 4, 1] and p.batch_shape == [3] and p.conditioning is not None
    x = _x((3, 4, 4, 1), seed=6)
    logits = head.network(tf.constant(x), cond).numpy()
    np.testing.assert_allclose(p.log_prob(x).numpy(), _bern(logits, x).sum((1, 2, 3)), rtol=1e-5)
    draws = _x((2, 3, 4, 4, 1), seed=7)  # [k, B, H, W, C] against a batch of 3
    got = p.log_prob(draws).numpy()
    assert got.shape == (2, 3)
    for k in range(2):
        want = _bern(head.network(tf.constant(draws[k]), cond).numpy(), draws[k]).sum((1, 2, 3))
        np.testing.assert_allclose(got[k], want, rtol=1e-5)
    two = L.PixelCNNLikelihood((4, 4, 2), num_layers=2, kernel_size=3, filters=4, cond_channels=2)
    (cond2,) = two(h)
    draws2 = _x((2, 3, 4, 4, 2), seed=8)
    got2 = two.distribution((cond2,)).log_prob(draws2).numpy()
    for k in range(2):
        want = _bern(two.network(tf.constant(draws2[k]), cond2).numpy(), draws2[k]).sum((1, 2, 3))
        np.testing.assert_allclose(got2[k], want, rtol=1e-5)
    with pytest.raises(kvae.errors.ConfigError, match=r"needs image data \(H, W, C\), got \(16,\)"):
        L.PixelCNNLikelihood((16,))


@pytest.mark.parametrize("positive", ["relu", "shift"])
def test_msssim_reconstruction_score(positive):
    head = L.MSSSIMLikelihood((16, 16, 1), power_factors=(0.4, 0.6), filter_size=3, filter_sigma=1.2,
                              positive=positive)
    h = np.random.RandomState(8).normal(size=(2, 5)).astype("float32")
    (logits,) = head(h)
    q = head.distribution((logits,))
    assert q.event_shape == [16, 16, 1] and q.batch_shape == [2]
    mean = expit(logits.numpy())
    np.testing.assert_allclose(q.mean().numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(head.images((logits,)).numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(q.sample(3).numpy(), np.broadcast_to(mean, (3, 2, 16, 16, 1)), rtol=1e-5)
    x = np.random.RandomState(9).uniform(size=(2, 16, 16, 1)).astype("float32")
    if positive == "relu":  # TensorFlow's own MS-SSIM
        want = tf.image.ssim_multiscale(tf.constant(x), tf.constant(mean, tf.float32), 1.0, power_factors=(0.4, 0.6),
                                        filter_size=3, filter_sigma=1.2).numpy()
    else:
        from kvae.nn.ssim import ms_ssim

        want = ms_ssim(tf.constant(x), tf.constant(mean, tf.float32), (0.4, 0.6), 3, 1.2, positive="shift").numpy()
    np.testing.assert_allclose(q.log_prob(x).numpy(), -(1.0 - want), rtol=1e-4, atol=1e-5)
    named = head.named_params((logits,))
    np.testing.assert_allclose(named["probs"].numpy(), mean, rtol=1e-5)
    assert named["logits"] is logits
