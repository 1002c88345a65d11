r"""The Gaussian algebra of a ladder / top-down hierarchy.

* :func:`precision_weighted` — Sønderby et al. 2016 (Ladder VAE), eq. 18–19: the posterior of a
  group merges the bottom-up Gaussian N(mu_hat, sigma_hat^2) with the top-down prior
  N(mu_p, sigma_p^2) by precisions,

      sigma_q^2 = 1 / (sigma_hat^-2 + sigma_p^-2),   mu_q = (mu_hat sigma_hat^-2 + mu_p sigma_p^-2) sigma_q^2;

* :func:`residual` — Vahdat & Kautz 2020 (NVAE), eq. 2: the posterior as a residual on the prior,
  mu_q = mu_p + delta_mu, sigma_q = sigma_p * delta_sigma;
* :func:`normal_kl` — KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2)) per dimension, in closed form.
"""
import tensorflow as tf


def precision_weighted(mu_hat, sigma_hat, mu_p, sigma_p):
    """(mu_q, sigma_q) of the precision-weighted merge (Sønderby et al. 2016, eq. 18-19)."""
    prec_hat, prec_p = sigma_hat ** -2, sigma_p ** -2
    var_q = 1.0 / (prec_hat + prec_p)
    return (mu_hat * prec_hat + mu_p * prec_p) * var_q, tf.sqrt(var_q)


def residual(delta_mu, delta_sigma, mu_p, sigma_p):
    """(mu_q, sigma_q) = (mu_p + delta_mu, sigma_p * delta_sigma) (Vahdat & Kautz 2020, eq. 2)."""
    return mu_p + delta_mu, sigma_p * delta_sigma


def normal_kl(mu_q, sigma_q, mu_p, sigma_p):
    """KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2)) elementwise:
    log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2."""
    return (tf.math.log(sigma_p) - tf.math.log(sigma_q)
            + (tf.square(sigma_q) + tf.square(mu_q - mu_p)) / (2.0 * tf.square(sigma_p)) - 0.5)
