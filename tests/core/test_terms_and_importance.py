"""The core's latent-group machinery against independent transcriptions (numpy / scipy)."""
import copy

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy.special import logsumexp
from scipy.stats import norm

from kvae.core.importance import chunked_log_likelihood, log_importance_weights, log_mean_exp
from kvae.core.terms import LatentGroup, Terms
from kvae.errors import ConfigError

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


def test_chunked_log_likelihood_is_the_documented_fold_and_logsumexp():
    """Batches of ``batch_size``, chunks of ``chunk_for(b)`` draws, chunk i of batch ``start`` seeded with
    fold_in(seed, start * 1_000_003 + i), combined as log (1/k) sum_i w_i; checked against numpy on the
    draws the documented seeds give, with labels sliced alongside and progress after each batch."""
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    y = np.array([10.0, 20.0, 30.0, 40.0, 50.0], np.float32)
    seed = tf.constant([3, 4], tf.int32)
    k, calls, progress = 7, [], []

    def draws(m, b, s):
        return 3.0 * tf.random.stateless_normal([m, b], s)

    def log_weights(xb, yb, m, s):
        calls.append((int(m), xb.shape[0], None if yb is None else yb.tolist()))
        return draws(m, xb.shape[0], s) + xb[:, 0] + (0.0 if yb is None else yb)

    got = chunked_log_likelihood(log_weights, x, y, k, seed, batch_size=2, chunk_for=lambda b: b + 1,
                                 progress=lambda done, total: progress.append((done, total))).numpy()
    want = []
    for start, b in ((0, 2), (2, 2), (4, 1)):
        chunk = b + 1
        rows = []
        for i, lo in enumerate(range(0, k, chunk)):
            s = tf.cast(tf.random.experimental.stateless_fold_in(seed, start * 1_000_003 + i), tf.int32)
            rows.append(draws(min(chunk, k - lo), b, s).numpy())
        log_w = np.concatenate(rows, 0) + x[start:start + b, 0] + y[start:start + b]
        want.append(logsumexp(log_w.astype(np.float64), 0) - np.log(k))
    np.testing.assert_allclose(got, np.concatenate(want), rtol=1e-5, atol=1e-5)
    assert got.shape == (5,)
    assert calls == [(3, 2, [10.0, 20.0]), (3, 2, [10.0, 20.0]), (1, 2, [10.0, 20.0]),
                     (3, 2, [30.0, 40.0]), (3, 2, [30.0, 40.0]), (1, 2, [30.0, 40.0]),
                     (2, 1, [50.0]), (2, 1, [50.0]), (2, 1, [50.0]), (1, 1, [50.0])]
    assert progress == [(2, 5), (4, 5), (5, 5)]
    calls.clear()
    no_labels = chunked_log_likelihood(log_weights, x, None, k, seed, batch_size=2, chunk_for=lambda b: b + 1).numpy()
    assert all(c[2] is None for c in calls)
    np.testing.assert_allclose(no_labels, got - y, rtol=1e-5, atol=1e-4)


def test_chunked_log_likelihood_resumes_after_the_values_it_was_given():
    """resume_from keeps the first m values and computes the batches from m on with the seeds an
    uninterrupted call gives them; on_batch sees all values so far after each batch."""
    x = np.arange(14, dtype=np.float32).reshape(7, 2)
    seed = tf.constant([5, 6], tf.int32)
    calls = []

    def log_weights(xb, yb, m, s):
        calls.append(float(xb[0, 0]))
        return 2.0 * tf.random.stateless_normal([m, xb.shape[0]], s) + xb[:, 1]

    seen = []
    full = chunked_log_likelihood(log_weights, x, None, 5, seed, 2, lambda b: 3,
                                  on_batch=lambda v: seen.append(v.copy())).numpy()
    assert [len(v) for v in seen] == [2, 4, 6, 7]
    np.testing.assert_array_equal(seen[-1], full)
    np.testing.assert_array_equal(seen[1], full[:4])
    calls.clear()
    kept = np.array([-1.0, -2.0, -3.0, -4.0], np.float32)  # not what the batches give: kept as they are
    resumed = chunked_log_likelihood(log_weights, x, None, 5, seed, 2, lambda b: 3, resume_from=kept).numpy()
    assert calls == [8.0, 8.0, 12.0, 12.0]  # only the batches at 4 and 6, two chunks each
    np.testing.assert_array_equal(resumed[:4], kept)
    np.testing.assert_array_equal(resumed[4:], full[4:])
    done = chunked_log_likelihood(log_weights, x, None, 5, seed, 2, lambda b: 3, resume_from=full).numpy()
    np.testing.assert_array_equal(done, full)
    with pytest.raises(ConfigError, match="multiple of batch_size=2"):
        chunked_log_likelihood(log_weights, x, None, 5, seed, 2, lambda b: 3, resume_from=full[:3])


def test_log_mean_exp_along_another_axis():
    log_w = np.random.RandomState(2).normal(size=(3, 6)).astype("float32") * 10
    np.testing.assert_allclose(log_mean_exp(tf.constant(log_w), axis=1).numpy(), logsumexp(log_w, 1) - np.log(6),
                               rtol=1e-6)
    np.testing.assert_allclose(log_mean_exp(tf.constant(log_w.astype(np.float64))).numpy(),
                               logsumexp(log_w.astype(np.float64), 0) - np.log(3), rtol=1e-12)


def test_terms_is_a_read_only_mapping_of_fields_derived_values_and_extras():
    kl1, kl2, kl3 = tf.constant([1.0, 2.0]), tf.constant([0.5, 0.25]), tf.constant([4.0, 8.0])
    groups = (LatentGroup("a", "qa", "za", "pa", kl1, None), LatentGroup("b", "qb", "zb", "pb", kl2, None),
              LatentGroup("c", "qc", "zc", "pc", kl3, None))
    decode = object()
    terms = Terms("x", "y", list(groups), "px", "lp", seed="s", training=True, decode_params=decode, codes="k")
    assert (terms.x, terms.y, terms.px, terms.log_px_z, terms.seed, terms.training) == ("x", "y", "px", "lp", "s", True)
    assert terms.decode_params is decode and terms.encoder_loss is None and terms.groups == groups
    assert terms["encoder_loss"] is None and terms["training"] is True and terms["codes"] == "k"
    np.testing.assert_allclose(terms.kl.numpy(), [5.5, 10.25])
    assert terms.prior == ("pa", "pb", "pc") and terms.q == ("qa", "qb", "qc") and terms.kl_per_dim is None
    assert list(terms) == list(Terms.FIELDS) + list(Terms.DERIVED) + ["codes"]
    assert len(terms) == len(Terms.FIELDS) + len(Terms.DERIVED) + 1 == 15
    assert dict(terms)["z"] == ("za", "zb", "zc")
    with pytest.raises(AttributeError, match=r"Terms has no field 'nope'; fields: \['codes', 'decode_params'"):
        terms.nope
    with pytest.raises(KeyError, match=r"'nope' is not a term; terms: \['codes', 'decode_params'"):
        terms["nope"]
    with pytest.raises(TypeError, match=r"extra terms \['encoder_loss', 'kl'\] shadow Terms fields"):
        Terms(None, None, groups, None, None, encoder_loss=1, kl=2, fine=3)
    one = Terms(None, None, groups[:1], None, None)
    assert (one.q, one.prior, len(one), list(one)[-1]) == ("qa", "pa", 14, "prior")
    assert one.y is None and one.seed is None and one.training is False and one.decode_params is None
    assert repr(groups[0]) == "LatentGroup('a', z=None)"
    per_dim = tf.constant([[1.0, 2.0]])
    single = Terms(None, None, (LatentGroup("a", "qa", "za", "pa", kl1, per_dim),), None, None, codes="k")
    assert single.kl_per_dim is per_dim  # the group's own
    with pytest.raises(AttributeError) as err:
        Terms.__new__(Terms).codes
    assert err.value.args == ("codes",)
    clone = copy.copy(single)  # copy builds the object before __init__: unknown names are AttributeErrors
    assert clone.codes == "k" and clone.kl_per_dim is per_dim
