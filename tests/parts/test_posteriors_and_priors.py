"""Posterior heads and priors against numpy / scipy transcriptions of their definitions (small eager
layers: these are the tests benchmarks/mutation_testing.py runs on kvae/parts/posteriors.py and priors.py)."""
import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy.special import logsumexp
from scipy.stats import norm

import kvae
from kvae.nn.flows import GatedIAFStep
from kvae.nn.planar_radial import PlanarFlow, RadialFlow
from kvae.parts import posteriors as P
from kvae.parts import priors as Pr

tfb, tfd = tfp.bijectors, tfp.distributions


def _h(b=4, f=5, seed=0):
    return np.random.RandomState(seed).normal(size=(b, f)).astype("float64")


def _dense(layer, h):
    kernel, bias = (w.numpy() for w in layer.weights)
    return h @ kernel + bias


def _softplus(a):
    return np.logaddexp(0.0, a)


def test_gaussian_posterior_head_density_and_reparameterisation():
    head = P.GaussianPosterior(3, min_scale=0.25)
    h = _h()
    loc, scale = head(h)
    assert loc.dtype == tf.float32 and scale.dtype == tf.float32
    raw = _dense(head.dense, h)
    np.testing.assert_allclose(loc.numpy(), raw[:, :3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scale.numpy(), _softplus(raw[:, 3:]) + 0.25, rtol=1e-5)
    q = head.distribution((loc, scale))
    z = np.random.RandomState(1).normal(size=(4, 3)).astype("float32")
    assert q.event_shape == [3] and q.batch_shape == [4]
    np.testing.assert_allclose(q.log_prob(z).numpy(), norm.logpdf(z, loc.numpy(), scale.numpy()).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(head.reparameterize(q, z).numpy(), loc.numpy() + scale.numpy() * z, rtol=1e-6)
    assert isinstance(q.distribution, tfd.Normal)
    keras.mixed_precision.set_global_policy("mixed_float16")  # kvae's --precision mixed_float16
    try:
        assert all(p.dtype == tf.float32 for p in P.GaussianPosterior(3)(h))  # parameters stay float32
        assert P.DeterministicPosterior(2)(h)[0].dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_deterministic_posterior_is_the_code():
    head = P.DeterministicPosterior(2)
    h = _h()
    (z,) = head(h)
    assert z.dtype == tf.float32
    np.testing.assert_allclose(z.numpy(), _dense(head.dense, h), rtol=1e-5, atol=1e-6)
    q = head.distribution((z,))
    assert q.event_shape == [2]
    np.testing.assert_allclose(q.sample().numpy(), z.numpy())
    eps = np.full((4, 2), 7.0, np.float32)
    eps[0] = 0.0
    np.testing.assert_allclose(head.reparameterize(q, eps).numpy(), z.numpy(), rtol=1e-6)
    assert P.DeterministicPosterior(2, dtype="mixed_float16")(h)[0].dtype == tf.float32


def _flow_posterior(flows):
    head = P.FlowPosterior(3, flows, iaf_hidden=(6,), context_size=4, forget_bias=1.5, min_scale=0.1)
    head.build((None, 5))
    rng = np.random.RandomState(2)
    for w in head.trainable_weights:  # weights far from the identity flows they start at (not the MADEs' masks)
        w.assign(rng.normal(0, 0.5, w.shape).astype("float32"))
    return head


def test_flow_posterior_applies_its_steps_in_order_with_the_change_of_variables():
    head = _flow_posterior("iaf,planar,radial")
    h = _h(seed=3)
    loc, scale, context = head(h)
    raw = _dense(head.gaussian.dense, h)
    np.testing.assert_allclose(loc.numpy(), raw[:, :3], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scale.numpy(), _softplus(raw[:, 3:]) + 0.1, rtol=1e-5)
    c = _dense(head.context, h)
    np.testing.assert_allclose(context.numpy(), np.where(c > 0, c, np.expm1(np.minimum(c, 0))), rtol=1e-5, atol=1e-6)
    steps = head.bijectors(context)
    assert [type(s) for s in steps] == [GatedIAFStep, PlanarFlow, RadialFlow]
    assert steps[0].made is head.mades[0] and steps[0].context is context and steps[0].forget_bias == 1.5
    assert steps[0].name == "gated_iaf_0"
    w, u, b = head.flow_params[1]
    assert steps[1].w is w and steps[1].u is u and steps[1].b is b
    assert steps[2].z0 is head.flow_params[2][0] and steps[2].beta_raw is head.flow_params[2][2]
    q = head.distribution((loc, scale, context))
    eps = np.random.RandomState(4).normal(size=(4, 3)).astype("float32")
    z = head.reparameterize(q, eps)
    z0 = loc.numpy() + scale.numpy() * eps
    want, logdet, current = z0, 0.0, tf.constant(z0)
    for step in steps:
        logdet = logdet + step.forward_log_det_jacobian(current, event_ndims=1).numpy()
        current = step.forward(current)
    np.testing.assert_allclose(z.numpy(), current.numpy(), rtol=1e-5, atol=1e-5)
    assert np.abs(z.numpy() - want).max() > 0.1
    log_q = norm.logpdf(z0, loc.numpy(), scale.numpy()).sum(-1) - logdet
    np.testing.assert_allclose(q.log_prob(z).numpy(), log_q, rtol=1e-4, atol=1e-4)
    plain = _flow_posterior(["planar", " radial", ""])
    assert plain.flows == ["planar", "radial"] and len(plain(h)) == 2
    q2 = plain.distribution(plain(h))
    assert [type(s) for s in plain.bijectors()] == [PlanarFlow, RadialFlow]
    assert q2.event_shape == [3]


def test_named_flow_posteriors():
    assert P.planar_posterior(2).flows == ["planar"] * 4 and P.radial_posterior(2).flows == ["radial"] * 4
    assert P.IAFPosterior(2, num_steps=3).flows == ["iaf"] * 3
    with pytest.raises(kvae.errors.ConfigError, match="flows must be a comma-separated list"):
        P.FlowPosterior(2, "iaf,nope")


def test_standard_normal_prior():
    prior = Pr.StandardNormalPrior(3)
    z = np.random.RandomState(5).normal(size=(4, 3))
    np.testing.assert_allclose(prior(tf.constant(z, tf.float32)).numpy(), norm.logpdf(z).sum(-1), rtol=1e-5)
    p = prior.distribution()
    assert p.event_shape == [3] and p.batch_shape == [] and p.dtype == tf.float32
    eps = prior.from_noise(z)
    assert eps.dtype == tf.float32
    np.testing.assert_allclose(eps.numpy(), z, rtol=1e-6)


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_flow_prior_is_the_change_of_variables_of_its_kind(kind):
    prior = Pr.FlowPrior(2, num_steps=2, hidden_units=(8,), kind=kind)
    prior.build()
    rng = np.random.RandomState(6)
    for w in prior.trainable_weights:  # (not the MADEs' masks)
        w.assign(rng.normal(0, 0.4, w.shape).astype("float32"))
    bijector = prior.bijector()
    assert len(bijector.bijectors) == 2
    assert [b.name for b in bijector.bijectors] == [f"{kind}_1", f"{kind}_0"]
    assert all(("MaskedAutoregressiveFlow" in type(b).__name__) == (kind == "maf") for b in bijector.bijectors)
    eps = rng.normal(size=(5, 2))
    z = prior.from_noise(eps)
    assert z.dtype == tf.float32
    np.testing.assert_allclose(z.numpy(), bijector.forward(tf.constant(eps, tf.float32)).numpy(), rtol=1e-6)
    fldj = bijector.forward_log_det_jacobian(tf.constant(eps, tf.float32), event_ndims=1).numpy()
    want = norm.logpdf(eps).sum(-1) - fldj
    np.testing.assert_allclose(prior(z).numpy(), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(prior.distribution().log_prob(z).numpy(), want, rtol=1e-4, atol=1e-4)
    assert np.abs(z.numpy() - eps).max() > 0.05
    assert prior.distribution().event_shape == [2]
    with pytest.raises(kvae.errors.ConfigError, match="kind must be 'maf' or 'iaf', got 'x'"):
        Pr.FlowPrior(2, kind="x")


def test_vamp_prior_is_the_posterior_mixture_at_the_pseudo_inputs():
    model = kvae.VAE(input_shape=(2, 2, 1), latent_dim=2, hidden=(8,), prior=Pr.VampPrior(2, num_components=3),
                     seed=0)
    prior = model.prior
    assert tuple(prior.pseudo_inputs.shape) == (3, 2, 2, 1) and prior.pseudo_inputs.name == "pseudo_inputs"
    assert prior.built is True
    init = kvae.VAE(input_shape=(4, 4, 1), latent_dim=2, hidden=(8,), prior=Pr.VampPrior(2, num_components=50),
                    seed=0).prior.pseudo_inputs.numpy()  # N(0.05, 0.01), as in the paper
    assert abs(init.mean() - 0.05) < 0.002 and 0.008 < init.std() < 0.012
    u = np.random.RandomState(7).uniform(-0.5, 1.5, (3, 2, 2, 1)).astype("float32")  # some outside [0, 1]
    prior.pseudo_inputs.assign(u)
    loc, scale = (p.numpy() for p in model.encode_params(np.clip(u, 0.0, 1.0)))
    got_loc, got_scale = (p.numpy() for p in prior.components())
    np.testing.assert_allclose(got_loc, loc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_scale, scale, rtol=1e-5)
    z = np.random.RandomState(8).normal(size=(4, 2)).astype("float32")
    want = logsumexp(norm.logpdf(z[:, None], loc[None], scale[None]).sum(-1), axis=1) - np.log(3)
    np.testing.assert_allclose(prior(tf.constant(z)).numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(prior.distribution().log_prob(z).numpy(), want, rtol=1e-5)
    cu = np.array([0.0, 0.34, 0.999, 1.0], np.float32)  # components 0, 1, 2 and (u = 1) the last
    k = np.array([0, 1, 2, 2])
    np.testing.assert_allclose(prior.from_noise(z.astype("float64"), cu).numpy(), loc[k] + scale[k] * z, rtol=1e-5)
    with pytest.raises(kvae.errors.ConfigError, match=r"^the VampPrior samples with explicit component noise: "
                                                      r"from_noise\(eps, component_uniform\)$"):
        prior.from_noise(z)
    with pytest.raises(kvae.errors.ConfigError, match="^the VampPrior is not bound to a model: pass it as a model's prior$"):
        Pr.VampPrior(2, num_components=3).components()
    with pytest.raises(kvae.errors.ConfigError, match="num_components must be positive, got 0"):
        Pr.VampPrior(2, num_components=0)
    with pytest.raises(kvae.errors.ConfigError, match=r"^the VampPrior needs an unconditional model \(its components "
                                                      r"are q\(z\|u_k\) without labels\)$"):
        kvae.VAE(input_shape=(2, 2, 1), latent_dim=2, hidden=(8,), num_classes=3, prior=Pr.VampPrior(2, 3))
    with pytest.raises(kvae.errors.ConfigError, match=r"^the VampPrior needs a Gaussian posterior \(loc, scale\), "
                                                      r"not IAFPosterior$"):
        kvae.VAE(input_shape=(2, 2, 1), latent_dim=2, hidden=(8,), posterior="iaf", prior=Pr.VampPrior(2, 3))
    for flow in ("planar", "radial"):  # their (loc, scale) are the base Gaussian's, not q(z|u_k)
        with pytest.raises(kvae.errors.ConfigError, match="not PlanarRadialPosterior"):
            kvae.VAE(input_shape=(2, 2, 1), latent_dim=2, hidden=(8,), posterior=flow, prior=Pr.VampPrior(2, 3))
    with pytest.raises(kvae.errors.ConfigError, match="needs a Gaussian posterior"):
        kvae.VAE(input_shape=(2, 2, 1), latent_dim=2, hidden=(8,), posterior="deterministic",
                 prior=Pr.VampPrior(2, 3))
    weights = prior.pseudo_inputs
    prior.bind(model)  # binding again keeps the pseudo-inputs
    assert prior.pseudo_inputs is weights
