r"""The Poincaré ball and the wrapped normal on it (Mathieu et al. 2019, "Continuous Hierarchical
Representations with Poincaré Variational Auto-Encoders"; Nagano et al. 2019).

The ball B_c^d = {z : c ||z||^2 < 1} has curvature -c.  With s = sqrt(c):

* Möbius addition  x (+) y = ((1 + 2c<x,y> + c||y||^2) x + (1 - c||x||^2) y) / (1 + 2c<x,y> + c^2 ||x||^2 ||y||^2);
* the exponential map at the origin  exp_0(v) = tanh(s ||v||) v / (s ||v||)  and its inverse log_0;
* the distance  d_c(x, y) = (2 / s) artanh(s ||(-x) (+) y||).

The wrapped normal N^W(mu, sigma^2) of Mathieu et al. (2019, eq. 5; pvae's ``WrappedNormal``) puts
N(0, diag sigma^2) on lambda_mu log_mu(z) parallel-transported to the origin, lambda_0 = 2: a draw is
v ~ N(0, diag sigma^2) in the tangent space at the origin and z = mu (+) exp_0(v / 2), i.e. exp_mu of
v / lambda_0 parallel-transported from 0 to mu, so d_c(mu, z) = ||v||.  :class:`PoincareWrap` is the
map w -> mu (+) exp_0(w) as a TFP bijector; :func:`wrapped_normal` applies it to w = v / 2 ~
N(0, diag (sigma / 2)^2), and its density on the ball (w.r.t. Lebesgue measure) is

    log p(z) = log N(w; 0, (sigma / 2)^2) - log|det dz/dw|,   (= log N(v; 0, sigma^2) - d log(1/2) - log|det dz/dw|)
    log|det dz/dw| = (d - 1) log(sinh(2 s r) / (2 s r)) + d log(1 - c ||z||^2),   r = ||w||,

(exp_0 is radial, and Möbius translation preserves the hyperbolic volume lambda_z^d dz,
lambda_z = 2 / (1 - c ||z||^2)); with 2 s r = s d_c(mu, z) this is eq. (5), w.r.t. the Riemannian
measure, plus d log lambda_z, the change to the Lebesgue measure, which cancels in every KL and ELBO.

kvae 0.1 drew z = mu (+) exp_0(v) (no 1/2: its N^W(mu, sigma^2) is the paper's N^W(mu, (2 sigma)^2));
``legacy_scale=True`` keeps that convention, and configs saved without the key load with it.
Points are kept at norm <= (1 - 1e-5) / s (float32 cannot hold the boundary).
"""
import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kvae.errors import ConfigError
from kvae.parts.contracts import Posterior, Prior

tfd, tfb = tfp.distributions, tfp.bijectors

_BOUNDARY = 1e-5


def _sq(x):
    return tf.reduce_sum(tf.square(x), axis=-1, keepdims=True)


def mobius_add(x, y, c=1.0):
    """x (+)_c y for points of the ball [..., d] (broadcasting)."""
    xy = tf.reduce_sum(x * y, axis=-1, keepdims=True)
    x2, y2 = _sq(x), _sq(y)
    num = (1.0 + 2.0 * c * xy + c * y2) * x + (1.0 - c * x2) * y
    return num / tf.maximum(1.0 + 2.0 * c * xy + c * c * x2 * y2, 1e-15)


def project(z, c=1.0):
    """z scaled onto the ball of norm (1 - 1e-5) / sqrt(c) where it lies outside."""
    norm = tf.sqrt(tf.maximum(_sq(z), 1e-30))
    limit = (1.0 - _BOUNDARY) / math.sqrt(c)
    return tf.where(norm > limit, z / norm * limit, z)


def _norm(v):
    return tf.sqrt(tf.maximum(_sq(v), 1e-30))


def expmap0(v, c=1.0):
    """exp_0(v) = tanh(s ||v||) v / (s ||v||)."""
    s = math.sqrt(c)
    r = _norm(v)
    return project(tf.tanh(s * r) / (s * r) * v, c)


def logmap0(y, c=1.0):
    """log_0(y) = artanh(s ||y||) y / (s ||y||), the inverse of :func:`expmap0`."""
    s = math.sqrt(c)
    n = _norm(y)
    return tf.atanh(tf.minimum(s * n, 1.0 - 1e-7)) / (s * n) * y


def distance(x, y, c=1.0):
    """d_c(x, y) = (2 / s) artanh(s ||(-x) (+) y||), [...]."""
    s = math.sqrt(c)
    return 2.0 / s * tf.atanh(tf.minimum(s * _norm(mobius_add(-x, y, c))[..., 0], 1.0 - 1e-7))


def log_sinhc(x):
    """log(sinh(x) / x) for x >= 0: x^2 / 6 - x^4 / 180 + x^6 / 2835 below 0.1, else
    x + log(1 - e^(-2x)) - log(2x) (no overflow for large x; ONNX has no Log1p)."""
    small = x < 0.1
    safe = tf.where(small, tf.ones_like(x), x)
    large = safe + tf.math.log(1.0 - tf.exp(-2.0 * safe)) - tf.math.log(2.0 * safe)
    x2 = tf.square(x)
    return tf.where(small, x2 / 6.0 - x2 * x2 / 180.0 + x2 * x2 * x2 / 2835.0, large)


class PoincareWrap(tfb.Bijector):
    """v in R^d (tangent space at the origin) -> z = loc (+)_c exp_0(v) in the ball (see the module
    docstring); ``loc`` [..., d] batches like the distribution it wraps."""

    def __init__(self, loc, curvature=1.0, validate_args=False, name="poincare_wrap"):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            self._loc = tf.convert_to_tensor(loc, tf.float32)
            self._c = float(curvature)
            super().__init__(forward_min_event_ndims=1, validate_args=validate_args, parameters=parameters,
                             name=name)

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict(loc=tfp.util.ParameterProperties(event_ndims=1))

    @property
    def loc(self):
        return self._loc

    def _forward(self, v):
        return project(mobius_add(self._loc, expmap0(v, self._c), self._c), self._c)

    def _inverse(self, z):
        return logmap0(mobius_add(-self._loc, z, self._c), self._c)

    def _forward_log_det_jacobian(self, v):
        """(d - 1) log sinhc(2 s r) + d log(1 - c ||z||^2), the last term written without forming
        1 - c ||z||^2 (which cancels near the boundary): with y = exp_0(v),
        1 - c ||mu (+) y||^2 = (1 - c ||mu||^2) sech^2(s r) / (1 + 2c <mu, y> + c^2 ||mu||^2 ||y||^2)."""
        c = self._c
        d = tf.cast(tf.shape(v)[-1], tf.float32)
        s = math.sqrt(c)
        sr = s * _norm(v)[..., 0]
        y = expmap0(v, c)
        mu = self._loc + tf.zeros_like(y)
        mu2, y2 = _sq(mu)[..., 0], _sq(y)[..., 0]
        mu_y = tf.reduce_sum(mu * y, axis=-1)
        log_cosh = sr + tf.math.log(1.0 + tf.exp(-2.0 * sr)) - math.log(2.0)
        log_one_minus = (tf.math.log(1.0 - c * mu2) - 2.0 * log_cosh
                         - tf.math.log(1.0 + 2.0 * c * mu_y + c * c * mu2 * y2))
        return (d - 1.0) * log_sinhc(2.0 * sr) + d * log_one_minus

    def _inverse_log_det_jacobian(self, z):
        return -self._forward_log_det_jacobian(self._inverse(z))


LAMBDA_0 = 2.0  # the conformal factor lambda_z = 2 / (1 - c ||z||^2) at the origin


def wrapped_normal(loc, scale, curvature=1.0, legacy_scale=False):
    """N^W(loc, diag scale^2) on the Poincaré ball (Mathieu et al. 2019, eq. 5) as a
    ``tfd.TransformedDistribution`` (event [d]).

    Args:
      loc: the mean, a point of the ball [..., d].
      scale: standard deviations of the normal on lambda_0 log_0(-loc (+) z) [..., d].
      curvature: c > 0.
      legacy_scale: kvae 0.1's convention z = loc (+) exp_0(v) (twice as wide; module docstring).

    Returns:
      The distribution: ``PoincareWrap(loc)`` over N(0, diag (scale / lambda_0)^2) (over N(0, diag scale^2)
      if ``legacy_scale``), the same law as N(0, diag scale^2) through v -> loc (+) exp_0(v / lambda_0).
    """
    scale = tf.convert_to_tensor(scale, tf.float32)
    if not legacy_scale:
        scale = scale / LAMBDA_0
    base = tfd.Independent(tfd.Normal(tf.zeros_like(scale), scale), reinterpreted_batch_ndims=1)
    return tfd.TransformedDistribution(base, PoincareWrap(loc, curvature))


@keras.saving.register_keras_serializable(package="kvae")
class WrappedNormalPosterior(Posterior):
    """q(z|x) = N^W(exp_0(m(x)), diag sigma(x)^2) on the Poincaré ball (Mathieu et al. 2019, eq. 5): the
    encoder's mean m lives in the tangent space at the origin and is mapped into the ball,
    sigma = softplus(a) + min_scale.  Parameters: ``loc`` (in the ball) and ``scale``.
    ``legacy_scale``: kvae 0.1's convention (:func:`wrapped_normal`)."""

    factorized = False
    param_names = ("loc", "scale")

    def __init__(self, latent_dim, curvature=1.0, min_scale=1e-4, legacy_scale=False, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.curvature, self.min_scale = int(latent_dim), float(curvature), float(min_scale)
        self.legacy_scale = bool(legacy_scale)
        if self.curvature <= 0:
            raise ConfigError(f"curvature must be positive, got {curvature}")
        self.dense = keras.layers.Dense(2 * self.latent_dim, name="params")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, h):
        raw = tf.cast(self.dense(h), tf.float32)
        m, a = tf.split(raw, 2, axis=-1)
        return expmap0(m, self.curvature), tf.nn.softplus(a) + self.min_scale

    def distribution(self, params):
        loc, scale = params
        return wrapped_normal(loc, scale, self.curvature, self.legacy_scale)

    def reparameterize(self, q, eps):
        """z = loc (+) exp_0(sigma * eps / 2) for standard-normal eps [..., B, d] (the base normal's
        scale is sigma / 2)."""
        return q.bijector.forward(q.distribution.distribution.scale * eps)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "curvature": self.curvature,
                "min_scale": self.min_scale, "legacy_scale": self.legacy_scale}

    @classmethod
    def from_config(cls, config):
        """A config without ``legacy_scale`` was written by kvae 0.1: its convention."""
        return super().from_config({"legacy_scale": True, **config})


@keras.saving.register_keras_serializable(package="kvae")
class WrappedNormalPrior(Prior):
    """p(z) = N^W(0, scale^2 I) on the Poincaré ball (Mathieu et al. 2019, eq. 5): z = exp_0(v / 2),
    v ~ N(0, scale^2 I), so d_c(0, z) = ||v|` (mean sqrt(pi / 2) = 1.25 in 2-D at scale 1), as pvae's
    and pythae's N^W(0, 1).  ``legacy_scale``: kvae 0.1's convention z = exp_0(v) (:func:`wrapped_normal`)."""

    def __init__(self, latent_dim, curvature=1.0, scale=1.0, legacy_scale=False, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.curvature, self.scale = int(latent_dim), float(curvature), float(scale)
        self.legacy_scale = bool(legacy_scale)

    def build(self, input_shape=None):
        self.built = True

    def distribution(self):
        return wrapped_normal(tf.zeros([self.latent_dim]), tf.fill([self.latent_dim], self.scale), self.curvature,
                              self.legacy_scale)

    def from_noise(self, eps):
        """z = exp_0(scale * eps / 2) for standard-normal eps [N, d] (exp_0(scale * eps) if legacy)."""
        tangent_scale = self.scale if self.legacy_scale else self.scale / LAMBDA_0
        return project(expmap0(tangent_scale * tf.convert_to_tensor(eps, tf.float32), self.curvature),
                       self.curvature)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "curvature": self.curvature,
                "scale": self.scale, "legacy_scale": self.legacy_scale}

    @classmethod
    def from_config(cls, config):
        """A config without ``legacy_scale`` was written by kvae 0.1: its convention."""
        return super().from_config({"legacy_scale": True, **config})
