"""RHVAE (kvae.models.rhvae.riemannian): the metric against a direct sum, the generalised leapfrog is volume
preserving and reversible and reduces to the leapfrog under a constant metric, the bound is the
ELBO when the flow stands still (whatever the metric), and the manifold sampler's HMC kernel keeps
its target."""
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.models.hvae import hamiltonian
from kvae.models.rhvae import riemannian

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers"))
from elbo_numpy import numpy_one_sample_elbo  # noqa: E402

RNG = np.random.RandomState(0)
D, N = 3, 4
CENTROIDS = RNG.normal(size=(N, D))
FACTORS = np.tril(RNG.normal(size=(N, D, D))) * 0.7
T, LAM = 1.3, 0.05


def metric_inv(z):
    return riemannian.inverse_metric(z, tf.constant(CENTROIDS), tf.constant(FACTORS), T, LAM)


def log_joint(z):  # a Gaussian log p(x, z) up to a constant: -1/2 z^T A z - b^T z
    a = tf.constant([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 1.5]], tf.float64)
    return -0.5 * tf.reduce_sum(z * tf.linalg.matvec(a, z), -1) - tf.reduce_sum(z * tf.constant([0.2, -0.4, 0.1],
                                                                                                  tf.float64), -1)


def test_inverse_metric_is_the_sum_of_the_paper():
    z = RNG.normal(size=(5, D))
    got = metric_inv(tf.constant(z)).numpy()
    for b in range(5):
        want = LAM * np.eye(D)
        for i in range(N):
            want += FACTORS[i] @ FACTORS[i].T * np.exp(-np.sum((z[b] - CENTROIDS[i]) ** 2) / T ** 2)
        np.testing.assert_allclose(got[b], want, rtol=1e-12)


def test_metric_factors_are_lower_triangular_with_the_networks_entries():
    bound = riemannian.RiemannianHamiltonianBound(metric_hidden=(8,))
    bound.build_for((8, 8, 1), 4)
    x = RNG.uniform(size=(3, 8, 8, 1)).astype(np.float32)
    out = bound.metric_network(x).numpy()
    factors = bound.metric_factors(x).numpy()
    for b in range(3):
        np.testing.assert_allclose(np.diag(factors[b]), np.exp(out[b, :4]), rtol=1e-6)
        assert np.all(np.triu(factors[b], 1) == 0)
        np.testing.assert_allclose(np.sort(factors[b][np.tril_indices(4, -1)]), np.sort(out[b, 4:]), rtol=1e-6)


def _step(state, eps, fixed_point_steps):
    z1, rho1 = riemannian.generalized_leapfrog(state[:, :D], state[:, D:], log_joint, metric_inv, eps, fixed_point_steps)
    return tf.concat([z1, rho1], axis=-1)


def _jacobian_det(state, eps, fixed_point_steps):
    with tf.GradientTape() as tape:
        tape.watch(state)
        out = _step(state, eps, fixed_point_steps)
    return out, np.linalg.det(tape.batch_jacobian(out, state).numpy())


def test_generalised_leapfrog_is_volume_preserving_and_reversible():
    """With its implicit equations solved (20 fixed-point iterations) the step is symplectic: the
    Jacobian of (z, rho) -> (z', rho'') has determinant 1, and (z', -rho'') steps back to (z, -rho).
    With 3 iterations (the default, as pythae) it is not: here the determinant is off by ~5%."""
    rs = np.random.RandomState(0)
    state = tf.constant(np.concatenate([rs.normal(size=(4, D)), np.random.RandomState(1).normal(size=(4, D))], axis=-1))
    out, det = _jacobian_det(state, 0.1, 20)
    np.testing.assert_allclose(det, np.ones(4), atol=1e-8)
    back = _step(tf.concat([out[:, :D], -out[:, D:]], axis=-1), 0.1, 20).numpy()
    np.testing.assert_allclose(back[:, :D], state.numpy()[:, :D], atol=1e-9)
    np.testing.assert_allclose(-back[:, D:], state.numpy()[:, D:], atol=1e-9)
    assert np.abs(_jacobian_det(state, 0.1, 3)[1] - 1).max() > 1e-2
    # the metric moves the step: the Euclidean leapfrog lands elsewhere
    plain = hamiltonian.leapfrog(state[:, :D], state[:, D:], _grad_u, 0.1)[0].numpy()
    assert np.abs(plain - out[:, :D].numpy()).max() > 1e-2


def _grad_u(z):
    with tf.GradientTape() as tape:
        tape.watch(z)
        u = -tf.reduce_sum(log_joint(z))
    return tape.gradient(u, z)


def test_under_a_constant_identity_metric_the_flow_is_the_hvae_flow():
    z0, gamma = tf.constant(RNG.normal(size=(5, D))), tf.constant(RNG.normal(size=(5, D)))
    identity = lambda z: tf.eye(D, batch_shape=[tf.shape(z)[0]], dtype=z.dtype)  # noqa: E731
    z, rho, log_det = riemannian.riemannian_hamiltonian_flow(z0, gamma, log_joint, identity, 4, 0.2, 0.3, 3)
    want_z, want_rho = hamiltonian.hamiltonian_flow(z0, gamma, log_joint, 4, 0.2, 0.3)
    np.testing.assert_allclose(z.numpy(), want_z.numpy(), atol=1e-12)
    np.testing.assert_allclose(rho.numpy(), want_rho.numpy(), atol=1e-12)
    np.testing.assert_allclose(log_det.numpy(), 0.0, atol=1e-12)


def test_initial_momentum_has_covariance_g_over_beta_zero():
    z0 = tf.constant(np.repeat(RNG.normal(size=(1, D)), 20000, axis=0))
    gamma = tf.constant(np.random.RandomState(1).normal(size=(20000, D)))
    _, rho, _ = riemannian.riemannian_hamiltonian_flow(z0, gamma, log_joint, metric_inv, 1, 1e-14, 0.3, 1)
    # one step of size ~0 leaves rho_0 scaled by the tempering sqrt(beta_0) / sqrt(beta_1) = sqrt(0.3)
    cov = np.cov((rho.numpy() / np.sqrt(0.3)).T)
    want = np.linalg.inv(metric_inv(z0[:1]).numpy()[0]) / 0.3
    np.testing.assert_allclose(cov, want, rtol=0.06, atol=0.06 * np.abs(want).max())


def test_bound_is_the_elbo_when_the_flow_stands_still_whatever_the_metric():
    """With a vanishing step and beta_0 = 1, z_K = z_0 and rho_K = rho_0 = C_0^{-T} gamma: the metric's
    terms (log N(rho_K; 0, G), -log N(gamma), -1/2 log det G^{-1}(z_0)) cancel exactly, leaving the
    one-sample ELBO at z_0 -- a check of their signs with a metric far from the identity."""
    x = (RNG.uniform(size=(6, 8, 8, 1)) > 0.5).astype(np.float32)
    model = kvae.RHVAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), num_leapfrog=2, step_size=1e-12,
                       beta_zero=1.0, metric_hidden=(8,), regularization=0.01, seed=4)
    seed = tf.constant([7, 8])
    terms = model.compute_terms(x, seed=seed)
    centroids, factors = model.objective.batch_metric(model, terms["q"], terms["x"], False)
    a = riemannian.inverse_metric(centroids, centroids, factors, 1.5, 0.01).numpy()
    assert np.abs(a - np.eye(3)).max() > 0.5  # far from the identity
    loss = model.objective.per_example_loss(model, terms).numpy()
    np.testing.assert_allclose(-loss, numpy_one_sample_elbo(model, x, seed), rtol=1e-4, atol=2e-3)


def test_hmc_kernel_keeps_a_gaussian_target():
    mean, std = np.array([1.0, -2.0]), np.array([0.5, 2.0])

    def log_density(z):
        return -0.5 * tf.reduce_sum(tf.square((z - mean) / std), -1)

    rng = np.random.RandomState(2)
    steps, chains = 60, 3000
    z, rate = riemannian.hmc(log_density, tf.constant(rng.normal(size=(chains, 2)) * 3),
                             tf.constant(rng.normal(size=(steps, chains, 2))),
                             tf.constant(rng.uniform(size=(steps, chains))), 0.3, 8)
    z = z.numpy()
    np.testing.assert_allclose(z.mean(0), mean, atol=0.12)
    np.testing.assert_allclose(z.std(0), std, rtol=0.08)
    assert 0.3 < rate.numpy().mean() < 1.0


def test_fit_stores_the_metric_and_the_manifold_sampler_uses_it(tmp_path):
    import keras

    x = (RNG.uniform(size=(48, 8, 8, 1)) > 0.5).astype(np.float32)
    model = kvae.RHVAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(16,), metric_hidden=(8,), num_leapfrog=1,
                       fixed_point_steps=1, step_size=0.05, metric_points=40, seed=5)
    with pytest.raises(kvae.errors.ConfigError, match="fit_metric"):
        model.sample(2, source="manifold")
    model.compile(optimizer="adam")
    history = model.fit(x, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert int(model.objective.num_centroids.numpy()) == 40
    centroids, factors = (t.numpy() for t in model.objective.stored_metric())
    subset = np.sort(np.random.default_rng(0).permutation(48)[:40])
    np.testing.assert_allclose(centroids, model.encode(x[subset]).mean().numpy(), atol=1e-5)
    np.testing.assert_allclose(factors, model.objective.metric_factors(x[subset]).numpy(), atol=1e-5)
    a = model.sample(3, seed=1, source="manifold").numpy()
    np.testing.assert_array_equal(a, model.sample(3, seed=1, source="manifold").numpy())
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.sample(3, seed=1, source="manifold").numpy(), a, atol=1e-5)
    with pytest.raises(kvae.errors.ConfigError, match="'manifold' needs a learned metric"):
        kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,)).sample(2, source="manifold")
    with pytest.raises(kvae.errors.ConfigError, match="temperature"):
        kvae.RHVAE(input_shape=(8, 8, 1), latent_dim=2, temperature=0.0)


def test_cli_trains_an_rhvae_samples_its_manifold_and_exports(tmp_path, assert_bundle_parity):
    from kvae.cli import main as cli

    run, png, bundle = str(tmp_path / "run"), str(tmp_path / "manifold.png"), str(tmp_path / "bundle")
    assert cli.main(["train", "--model", "rhvae", "--dataset", "digits", "--epochs", "1", "--limit", "64",
                     "--valid-limit", "32", "--hidden", "16", "--latent-dim", "2", "--num-leapfrog", "1",
                     "--fixed-point-steps", "1", "--metric-hidden", "8", "--quiet", "--out", run]) == 0
    assert cli.main(["sample", run, "--source", "manifold", "--n", "4", "--out", png]) == 0
    from PIL import Image

    # the grid of the run's own manifold samples at --seed's default 0
    from kvae.evaluation.plotting import image_grid
    from kvae.training.runs import load_run

    model, _ = load_run(run)
    want = image_grid(model.sample(4, seed=0, source="manifold").numpy(), ncol=4)
    shown = np.asarray(Image.open(png).convert("L"), np.float32) / 255.0
    np.testing.assert_allclose(shown, want, atol=2 / 255)
    assert np.abs(image_grid(model.sample(4, seed=1, source="manifold").numpy(), ncol=4) - want).max() > 0.05
    assert cli.main(["export", run, "--out", bundle, "--explorer-examples", "0"]) == 0
    manifest = assert_bundle_parity(bundle)
    assert {"encode", "decode", "sample", "log_prob"} <= set(manifest["endpoints"])
