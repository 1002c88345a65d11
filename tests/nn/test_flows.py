"""MADE masks, MAF/IAF bijectors, IAF posterior and flow prior: property tests in the style of TFP's bijector tests."""
import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import kvae
from kvae.nn import flows
from kvae.nn import MADE


def _randomise(made, scale=0.5, seed=0):
    """MADE's last layer starts at zero (identity flow); give it weights so dependencies show."""
    rng = np.random.RandomState(seed)
    made.out_kernel.assign(rng.normal(size=made.out_kernel.shape).astype("float32") * scale)
    made.out_bias.assign(rng.normal(size=made.out_bias.shape).astype("float32") * 0.1)
    if made.context_size:
        made.context_out_kernel.assign(rng.normal(size=made.context_out_kernel.shape).astype("float32") * scale)


@pytest.mark.parametrize("order", ["natural", "reversed", "random", [2, 4, 1, 3, 5, 6]])
@pytest.mark.parametrize("context_size", [None, 3])
def test_made_output_depends_only_on_earlier_inputs(order, context_size):
    made = MADE(6, (24, 24), order=order, context_size=context_size, seed=3)
    made.build((None, 6))
    _randomise(made)
    x = tf.random.normal((4, 6), seed=1)
    context = None if context_size is None else tf.random.normal((4, context_size), seed=2)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        if context is not None:
            tape.watch(context)
        shift, log_scale = made(x, context)
    pos = made.order  # 1-based positions
    allowed = pos[None, :] < pos[:, None]  # [output d, input j]: j strictly before d
    for out in (shift, log_scale):
        jac = np.abs(tape.batch_jacobian(out, x).numpy()).max(axis=0)
        assert np.all(jac[~allowed] == 0), "an output sees an input at or after it"
        assert np.all(jac[allowed] > 0), "an allowed dependency is missing"
        if context is not None:
            assert np.all(np.abs(tape.batch_jacobian(out, context).numpy()).max(axis=0) > 0)


@pytest.mark.parametrize("make", [flows.masked_autoregressive_flow, flows.inverse_autoregressive_flow])
def test_flow_log_det_matches_numerical_jacobian_and_inverts(make):
    mades = flows.made_stack(5, 3, (32,))
    for i, m in enumerate(mades):
        m.build((None, 5))
        _randomise(m, 0.3, seed=i)
    bij = make(mades)
    x = tf.random.normal((8, 5), seed=4, dtype=tf.float64)
    x = tf.cast(x, tf.float32)
    xw = tf.identity(x)  # fresh tensor: TFP caches bijector results by tensor identity
    with tf.GradientTape() as tape:
        tape.watch(xw)
        y = bij.forward(xw)
    jac = tape.batch_jacobian(y, xw).numpy().astype(np.float64)
    numeric = np.linalg.slogdet(jac)[1]
    np.testing.assert_allclose(bij.forward_log_det_jacobian(tf.identity(x), event_ndims=1), numeric, atol=2e-4)
    np.testing.assert_allclose(bij.inverse(tf.identity(y)), x, atol=1e-4)
    np.testing.assert_allclose(bij.forward(bij.inverse(tf.identity(y))), y, atol=1e-4)


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_flow_prior_log_prob_is_change_of_variables(kind):
    prior = kvae.parts.priors.FlowPrior(4, num_steps=2, hidden_units=(16,), kind=kind)
    prior.build()
    for i, m in enumerate(prior.mades):
        _randomise(m, 0.3, seed=10 + i)
    dist = prior.distribution()
    z = tf.random.normal((6, 4), seed=5)
    bij = prior.bijector()
    eps = bij.inverse(tf.identity(z))
    base = -0.5 * tf.reduce_sum(eps**2, -1) - 2 * np.log(2 * np.pi)
    expected = base + bij.inverse_log_det_jacobian(tf.identity(z), event_ndims=1)
    np.testing.assert_allclose(dist.log_prob(tf.identity(z)), expected, atol=1e-4)
    # it is a density: integrates to ~1 in 1-D slices is costly; check samples are finite and log_prob too
    s = dist.sample(5, seed=tf.constant([1, 2]))
    assert np.all(np.isfinite(dist.log_prob(tf.identity(s))))


def test_iaf_posterior_density_of_its_samples():
    post = kvae.parts.posteriors.IAFPosterior(3, num_steps=2, hidden_units=(16,), context_size=4)
    h = tf.random.normal((5, 10), seed=6)
    post.build(h.shape)
    for i, m in enumerate(post.mades):
        _randomise(m, 0.3, seed=20 + i)
    params = post(h)
    q = post.distribution(params)
    z = q.sample(seed=tf.constant([3, 4]))
    cached = q.log_prob(z)  # from TFP's bijector cache
    fresh = post.distribution(params).log_prob(tf.identity(z))  # sequential inverse, no cache
    np.testing.assert_allclose(cached, fresh, atol=1e-4)
    # the context changes the flow
    other = post.distribution((params[0], params[1], params[2] + 1.0)).log_prob(tf.identity(z))
    assert np.abs(other - fresh).max() > 1e-3


def test_made_saves_and_exports_masks_as_weights(tmp_path):
    made = MADE(4, (8,), order="random", context_size=2, seed=7)
    inp, ctx = keras.Input((4,)), keras.Input((2,))
    model = keras.Model([inp, ctx], list(made(inp, ctx)))
    path = str(tmp_path / "made.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x, c = np.random.rand(3, 4).astype("float32"), np.random.rand(3, 2).astype("float32")
    for a, b in zip(model([x, c]), loaded([x, c])):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert any("mask" in w.path for w in made.non_trainable_weights)


def _iaf_posterior(latent_dim=4, scale=0.3, seed=30):
    post = kvae.parts.posteriors.IAFPosterior(latent_dim, num_steps=2, hidden_units=(16,), context_size=4)
    h = tf.random.normal((6, 10), seed=seed)
    post.build(h.shape)
    for i, m in enumerate(post.mades):
        _randomise(m, scale, seed=seed + i)
    return post, h


def test_gated_iaf_step_is_the_papers_update():
    """z_t = sigma * z + (1 - sigma) * m with sigma = sigmoid(s + 2), [m, s] = MADE(z; h), log|det| = sum log sigma,
    written out in numpy from the MADE's outputs (Kingma et al. 2016, Algorithm 2)."""
    post, h = _iaf_posterior()
    loc, scale, context = post(h)
    z0 = (loc + scale * tf.random.normal(loc.shape, seed=7)).numpy()
    z, log_det = z0.astype(np.float64), 0.0
    for made in post.mades:  # forward order: MADE 0 first
        m, s = (t.numpy().astype(np.float64) for t in made(tf.constant(z, tf.float32), context))
        sigma = 1.0 / (1.0 + np.exp(-(s + 2.0)))
        z = sigma * z + (1.0 - sigma) * m
        log_det = log_det + np.log(sigma).sum(-1)
    bij = post.distribution((loc, scale, context)).bijector
    np.testing.assert_allclose(bij.forward(tf.constant(z0)).numpy(), z, atol=1e-5)
    np.testing.assert_allclose(bij.forward_log_det_jacobian(tf.constant(z0), event_ndims=1).numpy(), log_det, atol=1e-5)


def test_gated_iaf_density_is_change_of_variables_by_autodiff():
    post, h = _iaf_posterior(seed=40)
    loc, scale, context = post(h)
    q = post.distribution((loc, scale, context))
    z0 = tf.identity(loc + scale * tf.random.normal(loc.shape, seed=8))
    with tf.GradientTape() as tape:
        tape.watch(z0)
        z = q.bijector.forward(z0)
    jac = tape.batch_jacobian(z, z0).numpy().astype(np.float64)
    base = q.distribution.log_prob(z0).numpy()
    expected = base - np.linalg.slogdet(jac)[1]
    np.testing.assert_allclose(post.distribution((loc, scale, context)).log_prob(tf.identity(z)).numpy(), expected,
                               atol=2e-4)  # fresh distribution: the D-pass inverse, no cache
    # at initialisation (MADE output layer zero) a step is z -> sigmoid(2) z: close to the identity, contracting
    fresh = kvae.parts.posteriors.IAFPosterior(4, num_steps=1, hidden_units=(16,), context_size=4)
    fresh.build(h.shape)
    q0 = fresh.distribution(fresh(h))
    x = tf.random.normal((6, 4), seed=9)
    np.testing.assert_allclose(q0.bijector.forward(x).numpy(), x.numpy() / (1 + np.exp(-2.0)), atol=1e-6)


def test_gated_iaf_stays_finite_under_large_weights():
    post, h = _iaf_posterior(scale=30.0, seed=50)
    params = post(h)
    q = post.distribution(params)
    z = q.sample(20, seed=tf.constant([1, 2]))
    assert np.all(np.isfinite(z.numpy()))
    assert np.abs(z.numpy()).max() < 1e4  # a convex combination of z_0 and the MADE's m: never expands
    kl = q.log_prob(z) - tfp.distributions.Normal(0.0, 1.0).log_prob(z).numpy().sum(-1)
    assert np.all(np.isfinite(kl.numpy()))


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_flow_prior_is_a_density_and_from_noise_matches_sample(kind):
    """In 2-D, exp(log_prob) integrates to 1 on a grid (not a restatement of TFP's formula), and the
    exported sampler from_noise(eps) draws from the same distribution as sample()."""
    prior = kvae.parts.priors.FlowPrior(2, num_steps=2, hidden_units=(16,), kind=kind)
    prior.build()
    for i, m in enumerate(prior.mades):
        _randomise(m, 0.4, seed=60 + i)
    dist = prior.distribution()
    step = 0.04
    axis = np.arange(-9.0, 9.0, step) + step / 2
    grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2).astype("float32")
    density = np.exp(np.concatenate([dist.log_prob(tf.constant(grid[i:i + 50000])).numpy()
                                     for i in range(0, len(grid), 50000)]))
    assert abs(density.sum() * step * step - 1.0) < 1e-2
    eps = np.random.default_rng(0).standard_normal((20000, 2)).astype("float32")
    a = prior.from_noise(tf.constant(eps)).numpy()
    b = dist.sample(20000, seed=tf.constant([7, 8])).numpy()
    from scipy.stats import ks_2samp

    for d in range(2):  # two-sample Kolmogorov-Smirnov per coordinate and along a diagonal
        assert ks_2samp(a[:, d], b[:, d]).statistic < 0.025
    assert ks_2samp(a.sum(1), b.sum(1)).statistic < 0.025
    # and the grid density agrees with the samples: P(z_1 < median of z_1) = 0.5
    median = np.median(b[:, 0])
    assert abs(density[grid[:, 0] < median].sum() * step * step - 0.5) < 0.02


def test_mixed_iaf_planar_radial_posterior_density_is_the_change_of_variables():
    """log q(z_K|x) of a posterior mixing gated IAF steps with planar and radial flows equals
    log N(z_0; mu, sigma) - log|det dz_K/dz_0|, the Jacobian taken by autodiff of the whole map."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability as tfp

    import kvae
    from kvae.parts.posteriors import PlanarRadialPosterior

    posterior = PlanarRadialPosterior(3, "iaf,planar,iaf,radial", iaf_hidden=(12,), context_size=4, name="posterior")
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), seed=5, posterior=posterior)
    rng = np.random.RandomState(0)
    for v in model.posterior.trainable_weights:  # move every flow away from its identity (masks stay)
        v.assign(v.numpy() + 0.3 * rng.normal(size=v.shape))
    x = (rng.uniform(size=(5, 8, 8, 1)) > 0.5).astype("float32")
    params = model.encode_params(x)
    q = model.posterior.distribution(params)
    eps = tf.constant(rng.normal(size=(5, 3)).astype("float32"))
    z0 = params[0] + params[1] * eps
    zk = model.posterior.reparameterize(q, eps)
    chain = tfp.bijectors.Chain(list(reversed(model.posterior.bijectors(params[2]))))
    with tf.GradientTape() as tape:
        tape.watch(z0)
        out = chain.forward(z0)
    jac = tape.batch_jacobian(out, z0).numpy()
    np.testing.assert_allclose(out.numpy(), zk.numpy(), atol=1e-5)
    base = tfp.distributions.Normal(params[0], params[1]).log_prob(z0).numpy().sum(-1)
    expected = base - np.log(np.abs(np.linalg.det(jac)))
    np.testing.assert_allclose(q.log_prob(zk).numpy(), expected, rtol=1e-4, atol=1e-4)
