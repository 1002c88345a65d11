r"""Riemannian Hamiltonian VAE (Chadebec, Mantoux & Allassonnière 2020, "Geometry-aware Hamiltonian
variational auto-encoder"; pythae's RHVAE): the HVAE of :mod:`kvae.models.hvae.hamiltonian` with a learned
Riemannian metric on the latent space,

    G^{-1}(z) = sum_i L_i L_i^T exp(-|z - c_i|^2 / T^2) + lambda I,

L_i = L_psi(x_i) lower triangular with a positive diagonal (a metric network on x), c_i = mu(x_i)
the posterior means.  In training the sum runs over the (global) batch; after training
:meth:`RiemannianHamiltonianBound.fit_metric` stores the L_i and c_i of up to ``metric_points``
training examples, the metric the manifold sampler uses.  The Hamiltonian is

    H(z, rho) = -log p(x, z) + 1/2 log((2 pi)^d det G(z)) + 1/2 rho^T G^{-1}(z) rho,

and each of K steps is the generalised leapfrog (implicit steps by ``fixed_point_steps`` fixed-point
iterations, as the paper and pythae), then the tempering of :func:`kvae.models.hvae.hamiltonian.tempering`:

    rho' = rho - eps/2 grad_z H(z, rho')                               (fixed point in rho')
    z'   = z + eps/2 [G^{-1}(z) rho' + G^{-1}(z') rho']                 (fixed point in z')
    rho''= rho' - eps/2 grad_z H(z', rho'),     rho <- sqrt(beta_{k-1} / beta_k) rho''.

Solved exactly the step is symplectic (volume preserving) and reversible; with few iterations
(3, as the paper's code and pythae) it is only nearly so, and the bound below, which takes the
step's Jacobian determinant as 1, is approximate (raise ``fixed_point_steps`` to tighten it).  With z_0 ~ q(z|x),
gamma ~ N(0, I) and rho_0 = C_0^{-T} gamma / sqrt(beta_0) (C_0 C_0^T = G^{-1}(z_0), so
rho_0 ~ N(0, G(z_0) / beta_0)), the tempering's Jacobian beta_0^{d/2} cancels against the density
of rho_0 and the bound is

    ELBO_RH = log p(x, z_K) + log N(rho_K; 0, G(z_K)) - log q(z_0|x) - log N(gamma; 0, I)
              - 1/2 log det G^{-1}(z_0).

(pythae draws rho_0 with the metric network's L(x) rather than a factor of G(z_0) in training and
drops the last two terms, which depend on the parameters through the metric; its ``beta_zero`` is
sqrt(beta_0).  kvae's loss is the negative bound itself, differentiated through every step.)

The manifold sampler (:func:`manifold_hmc`) runs Hamiltonian Monte Carlo on the density
pi(z) ∝ sqrt(det G^{-1}(z)) (as pythae's RHVAESampler: the reciprocal of the Riemannian volume element
sqrt(det G(z)), high where the learned metric is small, near the training codes; improper far from the
data, where G^{-1} -> lambda I: the chains start at
stored centroids and run a fixed number of steps, as pythae's RHVAESampler), with a Metropolis
correction.
"""
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from kvae.errors import ConfigError
from kvae.models.hvae.hamiltonian import initial_state, tempering
from kvae.parts.objectives import Objective

_LOG_2PI = float(np.log(2 * np.pi))


def inverse_metric(z, centroids, factors, temperature, regularization):
    """G^{-1}(z) [B, d, d] for z [B, d], centroids c [N, d] and lower-triangular factors L [N, d, d]."""
    return inverse_metric_from_matrices(z, centroids, tf.matmul(factors, factors, transpose_b=True), temperature,
                                        regularization)


def inverse_metric_from_matrices(z, centroids, matrices, temperature, regularization):
    """G^{-1}(z) from the matrices M_i = L_i L_i^T [N, d, d] (computed once for many z).  The squared
    distances come from |z|^2 - 2 z.c + |c|^2 (one matmul, no [B, N, d] tensor)."""
    d2 = (tf.reduce_sum(tf.square(z), -1)[:, None] - 2.0 * tf.matmul(z, centroids, transpose_b=True)
          + tf.reduce_sum(tf.square(centroids), -1)[None, :])
    w = tf.exp(-tf.maximum(d2, 0.0) / temperature ** 2)
    d = tf.shape(z)[-1]
    flat = tf.matmul(w, tf.reshape(matrices, [-1, d * d]))
    return tf.reshape(flat, [-1, d, d]) + regularization * tf.eye(d, dtype=z.dtype)


def _log_det(a):
    """log det of SPD matrices [B, d, d] (by Cholesky) and the factor."""
    chol = tf.linalg.cholesky(a)
    return 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)), axis=-1), chol


def _gradient(f, z):
    """d sum(f(z)) / dz (per-example gradients when each example's f depends on its own z only)."""
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = tf.reduce_sum(f(z))
    return tape.gradient(out, z, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def generalized_leapfrog(z, rho, log_joint, metric_inv, step_size, fixed_point_steps=3):
    """One generalised leapfrog step (module docstring) of H: returns (z', rho'').  grad_z H splits into
    the gradient of -log p(x, z) - 1/2 log det G^{-1}(z), which does not depend on rho and is taken
    once per z (one decoder gradient at z, one at z'), and that of 1/2 rho^T G^{-1}(z) rho, the only
    part the fixed-point iterations on rho' recompute."""
    def potential(zz):
        return -log_joint(zz) - 0.5 * _log_det(metric_inv(zz))[0]

    def grad_z(zz, grad_potential, rr):
        kinetic = _gradient(lambda v: 0.5 * tf.reduce_sum(rr * tf.linalg.matvec(metric_inv(v), rr), axis=-1), zz)
        return grad_potential + kinetic

    grad_potential = _gradient(potential, z)
    rho_half = rho
    for _ in range(fixed_point_steps):
        rho_half = rho - 0.5 * step_size * grad_z(z, grad_potential, rho_half)
    first = tf.linalg.matvec(metric_inv(z), rho_half)
    z_new = z
    for _ in range(fixed_point_steps):
        z_new = z + 0.5 * step_size * (first + tf.linalg.matvec(metric_inv(z_new), rho_half))
    return z_new, rho_half - 0.5 * step_size * grad_z(z_new, _gradient(potential, z_new), rho_half)


def riemannian_hamiltonian_flow(z0, gamma, log_joint, metric_inv, num_steps, step_size, beta_zero,
                                fixed_point_steps=3):
    """(z_K, rho_K, log det G^{-1}(z_0)) from z_0 and gamma ~ N(0, I): rho_0 = C_0^{-T} gamma / sqrt(beta_0),
    then ``num_steps`` tempered generalised leapfrog steps."""
    log_det_a0, chol0 = _log_det(metric_inv(z0))
    rho = tf.linalg.triangular_solve(chol0, gamma[..., None], lower=True, adjoint=True)[..., 0]
    rho = rho / beta_zero ** 0.5
    z, old = z0, beta_zero ** 0.5
    for k in range(1, num_steps + 1):
        z, rho = generalized_leapfrog(z, rho, log_joint, metric_inv, step_size, fixed_point_steps)
        new = tempering(k, num_steps, beta_zero)
        rho = (old / new) * rho
        old = new
    return z, rho, log_det_a0


def log_normal_metric(rho, a):
    """log N(rho; 0, G) for G^{-1} = a [B, d, d]."""
    log_det_a, _ = _log_det(a)
    d = tf.cast(tf.shape(rho)[-1], rho.dtype)
    return -0.5 * d * _LOG_2PI + 0.5 * log_det_a - 0.5 * tf.reduce_sum(rho * tf.linalg.matvec(a, rho), axis=-1)


def hmc(log_density, z0, momenta, uniforms, step_size, num_leapfrog):
    """Hamiltonian Monte Carlo with an identity mass matrix and a Metropolis correction, from
    explicit noise: ``momenta`` [S, N, d] and ``uniforms`` [S, N] for S transitions of N chains.
    Leaves exp(log_density) invariant.  Returns (z [N, d], acceptance rate [N])."""
    def grad(z):
        return _gradient(log_density, z)

    def transition(state, noise):
        z, accepted = state
        rho, u = noise
        h0 = -log_density(z) + 0.5 * tf.reduce_sum(rho ** 2, -1)
        zz, rr = z, rho + 0.5 * step_size * grad(z)
        for i in range(num_leapfrog):
            zz = zz + step_size * rr
            rr = rr + (1.0 if i < num_leapfrog - 1 else 0.5) * step_size * grad(zz)
        h1 = -log_density(zz) + 0.5 * tf.reduce_sum(rr ** 2, -1)
        ok = tf.logical_and(tf.math.log(u) < h0 - h1, tf.math.is_finite(h1))
        return tf.where(ok[:, None], zz, z), accepted + tf.cast(ok, z.dtype)

    z, accepted = tf.scan(transition, (momenta, uniforms), initializer=(z0, tf.zeros_like(z0[:, 0])))
    steps = tf.cast(tf.shape(uniforms)[0], z0.dtype)
    return z[-1], accepted[-1] / steps


@keras.saving.register_keras_serializable(package="kvae")
class RiemannianHamiltonianBound(Objective):
    """The RHVAE bound (module docstring) as a kvae objective, with its metric network and the
    stored metric: any model with a reparameterised posterior with a mean and a normalised
    likelihood takes ``objective=RiemannianHamiltonianBound(...)``.

    Args:
      num_leapfrog: generalised leapfrog steps K (pythae's n_lf, 3).
      step_size: leapfrog step size eps (pythae's eps_lf, 0.001).
      beta_zero: initial inverse temperature beta_0 in (0, 1] (0.3; pythae's 0.3 is sqrt(beta_0)).
      temperature: the metric's temperature T (pythae's 1.5).
      regularization: lambda, the metric's floor lambda I (pythae's 0.01).
      fixed_point_steps: fixed-point iterations per implicit step (3, as pythae).
      metric_hidden: hidden layers of the metric network x -> L(x) (pythae: one of 400, ReLU).
      metric_points: how many training examples' (c_i, L_i) :meth:`fit_metric` stores (pythae keeps
        every training example of the last epoch; here a seeded random subset of at most this many).
    """

    def __init__(self, num_leapfrog=3, step_size=0.001, beta_zero=0.3, temperature=1.5, regularization=0.01,
                 fixed_point_steps=3, metric_hidden=(400,), metric_points=2000, name="rhvae", **kwargs):
        kwargs.pop("num_samples", None)
        kwargs.pop("num_groups", None)
        super().__init__(num_samples=1, num_groups=1, name=name, **kwargs)
        if (int(num_leapfrog) < 1 or not float(step_size) > 0 or not 0 < float(beta_zero) <= 1
                or not float(temperature) > 0 or not float(regularization) > 0 or int(fixed_point_steps) < 1
                or int(metric_points) < 1):
            raise ConfigError(
                "RHVAE needs num_leapfrog >= 1, step_size > 0, 0 < beta_zero <= 1, temperature > 0, "
                f"regularization > 0, fixed_point_steps >= 1 and metric_points >= 1, got {num_leapfrog}, {step_size}, "
                f"{beta_zero}, {temperature}, {regularization}, {fixed_point_steps}, {metric_points}")
        self.num_leapfrog, self.step_size, self.beta_zero = int(num_leapfrog), float(step_size), float(beta_zero)
        self.temperature, self.regularization = float(temperature), float(regularization)
        self.fixed_point_steps, self.metric_points = int(fixed_point_steps), int(metric_points)
        self.metric_hidden = tuple(int(h) for h in metric_hidden)
        self.latent_dim = None

    def check(self, model):
        super().check(model)
        if not hasattr(model.posterior, "reparameterize"):
            raise ConfigError("RHVAE needs a posterior with reparameterize(q, eps)")
        if not self.built:
            self.build_for(model.data_shape, model.latent_dim)

    def build_for(self, data_shape, latent_dim):
        d = int(latent_dim)
        self.latent_dim = d
        layers = [keras.Input(tuple(data_shape)), keras.layers.Flatten()]
        layers += [keras.layers.Dense(h, activation="relu") for h in self.metric_hidden]
        layers += [keras.layers.Dense(d + d * (d - 1) // 2)]
        self.metric_network = keras.Sequential(layers, name="metric_network")
        p = self.metric_points
        self.centroids = self.add_weight(shape=(p, d), initializer="zeros", trainable=False, name="centroids")
        self.factors = self.add_weight(shape=(p, d, d), initializer="zeros", trainable=False, name="factors")
        self.num_centroids = self.add_weight(shape=(), dtype="int32", initializer="zeros", trainable=False,
                                             name="num_centroids")
        self.built = True

    def metric_factors(self, x, training=False):
        """L_psi(x) [B, d, d]: lower triangular, diagonal exp(.) of the network's first d outputs."""
        out = self.metric_network(tf.cast(x, tf.float32), training=training)
        d = self.latent_dim
        diag = tf.exp(out[:, :d])
        if d == 1:
            return diag[:, :, None]
        # the d(d-1)/2 strictly-lower entries: a (d-1)x(d-1) lower triangle moved one row down
        lower = tf.pad(tfp.math.fill_triangular(out[:, d:]), [[0, 0], [1, 0], [0, 1]])
        return lower + tf.linalg.diag(diag)

    def stored_metric(self):
        """(centroids, factors) stored by :meth:`fit_metric`; raises if it was never called."""
        n = int(self.num_centroids.numpy())
        if n == 0:
            raise ConfigError("the RHVAE metric is not fitted: call model.fit_metric(x) (fit() does it at its end)")
        return tf.convert_to_tensor(self.centroids)[:n], tf.convert_to_tensor(self.factors)[:n]

    def metric_inverse_fn(self, centroids, factors):
        """z -> G^{-1}(z) for these centroids and factors (their L L^T computed once)."""
        matrices = tf.matmul(factors, factors, transpose_b=True)
        return lambda z: inverse_metric_from_matrices(z, centroids, matrices, self.temperature, self.regularization)

    def batch_metric(self, model, q, x, training):
        """(centroids, factors) of the global batch: mu(x_j) and L(x_j), all-gathered under tf.distribute."""
        centroids, factors = q.mean(), self.metric_factors(x, training=training)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            centroids, factors = ctx.all_gather(centroids, axis=0), ctx.all_gather(factors, axis=0)
        return centroids, factors

    def per_example_loss(self, model, terms):
        q, x, y = terms["q"], terms["x"], terms["y"]
        z0, gamma, log_q0 = initial_state(model, terms)
        metric_inv = self.metric_inverse_fn(*self.batch_metric(model, q, x, terms["training"]))
        prior = model.prior_distribution()

        def log_joint(z):
            return model.decode(z, y, training=terms["training"]).log_prob(x) + prior.log_prob(z)

        z, rho, log_det_a0 = riemannian_hamiltonian_flow(z0, gamma, log_joint, metric_inv, self.num_leapfrog,
                                                         self.step_size, self.beta_zero, self.fixed_point_steps)
        log_n_gamma = tf.reduce_sum(-0.5 * _LOG_2PI - 0.5 * tf.square(gamma), axis=-1)
        bound = log_joint(z) + log_normal_metric(rho, metric_inv(z)) - log_q0 - log_n_gamma - 0.5 * log_det_a0
        return -bound

    def fit_metric(self, model, x, y=None, seed=0, batch_size=500):
        """Store mu(x_i) and L(x_i) of a seeded random subset of at most ``metric_points`` of x."""
        x = np.asarray(x)
        n = min(len(x), self.metric_points)
        idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
        cs, ls = [], []
        for start in range(0, n, batch_size):
            xb = tf.cast(x[idx[start:start + batch_size]], tf.float32)
            yb = None if y is None or not model.conditional else np.asarray(y)[idx[start:start + batch_size]]
            cs.append(model.encode(xb, yb).mean().numpy())
            ls.append(self.metric_factors(xb).numpy())
        c, f = np.zeros(self.centroids.shape, np.float32), np.zeros(self.factors.shape, np.float32)
        c[:n], f[:n] = np.concatenate(cs), np.concatenate(ls)
        self.centroids.assign(c)
        self.factors.assign(f)
        self.num_centroids.assign(n)
        return n

    def get_config(self):
        config = super().get_config()
        for key in ("num_samples", "num_groups"):
            config.pop(key, None)
        return {**config, "num_leapfrog": self.num_leapfrog, "step_size": self.step_size,
                "beta_zero": self.beta_zero, "temperature": self.temperature,
                "regularization": self.regularization, "fixed_point_steps": self.fixed_point_steps,
                "metric_hidden": list(self.metric_hidden), "metric_points": self.metric_points}

