r"""Hamiltonian VAE (Caterini, Doucet & Sejdinovic 2018, "Hamiltonian variational auto-encoder";
pythae's HVAE): the posterior sample is moved by K leapfrog steps of Hamiltonian dynamics with
potential U(z) = -log p(x, z) = -log p(x|z) - log p(z), with a deterministic tempering of the
momentum, and the bound is

    ELBO_H = log p(x, z_K) + log N(rho_K; 0, I) - log q(z_0|x) - log N(gamma; 0, I),

z_0 ~ q(z|x), gamma ~ N(0, I), rho_0 = gamma / sqrt(beta_0).  Each step (step size eps):

    rho' = rho - eps/2 grad U(z),  z <- z + eps rho',  rho'' = rho' - eps/2 grad U(z),
    rho <- (sqrt(beta_{k-1}) / sqrt(beta_k)) rho'',
    1 / sqrt(beta_k) = (1 - 1/sqrt(beta_0)) (k/K)^2 + 1/sqrt(beta_0)   (so beta_K = 1).

The leapfrog map is volume preserving; the tempering scales rho by prod_k sqrt(beta_{k-1}/beta_k)
= sqrt(beta_0) per dimension, which cancels the density of rho_0 = gamma / sqrt(beta_0)
against that of gamma: hence the form above (pythae drops the constant -log N(gamma) term; kvae
keeps it, so the loss is the negative bound itself).  The gradients of U are taken inside the
training step (second-order derivatives flow back to the decoder, prior and encoder).
"""
import keras
import numpy as np
import tensorflow as tf

from kvae.errors import ConfigError
from kvae.parts.objectives import Objective


def tempering(k, num_steps, beta_zero):
    """sqrt(beta_k) of the quadratic schedule (module docstring); ``beta_zero`` a float or a tensor."""
    inv0 = 1.0 / beta_zero ** 0.5
    return 1.0 / ((1.0 - inv0) * (k / num_steps) ** 2 + inv0)


def leapfrog(z, rho, grad_potential, step_size):
    """One leapfrog step of H(z, rho) = U(z) + |rho|^2 / 2: returns (z', rho'')."""
    rho_half = rho - 0.5 * step_size * grad_potential(z)
    z_new = z + step_size * rho_half
    return z_new, rho_half - 0.5 * step_size * grad_potential(z_new)


def initial_state(model, terms):
    """(z_0, gamma, log q(z_0|x)) of a Hamiltonian bound: z_0 = reparameterize(q, eps_0) and the momentum
    noise gamma, both N(0, I) noise of the batch's seed (:meth:`standard_noise`, so the same on 1 or N
    replicas), gamma's stream folded apart from eps_0's."""
    q, seed = terms["q"], terms["seed"]
    batch = tf.shape(terms["x"])[0]
    if seed is None:
        eps0, gamma = tf.random.normal([batch, model.latent_dim]), tf.random.normal([batch, model.latent_dim])
    else:
        eps0 = model.standard_noise(batch, seed)
        gamma = model.standard_noise(batch, tf.cast(tf.random.experimental.stateless_fold_in(seed, 4099), tf.int32))
    z0 = model.posterior.reparameterize(q, eps0)
    return z0, gamma, q.log_prob(z0)


def hamiltonian_flow(z0, gamma, log_joint, num_steps, step_size, beta_zero):
    """(z_K, rho_K) from z_0 and gamma through ``num_steps`` tempered leapfrog steps of the potential
    U(z) = -log_joint(z) (per example; its gradient by autodiff, differentiable again).
    ``step_size`` and ``beta_zero`` are floats or tensors (learned)."""
    def grad_potential(z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            u = -tf.reduce_sum(log_joint(z))
        return tape.gradient(u, z)

    z, rho = z0, gamma / beta_zero ** 0.5
    old = beta_zero ** 0.5
    for k in range(1, num_steps + 1):
        z, rho = leapfrog(z, rho, grad_potential, step_size)
        new = tempering(k, num_steps, beta_zero)
        rho = (old / new) * rho
        old = new
    return z, rho


@keras.saving.register_keras_serializable(package="kvae")
class HamiltonianBound(Objective):
    """The HVAE bound (module docstring) as a kvae objective: any model with a reparameterised
    posterior and a normalised likelihood takes ``objective=HamiltonianBound(...)``.

    Args:
      num_leapfrog: leapfrog steps K (pythae's n_lf, 3).
      step_size: leapfrog step size eps (pythae's eps_lf, 0.001).
      beta_zero: initial inverse temperature beta_0 in (0, 1] (pythae's 0.3).
      learn_step_size: train eps (as log eps) with the model.
      learn_beta_zero: train beta_0 (as a logit) with the model.
    """

    def __init__(self, num_leapfrog=3, step_size=0.001, beta_zero=0.3, learn_step_size=False,
                 learn_beta_zero=False, name="hvae", **kwargs):
        kwargs.pop("num_samples", None)
        kwargs.pop("num_groups", None)
        super().__init__(num_samples=1, num_groups=1, name=name, **kwargs)
        if int(num_leapfrog) < 1 or not float(step_size) > 0 or not 0 < float(beta_zero) <= 1:
            raise ConfigError(f"HVAE needs num_leapfrog >= 1, step_size > 0 and 0 < beta_zero <= 1, got "
                              f"{num_leapfrog}, {step_size}, {beta_zero}")
        self.num_leapfrog, self.step_size, self.beta_zero = int(num_leapfrog), float(step_size), float(beta_zero)
        self.learn_step_size, self.learn_beta_zero = bool(learn_step_size), bool(learn_beta_zero)

    def build(self, input_shape=None):
        self.log_step_size = self.add_weight(shape=(), initializer=keras.initializers.Constant(np.log(self.step_size)),
                                             trainable=self.learn_step_size, name="log_step_size")
        logit = np.log(self.beta_zero) - np.log1p(-self.beta_zero) if self.beta_zero < 1 else 10.0
        self.beta_zero_logit = self.add_weight(shape=(), initializer=keras.initializers.Constant(logit),
                                               trainable=self.learn_beta_zero, name="beta_zero_logit")
        self.built = True

    def check(self, model):
        super().check(model)
        if not hasattr(model.posterior, "reparameterize"):
            raise ConfigError("HVAE needs a posterior with reparameterize(q, eps)")
        if not self.built:  # its weights exist before any traced step
            self.build()

    def per_example_loss(self, model, terms):
        q, x, y = terms["q"], terms["x"], terms["y"]
        z0, gamma, log_q0 = initial_state(model, terms)
        step = tf.exp(tf.convert_to_tensor(self.log_step_size)) if self.learn_step_size else self.step_size
        beta_zero = tf.sigmoid(tf.convert_to_tensor(self.beta_zero_logit)) if self.learn_beta_zero else self.beta_zero
        prior = model.prior_distribution()

        def log_joint(z):
            return model.decode(z, y, training=terms["training"]).log_prob(x) + prior.log_prob(z)

        z, rho = hamiltonian_flow(z0, gamma, log_joint, self.num_leapfrog, step, beta_zero)
        standard = -0.5 * np.log(2 * np.pi)
        log_n = lambda v: tf.reduce_sum(standard - 0.5 * tf.square(v), axis=-1)  # noqa: E731
        bound = log_joint(z) + log_n(rho) - log_q0 - log_n(gamma)
        return -bound

    def get_config(self):
        config = super().get_config()
        for key in ("num_samples", "num_groups"):
            config.pop(key, None)
        return {**config, "num_leapfrog": self.num_leapfrog, "step_size": self.step_size,
                "beta_zero": self.beta_zero, "learn_step_size": self.learn_step_size,
                "learn_beta_zero": self.learn_beta_zero}

