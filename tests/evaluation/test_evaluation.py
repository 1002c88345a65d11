"""Evaluation formulas against independent computations: active units with Monte-Carlo means."""
import numpy as np
import tensorflow as tf

import kvae
from kvae.evaluation import metrics as evaluation


def test_active_units_subtract_monte_carlo_noise():
    rng = np.random.default_rng(0)
    n, d, s = 2000, 6, 16
    true_means = np.zeros((n, d))
    true_means[:, :2] = rng.normal(size=(n, 2)) * np.array([1.0, 0.2])  # Var 1 and 0.04: active; 4 dims: not
    draws = true_means[None] + rng.normal(size=(s, n, d))  # Var_q = 1: MC variance of a mean = 1/16 > 0.01
    mean = draws.mean(0)
    noise = draws.var(0, ddof=1) / s
    naive, _ = evaluation.active_units(mean)
    count, variances = evaluation.active_units(mean, mean_noise=noise)
    assert naive == d  # what a 16-sample mean reported before: every unit "active"
    assert count == 2
    np.testing.assert_allclose(variances, true_means.var(0), atol=0.01)


def _collapsed_iaf_model():
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=8, hidden=(32,), posterior="iaf", seed=0)
    for w in model.encoder_network.weights + model.posterior.weights:
        if w.trainable:
            w.assign(tf.zeros_like(w))
    return model


def test_collapsed_iaf_posterior_has_no_active_units(digits):
    model = _collapsed_iaf_model()
    x, y = digits["valid"].arrays()
    result = evaluation.evaluate(model, x, k=10)
    assert result["active_units"] == 0
    assert evaluation.diagnostics(model, x)["active_units"] == 0


def test_iaf_posterior_that_uses_x_has_active_units(digits):
    model = _collapsed_iaf_model()
    x, _ = digits["valid"].arrays()
    loc_kernel = model.posterior.gaussian.weights[0]
    k = np.zeros(loc_kernel.shape, np.float32)
    k[:, :3] = np.random.default_rng(1).normal(size=(k.shape[0], 3)) * 3.0
    loc_kernel.assign(k)
    first = model.encoder_network.weights[0]
    first.assign(np.random.default_rng(2).normal(size=first.shape).astype("float32") * 0.3)
    means, noise = model.posterior_means(x, return_noise=True)
    count, variances = evaluation.active_units(means, mean_noise=noise)
    assert 3 <= count <= 8 and variances[:3].min() > 0.01


def test_active_units_threshold_is_strict_and_noise_is_per_dimension():
    z = np.tile(np.array([[0.125, -0.125, 0.0]]), (4, 1)) * np.array([[1], [-1], [1], [-1]])
    # variances 0.015625, 0.015625, 0 (exact in binary): "> threshold" counts none at threshold 0.015625
    count, variances = evaluation.active_units(z, threshold=0.015625)
    assert count == 0 and variances[0] == 0.015625
    assert evaluation.active_units(z, threshold=0.0156)[0] == 2
    noise = np.tile(np.array([[0.0, 0.0155, 0.0]]), (4, 1))  # Monte-Carlo noise in dimension 1 only
    count, variances = evaluation.active_units(z, threshold=0.01, mean_noise=noise)
    assert count == 1
    np.testing.assert_allclose(variances, [0.015625, 0.015625 - 0.0155, 0.0])


def test_active_units_compute_in_float64():
    """float32 codes and noise with large values: the variances are computed in float64 (a float32
    computation rounds 0.24999975 up to 0.25 and a noise mean of 1e6 + 0.0005 down to 1e6)."""
    alternating = np.where(np.arange(1001) % 2 == 0, 1.0, -1.0)
    z = (1e6 + 0.5 * alternating).astype(np.float32)[:, None]
    assert evaluation.active_units(z, threshold=0.2499999)[0] == 0  # exact variance 0.24999975
    codes = (1000.0 * alternating)[:, None]
    noise = (1e6 + 0.5 * alternating).astype(np.float32)[:, None]
    exact = codes.var(0)[0] - noise.astype(np.float64).mean()
    count, variances = evaluation.active_units(codes, threshold=exact + 2e-4, mean_noise=noise)
    assert count == 0 and abs(variances[0] - exact) < 1e-6


class _TwoGroups:
    """q(z2|x) = N(a x, 1), q(z1|x, z2) = N(2 z2, 0.1^2) per dimension (a = 1 or 0): E_q[z1|x] = 2 a x,
    while one draw's conditional mean 2 z2 varies across x by Var = 4 even for a = 0."""

    conditional = False

    def __init__(self, a):
        self.a = a

    def latent_groups(self, x, y=None, training=False, seed=None):
        import tensorflow_probability as tfp

        from kvae.core.terms import LatentGroup

        tfd = tfp.distributions
        eps = tf.random.stateless_normal([2, tf.shape(x)[0], 3], seed)
        top = self.a * x
        z2 = top + eps[0]
        z1 = 2.0 * z2 + 0.1 * eps[1]
        zeros = tf.zeros([tf.shape(x)[0]])
        return (LatentGroup("z2", tfd.Independent(tfd.Normal(top, 1.0), 1), z2, None, kl=zeros),
                LatentGroup("z1", tfd.Independent(tfd.Normal(2.0 * z2, 0.1), 1), z1, None, kl=zeros))

    def compute_terms(self, x, y=None, training=False, seed=None):
        from kvae.core.terms import Terms

        return Terms(x=x, y=y, groups=self.latent_groups(x, y, seed=seed), px=None,
                     log_px_z=tf.zeros([tf.shape(x)[0]]), seed=seed)


def test_a_lower_groups_posterior_mean_averages_over_the_groups_above():
    """E_q[z1|x] of a hierarchy's lower group is E over q(z2|x) of its conditional mean: with a top group
    that ignores x it is 0 for every x (no active units), though one draw's conditional mean varies by 4;
    with a top group that follows x it is 2x (all active).  The estimate's noise is Var/S = 4/S."""
    x = np.random.RandomState(0).standard_normal((2000, 3)).astype(np.float32)
    for a, want in ((0.0, {"z2": 0, "z1": 0}), (1.0, {"z2": 3, "z1": 3})):
        stats = evaluation.posterior_statistics(_TwoGroups(a), x, seed=1, mean_draws=64)
        assert evaluation.per_group(stats)["active_units_per_group"] == want
        means, noise = stats["z_mean"], stats["z_mean_noise"]
        assert np.abs(noise[:, :3]).max() < 1e-10  # the top group: the same closed-form mean in every draw
        np.testing.assert_allclose(noise[:, 3:].mean(), 4.0 / 64, rtol=0.05)
        np.testing.assert_allclose(means[:, 3:], 2 * a * x, atol=5 * 2 / 8)  # 5 standard errors of 2/sqrt(64)
        assert np.abs(means[:, 3:] - 2 * a * x).std() < 1.1 * 2 / 8
    one_draw = evaluation.posterior_statistics(_TwoGroups(0.0), x, seed=1, mean_draws=1)
    assert evaluation.per_group(one_draw)["active_units_per_group"] == {"z2": 0, "z1": 3}  # the noise counted


class _NoClosedFormMean:
    """A distribution whose mean is Monte-Carlo only (as a flow's): ``mean()`` raises, ``sample`` draws."""

    def __init__(self, q):
        self.q = q

    def mean(self):
        raise NotImplementedError

    def sample(self, n, seed=None):
        return self.q.sample(n, seed=seed)


class _TwoFlowGroups(_TwoGroups):
    """q(z2|x) = N(a x, 1), q(z1|x, z2) = N(b z2, sigma^2), both with Monte-Carlo means of 64 draws; counts
    its latent_groups calls (Python runs them only while tracing)."""

    b, sigma = 0.5, 4.0

    def __init__(self, a):
        super().__init__(a)
        self.calls = 0

    def latent_groups(self, x, y=None, training=False, seed=None):
        import tensorflow_probability as tfp

        from kvae.core.terms import LatentGroup

        self.calls += 1
        tfd = tfp.distributions
        eps = tf.random.stateless_normal([2, tf.shape(x)[0], 3], seed)
        z2 = self.a * x + eps[0]
        zeros = tf.zeros([tf.shape(x)[0]])
        q2 = tfd.Independent(tfd.Normal(self.a * x, 1.0), 1)
        q1 = tfd.Independent(tfd.Normal(self.b * z2, self.sigma), 1)
        return (LatentGroup("z2", _NoClosedFormMean(q2), z2, None, kl=zeros),
                LatentGroup("z1", _NoClosedFormMean(q1), self.b * z2 + self.sigma * eps[1], None, kl=zeros))


def test_the_mean_of_monte_carlo_conditional_means_counts_both_noises():
    """With flow-like groups each draw's conditional mean has its own Monte-Carlo noise (sigma^2/64) on
    top of the groups above's (b^2 Var z2): z_mean_noise is their sum over S (top group: 1/64/S), the
    top group that ignores x has no active units, the lower group follows b a x; traced once per batch
    shape (2300 examples in batches of 500 and a last of 300: two traces of 1 + (S - 1) latent_groups calls)."""
    x = np.random.RandomState(1).standard_normal((2300, 3)).astype(np.float32)
    S, b, sigma = 16, _TwoFlowGroups.b, _TwoFlowGroups.sigma
    for a, want in ((0.0, {"z2": 0, "z1": 0}), (1.0, {"z2": 3, "z1": 3})):
        model = _TwoFlowGroups(a)
        stats = evaluation.posterior_statistics(model, x, seed=2, mean_draws=S)
        assert model.calls == 2 * S
        noise = stats["z_mean_noise"]
        np.testing.assert_allclose(noise[:, :3].mean(), 1.0 / 64 / S, rtol=0.05)
        np.testing.assert_allclose(noise[:, 3:].mean(), (b ** 2 + sigma ** 2 / 64) / S, rtol=0.05)
        errors = stats["z_mean"][:, 3:] - b * a * x
        assert abs(errors.var() / ((b ** 2 + sigma ** 2 / 64) / S) - 1) < 0.05  # the noise is the estimate's
        assert evaluation.per_group(stats)["active_units_per_group"] == want


def test_a_hierarchys_other_statistics_are_the_first_draws():
    """A ladder VAE: with 16 draws of the groups above, log_px_z, kl, kl_per_group and kl_per_dim are
    exactly those of one draw (the first), and so is the top group's closed-form mean; only the lower
    group's mean and its noise change."""
    model = kvae.LadderVAE(input_shape=(8, 8, 1), groups=2, channels=8, latent_channels=2, blocks=1, seed=0)
    x = (np.random.RandomState(3).uniform(size=(30, 8, 8, 1)) > 0.5).astype("float32")
    one = evaluation.posterior_statistics(model, x, seed=4, batch_size=20, mean_draws=1)
    many = evaluation.posterior_statistics(model, x, seed=4, batch_size=20, mean_draws=16)
    for key in ("log_px_z", "kl", "kl_per_group", "kl_per_dim", "elbo"):
        if one[key] is not None:
            np.testing.assert_array_equal(many[key], one[key], err_msg=key)
    assert many["group_names"] == ["z2", "z1"]  # the top group first
    top, lower = many["group_dims"]
    assert np.abs(many["z_mean_noise"][:, top]).max() < 1e-10 and np.abs(one["z_mean_noise"]).max() == 0
    np.testing.assert_allclose(many["z_mean"][:, top], one["z_mean"][:, top], rtol=0, atol=1e-6)
    assert np.abs(many["z_mean"][:, lower] - one["z_mean"][:, lower]).max() > 1e-3
    assert many["z_mean_noise"][:, lower].min() > 0
