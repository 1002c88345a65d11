"""Model-zoo losses against their papers' formulas written out in numpy."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.parts.regularizers import _fold


def imq_mmd_unbiased(a, b, scales):
    def k(x, y):
        d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
        return sum(c / (c + d2) for c in (2 * x.shape[1] * s ** 2 for s in scales))

    n, m = len(a), len(b)
    kxx, kyy = k(a, a), k(b, b)
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * k(a, b).mean())


def test_wae_loss_is_reconstruction_plus_lambda_imq_mmd():
    model = kvae.WAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), reg_weight=7.0, bandwidths=(1.0, 2.0), seed=0)
    x = (np.random.RandomState(0).uniform(size=(12, 8, 8, 1)) > 0.5).astype("float32")
    seed = tf.constant([3, 4], tf.int32)
    terms = model.compute_terms(x, seed=seed)
    loss, _ = model.per_example_loss(terms, 0.0)
    z = terms["z"].numpy()
    np.testing.assert_allclose(z, model.encode_params(x)[0].numpy(), atol=1e-6)  # deterministic codes
    prior_z = terms["prior"].sample(12, seed=_fold(seed, 11)).numpy()
    want = -terms["log_px_z"].numpy() + 7.0 * imq_mmd_unbiased(z.astype(np.float64), prior_z.astype(np.float64),
                                                               (1.0, 2.0))
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(terms["kl"].numpy(), np.zeros(12))


def test_annealed_capacity_loss_follows_the_kl_target():
    model = kvae.AnnealedCapacityBetaVAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), gamma=100.0,
                                        capacity=20.0, capacity_steps=200, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = (np.random.RandomState(1).uniform(size=(10, 8, 8, 1)) > 0.5).astype("float32")
    terms = model.compute_terms(x, seed=tf.constant([1, 2], tf.int32))
    kl = terms["kl"].numpy().mean()
    for step, c in ((0, 0.0), (50, 5.0), (200, 20.0), (1000, 20.0)):
        model.optimizer.iterations.assign(step)
        loss, _ = model.per_example_loss(terms, None)
        np.testing.assert_allclose(loss.numpy(), -terms["log_px_z"].numpy() + 100.0 * abs(kl - c), rtol=1e-5)
    config = model.get_config()
    assert (config["gamma"], config["capacity"], config["capacity_steps"]) == (100.0, 20.0, 200)
    assert "beta" not in config


def test_new_names_train_and_export_from_the_cli(tmp_path, assert_bundle_parity):
    import os

    from kvae.cli import main as cli

    for name, options in (("wae-mmd", ["--reg-weight", "3"]), ("annealed-beta-vae", ["--capacity-steps", "5"]),
                          ("vamp", ["--num-components", "6"]), ("linnf", ["--flows", "planar,radial"]),
                          ("aae", ["--adversarial-weight", "0.5"])):
        run, bundle = str(tmp_path / name), str(tmp_path / f"{name}-bundle")
        assert cli.main(["train", "--model", name, "--dataset", "digits", "--epochs", "1", "--hidden", "16",
                         "--latent-dim", "2", "--limit", "200", "--out", run, "--quiet", *options]) == 0
        model = keras.saving.load_model(os.path.join(run, "model.keras"))
        key = {"wae-mmd": "reg_weight", "annealed-beta-vae": "capacity_steps", "vamp": "num_components",
               "linnf": "flows", "aae": "adversarial_weight"}[name]
        want = options[1] if name == "linnf" else float(options[1])
        assert model.get_config()[key] == want
        assert cli.main(["export", run, "--out", bundle]) == 0
        assert_bundle_parity(bundle)


def test_vamp_prior_is_the_mixture_of_posteriors_at_the_pseudo_inputs():
    from scipy.special import logsumexp
    from scipy.stats import norm

    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,),
                     prior=kvae.parts.priors.VampPrior(3, num_components=5), seed=0)
    prior = model.prior
    prior.pseudo_inputs.assign(np.random.RandomState(0).uniform(-0.5, 1.5, size=(5, 8, 8, 1)))
    u = np.clip(prior.pseudo_inputs.numpy(), 0, 1)  # hardtanh to [0, 1]
    loc, scale = (t.numpy().astype(np.float64) for t in model.encode_params(u))
    z = np.random.RandomState(1).normal(size=(20, 3)) * 2
    want = logsumexp(norm.logpdf(z[:, None, :], loc[None], scale[None]).sum(-1), axis=1) - np.log(5)
    np.testing.assert_allclose(model.prior_distribution().log_prob(z).numpy(), want, rtol=1e-5, atol=1e-5)
    eps = np.random.RandomState(2).normal(size=(6, 3)).astype("float32")
    cu = np.array([0.0, 0.19, 0.2, 0.5, 0.99, 1.0], "float32")
    k = np.minimum(np.floor(cu * 5).astype(int), 4)  # [0, 0, 1, 2, 4, 4]
    np.testing.assert_allclose(prior.from_noise(eps, cu).numpy(), loc[k] + scale[k] * eps, rtol=1e-5, atol=1e-6)
    # no closed-form KL to a mixture: the one-sample estimate log q(z|x) - log p(z) at the drawn z
    x = (np.random.RandomState(3).uniform(size=(4, 8, 8, 1)) > 0.5).astype("float32")
    terms = model.compute_terms(x, seed=tf.constant([1, 1], tf.int32))
    lq = norm.logpdf(terms["z"].numpy(), *(t.numpy() for t in model.encode_params(x))).sum(-1)
    np.testing.assert_allclose(terms["kl"].numpy(), lq - model.prior_distribution().log_prob(terms["z"]).numpy(),
                               rtol=1e-4, atol=1e-4)
    # gradients reach the pseudo-inputs and the encoder through log p(z)
    with tf.GradientTape() as tape:
        lp = tf.reduce_sum(model.prior_distribution().log_prob(z.astype("float32")))
    grads = tape.gradient(lp, [prior.pseudo_inputs] + model.encoder_network.trainable_variables)
    assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)


def test_vamp_prior_bundle_samples_with_component_noise(tmp_path):
    from kvae.export import bundle as export
    from kvae_serve import Bundle

    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(16,),
                     prior=kvae.parts.priors.VampPrior(2, num_components=4), seed=0)
    export.export(model, str(tmp_path / "b"))
    bundle = Bundle(str(tmp_path / "b"))
    names = [i["name"] for i in bundle.manifest["endpoints"]["sample"]["inputs"]]
    assert names == ["eps", "component_uniform"]
    images = bundle.sample(5, seed=3)
    rng = np.random.default_rng(3)
    eps, cu = rng.standard_normal((5, 2)).astype("float32"), rng.uniform(size=5).astype("float32")
    np.testing.assert_allclose(images, model.sample_from_noise(eps, component_uniform=cu).numpy(), atol=1e-5)


def test_planar_and_radial_log_dets_equal_numerical_jacobians():
    from kvae.nn.planar_radial import PlanarFlow, RadialFlow

    rng = np.random.RandomState(0)
    z = tf.constant(rng.normal(size=(16, 3)), tf.float64)
    flows = [PlanarFlow(tf.constant(rng.normal(size=3)), tf.constant(rng.normal(size=3) * 2), tf.constant(0.3, tf.float64)),
             RadialFlow(tf.constant(rng.normal(size=3)), tf.constant(0.2, tf.float64), tf.constant(1.5, tf.float64)),
             RadialFlow(tf.constant(rng.normal(size=3)), tf.constant(-1.0, tf.float64), tf.constant(-3.0, tf.float64))]
    for flow in flows:
        def f(v):
            return flow.forward(v)

        # central differences, one coordinate at a time (independent of autodiff)
        h = 1e-6
        jac = np.stack([(f(z + h * np.eye(3)[i]) - f(z - h * np.eye(3)[i])).numpy() / (2 * h) for i in range(3)],
                       axis=-1)
        want = np.log(np.abs(np.linalg.det(jac)))
        np.testing.assert_allclose(flow.forward_log_det_jacobian(z, event_ndims=1).numpy(), want, atol=1e-6)
    # planar invertibility: w^T u_hat >= -1 even for u pointing against w
    w = tf.constant([1.0, 0.0, 0.0], tf.float64)
    bad = PlanarFlow(w, tf.constant([-5.0, 0.0, 0.0], tf.float64), tf.constant(0.0, tf.float64))
    assert float(tf.reduce_sum(w * bad.u_hat())) >= -1.0


def test_planar_radial_posterior_density_is_the_change_of_variables():
    from scipy.stats import norm

    model = kvae.LinNFVAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), flows="planar,radial", seed=0)
    for v in model.posterior.trainable_variables:
        if "gaussian" not in v.path:
            v.assign(np.random.RandomState(len(v.path)).normal(size=v.shape) * 0.8)
    x = (np.random.RandomState(1).uniform(size=(5, 8, 8, 1)) > 0.5).astype("float32")
    q = model.encode(x)
    eps = np.random.RandomState(2).normal(size=(5, 3)).astype("float32")
    z_k = model.posterior.reparameterize(q, eps)
    loc, scale = (t.numpy() for t in model.encode_params(x))
    z0 = loc + scale * eps
    flows = model.posterior.bijectors()
    log_det = flows[0].forward_log_det_jacobian(z0, event_ndims=1)
    z1 = flows[0].forward(z0)
    log_det += flows[1].forward_log_det_jacobian(z1, event_ndims=1)
    np.testing.assert_allclose(z_k.numpy(), flows[1].forward(z1).numpy(), atol=1e-5)
    want = norm.logpdf(z0, loc, scale).sum(-1) - log_det.numpy()
    np.testing.assert_allclose(q.log_prob(z_k).numpy(), want, rtol=1e-4, atol=1e-4)


def test_adversarial_autoencoder_loss_and_discriminator_step():
    model = kvae.AdversarialAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(16,), adversarial_weight=0.5,
                               discriminator_hidden=(8,), discriminator_lr=0.05, seed=0)
    reg = model.regularizer_layers[0]
    x = (np.random.RandomState(0).uniform(size=(16, 8, 8, 1)) > 0.5).astype("float32")
    seed = tf.constant([2, 3], tf.int32)
    terms = model.compute_terms(x, seed=seed)
    z = terms["z"].numpy()
    np.testing.assert_allclose(z, model.encode_params(x)[0].numpy(), atol=1e-6)  # deterministic codes
    logits = reg.discriminator(z).numpy()[:, 0].astype(np.float64)
    loss, _ = model.per_example_loss(terms, 0.0)
    np.testing.assert_allclose(loss.numpy(), -terms["log_px_z"].numpy() + 0.5 * np.logaddexp(0, -logits), rtol=1e-5)
    # the discriminator's own step: it learns to tell prior draws (1) from codes (0)
    real = terms["prior"].sample(16, seed=_fold(seed, 13)).numpy()

    def bce():
        lr, lf = reg.discriminator(real).numpy()[:, 0], reg.discriminator(z).numpy()[:, 0]
        return np.mean(np.logaddexp(0, -lr) + np.logaddexp(0, lf))

    before = bce()
    autoencoder = [v.numpy().copy() for v in model.model_variables]
    for _ in range(20):
        reg.after_step(model, terms)
    assert bce() < before - 0.05
    for v, w in zip(model.model_variables, autoencoder):  # the discriminator's step moves only its own weights
        np.testing.assert_array_equal(v.numpy(), w, err_msg=v.path)


def test_planar_log_det_is_finite_and_exact_where_w_u_is_very_negative_in_float32():
    """At w^T u = -20, w^T u_hat = -1 + softplus(-20) = -1 + 2.06e-9: log|det| = log(tanh^2 a + sech^2 a * 2.06e-9),
    -20 on the hyperplane a = 0 and -13.8 at a = 1e-3 (float64 numpy), not -inf."""
    from kvae.nn.planar_radial import PlanarFlow

    w = np.array([1.0, 0.0], np.float32)
    flow = PlanarFlow(tf.constant(w), tf.constant([-20.0, 0.3], tf.float32), tf.constant(0.0, tf.float32))
    a = np.array([0.0, 1e-3, -1e-3, 0.5, 3.0], np.float64)
    z = np.stack([a, np.zeros_like(a)], -1).astype(np.float32)
    got = flow.forward_log_det_jacobian(tf.constant(z), event_ndims=1).numpy()
    wu_hat = -1.0 + np.log1p(np.exp(-20.0))
    want = np.log(1.0 + (1.0 - np.tanh(a) ** 2) * wu_hat)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert got[0] == pytest.approx(-20.0, abs=1e-3)
    with tf.GradientTape() as tape:
        zt = tf.constant(z)
        tape.watch(zt)
        ld = flow.forward_log_det_jacobian(zt, event_ndims=1)
    assert np.all(np.isfinite(tape.gradient(ld, zt).numpy()))
