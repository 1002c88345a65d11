r"""Hyperspherical latents (Davidson et al. 2018, "Hyperspherical Variational Auto-Encoders"): a von
Mises-Fisher posterior vMF(mu(x), kappa(x)) on the sphere S^{m-1} and the uniform prior on it.

The distributions are TFP's (``tfd.VonMisesFisher``: log-density, mean, the closed-form KL to
``tfd.SphericalUniform``), but TFP's vMF sampler is not reparameterised for m != 3 (a rejection
sampler).  :func:`vmf_from_noise` draws a reparameterised sample from explicit standard-normal
noise eps [..., m], as Davidson et al. (and Wood 1994) construct it:

* w = mu . z, the cosine to the mean direction, has density prop. to exp(kappa w) (1 - w^2)^((m-3)/2)
  on [-1, 1]; it is drawn by the inverse of its CDF at u = Phi(eps_0), the CDF integrated by the
  trapezoid rule on a 513-point grid of s = 1 - w that adapts to kappa (s_j = s_max (j/512)^2,
  s_max = min(2, (m + 37) / kappa)), so dw/dkappa is the implicit-reparameterisation gradient
  -dF/dkappa / f of the tabulated CDF (Figurnov et al. 2018), not Davidson et al.'s rejection-
  sampler correction term;
* v = eps_{1:} / ||eps_{1:}||, uniform on the sphere orthogonal to e_1, z' = (w, sqrt(1 - w^2) v);
* z = H z', the Householder reflection taking e_1 to mu.

Any draw is thus a deterministic function of (mu, kappa, eps), which the exported endpoints need.
Needs m >= 3 (for m = 2 the density of w is unbounded at w = +-1).

The log-densities are written with operations ONNX has (:class:`VonMisesFisher`, :class:`SphericalUniform`):
log I_v(kappa) by its power series summed in float64 in log space (:func:`log_bessel_iv`), exact to
float64 rounding for kappa <= :data:`MAX_CONCENTRATION`, where the posterior caps kappa.
"""
import functools
import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from kvae.errors import ConfigError
from kvae.models.vqvae.code_prior import normal_cdf, one_hot
from kvae.parts.contracts import Posterior, Prior

tfd = tfp.distributions

GRID = 512


def vmf_cosine(u, kappa, dim):
    """w with P(w <= .) = u under the vMF's cosine density on S^{dim-1}: u [..., B], kappa [B] -> [..., B]."""
    a = (dim - 3) / 2.0
    kappa = tf.convert_to_tensor(kappa, tf.float32)
    s_max = tf.minimum(2.0, (dim + 37.0) / kappa)  # e^-(~35) of the mass lies beyond
    t = tf.square(tf.linspace(0.0, 1.0, GRID + 1))
    s = s_max[..., None] * t  # [B, G+1]
    inner = tf.maximum(s * (2.0 - s), 1e-30)
    log_g = -kappa[..., None] * s + (a * tf.math.log(inner) if a > 0 else 0.0)
    g = tf.exp(log_g - tf.reduce_max(log_g, axis=-1, keepdims=True))
    area = 0.5 * (g[..., 1:] + g[..., :-1]) * (s[..., 1:] - s[..., :-1])  # [B, G]
    cdf = tf.concat([tf.zeros_like(area[..., :1]), tf.cumsum(area, axis=-1)], axis=-1)
    cdf = cdf / cdf[..., -1:]  # [B, G+1], 0 .. 1
    # segment j (1..G) with cdf[j-1] <= u < cdf[j]: count of interior grid points below u
    u = tf.clip_by_value(u, 1e-7, 1.0 - 1e-7)
    inner_cdf = cdf[..., 1:-1]  # [B, G-1]
    j = 1 + tf.reduce_sum(tf.cast(inner_cdf < u[..., None], tf.int32), axis=-1)  # [..., B] in 1..G

    def pick(table, index):  # table [B, G+1], index [..., B] -> [..., B], by one-hot (exports to ONNX)
        return tf.reduce_sum(one_hot(index, GRID + 1) * table, axis=-1)

    c0, c1, s0, s1 = pick(cdf, j - 1), pick(cdf, j), pick(s, j - 1), pick(s, j)
    frac = (u - c0) / tf.maximum(c1 - c0, 1e-30)
    return 1.0 - (s0 + frac * (s1 - s0))


def householder_to(mu, x):
    """H x for the reflection H taking e_1 to the unit vector mu (both [..., m]; identity when mu = e_1)."""
    e1 = tf.one_hot(0, tf.shape(mu)[-1], dtype=mu.dtype)
    r = e1 - mu
    n2 = tf.reduce_sum(r * r, axis=-1, keepdims=True)
    coef = 2.0 * tf.reduce_sum(r * x, axis=-1, keepdims=True) / tf.maximum(n2, 1e-12)
    return x - tf.where(n2 > 1e-12, coef, 0.0) * r


def vmf_from_noise(mean_direction, concentration, eps):
    """A reparameterised draw z ~ vMF(mu, kappa) from standard-normal eps [..., B, m] (module docstring)."""
    mu = tf.convert_to_tensor(mean_direction, tf.float32)
    eps = tf.convert_to_tensor(eps, tf.float32)
    dim = int(mu.shape[-1])
    w = vmf_cosine(normal_cdf(eps[..., 0]), concentration, dim)[..., None]
    v = tf.math.l2_normalize(eps[..., 1:], axis=-1)
    z0 = tf.concat([w, tf.sqrt(tf.maximum(1.0 - w * w, 0.0)) * v], axis=-1)
    return householder_to(mu, z0)


#: the posterior's concentration cap, within the range where :func:`log_bessel_iv`'s series is exact
MAX_CONCENTRATION = 5000.0
_SERIES_TERMS = 3200


@functools.lru_cache(maxsize=None)
def _series_constants(v):
    """(2k + v, -log k! - log Gamma(k + v + 1)) for k < 3200, computed once per order v."""
    from scipy.special import gammaln

    k = np.arange(_SERIES_TERMS, dtype=np.float64)
    return 2.0 * k + v, -(gammaln(k + 1.0) + gammaln(k + v + 1.0))


def log_bessel_ive(v, x):
    """log(I_v(x) e^-x) for a fixed order v >= 0 and x in (0, MAX_CONCENTRATION], float64: the power
    series I_v(x) = sum_k (x/2)^(2k+v) / (k! Gamma(k+v+1)) summed in log space (its terms peak near
    k = x/2; 3200 terms cover x <= 5000 with a margin of 12 standard deviations)."""
    power, const = _series_constants(float(v))
    x = tf.cast(x, tf.float64)
    return tf.reduce_logsumexp(power * tf.math.log(x / 2.0)[..., None] + const, axis=-1) - x


def log_bessel_iv(v, x):
    """log I_v(x) (float32) from :func:`log_bessel_ive`."""
    return tf.cast(log_bessel_ive(v, x) + tf.cast(x, tf.float64), tf.float32)


def log_sphere_area(dim):
    """log |S^{dim-1}| = log 2 + (dim/2) log pi - log Gamma(dim/2) (a Python float)."""
    return math.log(2.0) + dim / 2.0 * math.log(math.pi) - math.lgamma(dim / 2.0)


class VonMisesFisher(tfd.VonMisesFisher):
    """``tfd.VonMisesFisher`` whose log-density is written kappa (mu . z - 1) + (log C_m(kappa) + kappa),
    log C_m(kappa) = (m/2 - 1) log kappa - (m/2) log 2 pi - log I_{m/2-1}(kappa), the bracket computed in
    float64 with :func:`log_bessel_ive` (ONNX-exportable, and no float32 cancellation at large kappa).
    Its KL to the uniform and its entropy are TFP's, on the same log-normaliser."""

    def _scaled_log_c(self, kappa):
        """log C_m(kappa) + kappa (float32 from float64)."""
        m = int(self.mean_direction.shape[-1])
        k64 = tf.cast(kappa, tf.float64)
        return tf.cast((m / 2.0 - 1.0) * tf.math.log(k64) - (m / 2.0) * math.log(2.0 * math.pi)
                       - log_bessel_ive(m / 2.0 - 1.0, k64), tf.float32)

    def _log_normalization(self, concentration=None):
        kappa = tf.convert_to_tensor(self.concentration if concentration is None else concentration)
        return kappa - self._scaled_log_c(kappa)

    def _log_prob(self, x):
        kappa = tf.convert_to_tensor(self.concentration)
        inner = tf.reduce_sum(x * (self.mean_direction + tf.zeros_like(kappa)[..., None]), axis=-1)
        return kappa * (inner - 1.0) + self._scaled_log_c(kappa)


class SphericalUniform(tfd.SphericalUniform):
    """``tfd.SphericalUniform`` whose log-density is the constant -log |S^{m-1}| (ONNX-exportable)."""

    def _log_prob(self, x):
        return tf.zeros_like(x[..., 0]) - log_sphere_area(self.dimension)


@keras.saving.register_keras_serializable(package="kvae")
class VonMisesFisherPosterior(Posterior):
    """q(z|x) = vMF(mu(x), kappa(x)) on S^{m-1} (Davidson et al. 2018): mu = the normalised first m
    outputs of a Dense layer, kappa = softplus(its last output) + 1 (as Davidson et al. and pythae),
    capped at :data:`MAX_CONCENTRATION`.
    Parameters: ``mean_direction`` [B, m], ``concentration`` [B]."""

    factorized = False
    param_names = ("mean_direction", "concentration")

    def __init__(self, latent_dim, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        if self.latent_dim < 3:
            raise ConfigError(f"the vMF posterior needs latent_dim >= 3, got {latent_dim}")
        self.dense = keras.layers.Dense(self.latent_dim + 1, name="params")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, h):
        raw = tf.cast(self.dense(h), tf.float32)
        kappa = tf.minimum(tf.nn.softplus(raw[..., -1]) + 1.0, MAX_CONCENTRATION)
        return tf.math.l2_normalize(raw[..., :-1], axis=-1), kappa

    def distribution(self, params):
        mu, kappa = params
        return VonMisesFisher(mu, kappa)

    def reparameterize(self, q, eps):
        """z = vmf_from_noise(mu, kappa, eps) for standard-normal eps [..., B, m]."""
        return vmf_from_noise(q.mean_direction, q.concentration, eps)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@keras.saving.register_keras_serializable(package="kvae")
class SphericalUniformPrior(Prior):
    """p(z) uniform on the unit sphere S^{m-1} (``tfd.SphericalUniform``); pythae's hypersphere
    sampler draws from it.  ``from_noise(eps) = eps / ||eps||``."""

    def __init__(self, latent_dim, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)

    def build(self, input_shape=None):
        self.built = True

    def distribution(self):
        return SphericalUniform(self.latent_dim)

    def from_noise(self, eps):
        return tf.math.l2_normalize(tf.convert_to_tensor(eps, tf.float32), axis=-1)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}
