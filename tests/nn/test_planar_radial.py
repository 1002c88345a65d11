"""Planar and radial flows (Rezende & Mohamed 2015) against float64 numpy transcriptions of the paper's
formulas and a finite-difference Jacobian (these are the tests benchmarks/mutation_testing.py runs on
kvae/nn/planar_radial.py)."""
import numpy as np
import tensorflow as tf

from kvae.nn.planar_radial import PlanarFlow, RadialFlow


def _softplus(a):
    return np.logaddexp(0.0, a)


def _numerical_log_det(f, z, h=1e-6):
    """log|det df/dz| per row by central differences (float64)."""
    out = []
    for row in z:
        jac = np.stack([(f(row + h * e) - f(row - h * e)) / (2 * h) for e in np.eye(len(row))], -1)
        out.append(np.log(abs(np.linalg.det(jac))))
    return np.array(out)


def _planar_np(w, u, b):
    wu = w @ u
    u_hat = u + (-1.0 + _softplus(wu) - wu) * w / (w @ w)

    def f(z):
        return z + u_hat * np.tanh(z @ w + b)[..., None]

    def log_det(z):
        psi = (1.0 - np.tanh(z @ w + b) ** 2)[..., None] * w
        return np.log(np.abs(1.0 + psi @ u_hat))

    return u_hat, f, log_det


def test_planar_flow_is_the_papers_formula():
    rng = np.random.RandomState(0)
    w, u, b = rng.normal(size=3), rng.normal(size=3) * 2, 0.4
    w = w * np.sign(w @ u) * -1.0  # w^T u < 0: the constraint moves u
    u_hat, f, log_det = _planar_np(w, u, b)
    flow = PlanarFlow(tf.constant(w, tf.float32), tf.constant(u, tf.float32), tf.constant(b, tf.float32))
    np.testing.assert_allclose(flow.u_hat().numpy(), u_hat, rtol=1e-5, atol=1e-6)
    assert w @ u_hat >= -1.0 and abs(w @ u_hat - (-1.0 + _softplus(w @ u))) < 1e-9
    z = rng.normal(size=(5, 3))
    zt = tf.constant(z, tf.float32)
    np.testing.assert_allclose(flow.forward(zt).numpy(), f(z), rtol=1e-5, atol=1e-5)
    got = flow.forward_log_det_jacobian(zt, event_ndims=1).numpy()
    np.testing.assert_allclose(got, log_det(z), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, _numerical_log_det(f, z), rtol=1e-4, atol=1e-5)
    u_pos = np.abs(u) * np.sign(w)  # w^T u > 0: u_hat = u + (softplus(a) - 1 - a) w / |w|^2, still not u
    u_hat2, f2, log_det2 = _planar_np(w, u_pos, -0.3)
    flow2 = PlanarFlow(tf.constant(w, tf.float32), tf.constant(u_pos, tf.float32), tf.constant(-0.3, tf.float32))
    np.testing.assert_allclose(flow2.u_hat().numpy(), u_hat2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flow2.forward_log_det_jacobian(zt, event_ndims=1).numpy(), log_det2(z), rtol=1e-4,
                               atol=1e-5)
    draws = rng.normal(size=(2, 4, 3))  # [k, B, D]: importance samples
    np.testing.assert_allclose(flow.forward(tf.constant(draws, tf.float32)).numpy(), f(draws), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(flow.forward_log_det_jacobian(tf.constant(draws, tf.float32), event_ndims=1).numpy(),
                               log_det(draws), rtol=1e-4, atol=1e-5)


def test_planar_flow_log_det_stays_finite_where_w_u_hat_rounds_to_minus_one():
    """w^T u = -20 in float32: w^T u_hat = -1 + softplus(-20) = -1 + 2e-9; at w^T z + b = 0 the
    log-determinant is log(softplus(-20)) = -20, finite (float64 transcription)."""
    w = np.array([1.0, 0.0], np.float32)
    u = np.array([-20.0, 3.0], np.float32)
    flow = PlanarFlow(tf.constant(w), tf.constant(u), tf.constant(0.0))
    z = np.array([[0.0, 1.0], [1e-3, -2.0], [0.5, 0.0]], np.float32)
    _, _, log_det = _planar_np(w.astype(np.float64), u.astype(np.float64), 0.0)
    got = flow.forward_log_det_jacobian(tf.constant(z), event_ndims=1).numpy()
    assert np.all(np.isfinite(got))
    want = np.log(np.tanh(z[:, 0].astype(np.float64)) ** 2
                  + (1 - np.tanh(z[:, 0].astype(np.float64)) ** 2) * _softplus(-20.0))
    np.testing.assert_allclose(got, want, rtol=1e-4)
    np.testing.assert_allclose(got[2], log_det(z[2:].astype(np.float64))[0], rtol=1e-4)


def _radial_np(z0, a, b):
    alpha = _softplus(a)
    beta = -alpha + _softplus(b)

    def f(z):
        r = np.linalg.norm(z - z0, axis=-1, keepdims=True)
        return z + beta / (alpha + r) * (z - z0)

    def log_det(z):
        d = z.shape[-1]
        r = np.linalg.norm(z - z0, axis=-1)
        h = 1.0 / (alpha + r)
        dh = -1.0 / (alpha + r) ** 2
        return (d - 1) * np.log(1 + beta * h) + np.log(1 + beta * h + beta * dh * r)

    return alpha, beta, f, log_det


def test_radial_flow_is_the_papers_formula():
    rng = np.random.RandomState(1)
    z = rng.normal(size=(6, 3))
    for a, b in ((0.3, 1.2), (-0.5, -2.0)):  # beta > 0 and beta in (-alpha, 0)
        z0 = rng.normal(size=3)
        alpha, beta, f, log_det = _radial_np(z0, a, b)
        flow = RadialFlow(tf.constant(z0, tf.float32), tf.constant(a, tf.float32), tf.constant(b, tf.float32))
        got_alpha, got_beta = (t.numpy() for t in flow._alpha_beta())
        np.testing.assert_allclose([got_alpha, got_beta], [alpha, beta], rtol=1e-5)
        zt = tf.constant(z, tf.float32)
        np.testing.assert_allclose(flow.forward(zt).numpy(), f(z), rtol=1e-5, atol=1e-5)
        got = flow.forward_log_det_jacobian(zt, event_ndims=1).numpy()
        np.testing.assert_allclose(got, log_det(z), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got, _numerical_log_det(f, z), rtol=1e-4, atol=1e-5)
        draws = rng.normal(size=(2, 4, 3))  # [k, B, D]: importance samples
        np.testing.assert_allclose(flow.forward(tf.constant(draws, tf.float32)).numpy(), f(draws), rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(flow.forward_log_det_jacobian(tf.constant(draws, tf.float32), event_ndims=1).numpy(),
                                   log_det(draws), rtol=1e-4, atol=1e-5)
