"""HVAE (kvae.models.hvae.hamiltonian): the leapfrog step is volume preserving and reversible, the tempered flow
equals a numpy transcription of Caterini et al.'s recurrences, and the bound reduces to the ELBO
when the flow is the identity."""
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.models.hvae import hamiltonian

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers"))
from elbo_numpy import numpy_one_sample_elbo  # noqa: E402

A = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 1.5]])
B = np.array([0.2, -0.4, 0.1])


def grad_u(z):  # U(z) = 1/2 z^T A z + b^T z
    return tf.linalg.matvec(tf.constant(A, tf.float64), z) + tf.constant(B, tf.float64)


def test_leapfrog_is_volume_preserving_and_reversible():
    z = tf.constant(np.random.RandomState(0).normal(size=(4, 3)))
    rho = tf.constant(np.random.RandomState(1).normal(size=(4, 3)))
    state = tf.concat([z, rho], axis=-1)
    with tf.GradientTape() as tape:
        tape.watch(state)
        z1, rho1 = hamiltonian.leapfrog(state[:, :3], state[:, 3:], grad_u, 0.3)
        out = tf.concat([z1, rho1], axis=-1)
    jac = tape.batch_jacobian(out, state).numpy()
    np.testing.assert_allclose(np.linalg.det(jac), np.ones(4), atol=1e-10)  # log-det 0
    z2, rho2 = hamiltonian.leapfrog(z1, -rho1, grad_u, 0.3)
    np.testing.assert_allclose(z2.numpy(), z.numpy(), atol=1e-12)
    np.testing.assert_allclose(-rho2.numpy(), rho.numpy(), atol=1e-12)


def test_tempered_flow_matches_a_numpy_transcription():
    rng = np.random.RandomState(2)
    z0, gamma = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    k_steps, eps, beta0 = 4, 0.2, 0.3

    def log_joint(z):
        return -0.5 * tf.reduce_sum(z * tf.linalg.matvec(tf.constant(A, tf.float64), z), -1) \
            - tf.reduce_sum(z * tf.constant(B, tf.float64), -1)

    got_z, got_rho = hamiltonian.hamiltonian_flow(tf.constant(z0), tf.constant(gamma), log_joint, k_steps, eps, beta0)
    # numpy: Caterini et al. (2018), Algorithm 1, with grad U = A z + b
    z, rho, old = z0.copy(), gamma / np.sqrt(beta0), np.sqrt(beta0)
    for k in range(1, k_steps + 1):
        rho_half = rho - eps / 2 * (z @ A.T + B)
        z = z + eps * rho_half
        rho = rho_half - eps / 2 * (z @ A.T + B)
        new = 1.0 / ((1 - 1 / np.sqrt(beta0)) * (k / k_steps) ** 2 + 1 / np.sqrt(beta0))
        rho, old = old / new * rho, new
    np.testing.assert_allclose(got_z.numpy(), z, atol=1e-10)
    np.testing.assert_allclose(got_rho.numpy(), rho, atol=1e-10)
    assert hamiltonian.tempering(k_steps, k_steps, beta0) == pytest.approx(1.0)  # beta_K = 1
    assert hamiltonian.tempering(0, k_steps, beta0) == pytest.approx(np.sqrt(beta0))


def test_bound_is_the_elbo_when_the_flow_is_the_identity():
    """With a vanishing step size and beta_0 = 1, z_K = z_0 and rho_K = gamma, so the HVAE bound is the
    one-sample ELBO log p(x|z_0) + log p(z_0) - log q(z_0|x) at the same z_0."""
    rng = np.random.RandomState(3)
    x = (rng.uniform(size=(6, 8, 8, 1)) > 0.5).astype(np.float32)
    model = kvae.HVAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), num_leapfrog=3, step_size=1e-12,
                      beta_zero=1.0, seed=4)
    seed = tf.constant([7, 8])
    terms = model.compute_terms(x, seed=seed)
    loss = model.objective.per_example_loss(model, terms).numpy()
    np.testing.assert_allclose(-loss, numpy_one_sample_elbo(model, x, seed), rtol=1e-4, atol=1e-3)


def test_hvae_moves_the_sample_and_learns_its_step_size():
    x = (np.random.RandomState(5).uniform(size=(32, 8, 8, 1)) > 0.5).astype(np.float32)
    model = kvae.HVAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), num_leapfrog=2, step_size=0.1,
                      learn_step_size=True, seed=6)
    model.compile(optimizer="adam")
    before = float(model.objective.log_step_size.numpy())
    history = model.fit(x, batch_size=16, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert float(model.objective.log_step_size.numpy()) != before
    with pytest.raises(kvae.errors.ConfigError, match="beta_zero"):
        kvae.HVAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), beta_zero=1.5)
