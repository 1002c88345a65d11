"""The core's latent-group machinery against independent transcriptions (numpy / scipy)."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy.special import logsumexp
from scipy.stats import norm

from kvae.core.importance import chunked_log_likelihood, log_importance_weights, log_mean_exp
from kvae.core.terms import LatentGroup, Terms

tfd = tfp.distributions


def normal(loc, scale):
    return tfd.Independent(tfd.Normal(tf.constant(loc, tf.float32), tf.constant(scale, tf.float32)), 1)


def test_log_importance_weights_sum_over_groups():
    rng = np.random.RandomState(0)
    z1, z2 = rng.normal(size=(5, 3)).astype("float32"), rng.normal(size=(5, 2)).astype("float32")
    q1, p1 = (rng.normal(size=(5, 3)), rng.uniform(0.5, 2, (5, 3))), (rng.normal(size=(5, 3)), rng.uniform(0.5, 2, (5, 3)))
    q2, p2 = (rng.normal(size=(5, 2)), rng.uniform(0.5, 2, (5, 2))), (np.zeros((5, 2)), np.ones((5, 2)))
    log_px = rng.normal(size=5).astype("float32")
    groups = [LatentGroup("z1", normal(*q1), z1, normal(*p1)), LatentGroup("z2", normal(*q2), z2, normal(*p2))]
    got = log_importance_weights(tf.constant(log_px), groups).numpy()

    def lp(z, loc, scale):
        return norm.logpdf(z, loc, scale).sum(-1)

    want = log_px + lp(z1, *p1) - lp(z1, *q1) + lp(z2, *p2) - lp(z2, *q2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_terms_sum_the_groups_kl_and_join_their_dimensions():
    kl1, kl2 = tf.constant([1.0, 2.0]), tf.constant([0.5, 0.25])
    d1, d2 = tf.constant([[0.5, 0.5], [1.0, 1.0]]), tf.constant([[0.5], [0.25]])
    terms = Terms(x=None, y=None, px=None, log_px_z=None, codes=tf.constant([3]),
                  groups=(LatentGroup("a", "qa", "za", "pa", kl1, d1), LatentGroup("b", "qb", "zb", "pb", kl2, d2)))
    np.testing.assert_allclose(terms["kl"].numpy(), [1.5, 2.25])
    np.testing.assert_allclose(terms.kl_per_dim.numpy(), [[0.5, 0.5, 0.5], [1.0, 1.0, 0.25]])
    assert terms.z == ("za", "zb") and terms["q"] == ("qa", "qb")
    assert int(terms.codes[0]) == 3 and "codes" in terms
    with pytest.raises(KeyError, match="terms:"):
        terms["nope"]
    one = Terms(x=None, y=None, px=None, log_px_z=None, groups=(LatentGroup("a", "qa", "za", "pa", kl1, None),))
    assert one.z == "za" and one.kl_per_dim is None and one.kl is kl1


def test_importance_sampled_estimate_converges_on_a_two_group_linear_gaussian_hierarchy():
    """z2 ~ N(0, 1), z1 | z2 ~ N(a z2, s1^2), x | z1 ~ N(b z1, s0^2): log p(x) = log N(x; 0, b^2 (a^2 + s1^2) + s0^2).
    A proposal q(z2) q(z1 | z2) that is not the posterior; the estimate approaches log p(x) as k grows."""
    a, s1, b, s0 = 0.8, 0.6, 1.5, 0.5
    x = np.array([-1.0, 0.3, 2.0], np.float32)
    exact = norm.logpdf(x, 0.0, np.sqrt(b ** 2 * (a ** 2 + s1 ** 2) + s0 ** 2))

    def log_weights(xb, yb, k, seed):
        s2, s1_ = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        xb = tf.convert_to_tensor(xb)
        q2 = tfd.Normal(0.3 * xb, 0.9)
        z2 = q2.sample(k, seed=s2)
        q1 = tfd.Normal(0.2 * xb + 0.5 * z2, 0.7)
        z1 = q1.sample(seed=s1_)
        groups = [LatentGroup("top", q2, z2, tfd.Normal(0.0, 1.0)), LatentGroup("bottom", q1, z1, tfd.Normal(a * z2, s1))]
        return log_importance_weights(tfd.Normal(b * z1, s0).log_prob(xb), groups)

    seed = tf.constant([1, 2], tf.int32)
    errors = []
    for k in (1, 100, 200000):
        est = chunked_log_likelihood(log_weights, x, None, k, seed, batch_size=2, chunk_for=lambda b: 50000).numpy()
        errors.append(np.abs(est - exact).max())
    assert errors[-1] < 0.01, errors
    assert errors[-1] < errors[0], errors


def test_log_mean_exp_is_the_numpy_transcription():
    log_w = np.random.RandomState(1).normal(size=(7, 4)).astype("float32") * 30
    np.testing.assert_allclose(log_mean_exp(tf.constant(log_w)).numpy(), logsumexp(log_w, 0) - np.log(7), rtol=1e-6)


def test_model_log_likelihood_uses_the_one_weight_function(monkeypatch):
    """Changing the core's weight function changes a model's log_likelihood and log_prob endpoint."""
    import kvae
    import kvae.core.endpoints as endpoints

    model = kvae.VAE(input_shape=(4, 4, 1), latent_dim=2, hidden=(8,), seed=0)
    x = (np.random.RandomState(0).uniform(size=(3, 4, 4, 1)) > 0.5).astype("float32")
    eps = np.random.RandomState(1).normal(size=(5, 3, 2)).astype("float32")
    before = model.log_prob_from_noise(x, eps).numpy()
    q = model.encode(x)
    z = model.posterior.reparameterize(q, eps)
    manual = (model.decode(z).log_prob(x) + model.prior_distribution().log_prob(z) - q.log_prob(z)).numpy()
    np.testing.assert_allclose(before, logsumexp(manual, 0) - np.log(5), rtol=1e-5)
    monkeypatch.setattr(endpoints, "log_importance_weights", lambda log_px, groups: log_px)
    after = model.log_prob_from_noise(x, eps).numpy()
    assert np.abs(after - before).max() > 1e-3
