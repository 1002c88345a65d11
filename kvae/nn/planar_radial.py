r"""Planar and radial flows (Rezende & Mohamed 2015) as TFP bijectors.

* planar:  f(z) = z + u_hat tanh(w^T z + b),  log|det J| = log|1 + u_hat^T psi(z)|,
  psi(z) = (1 - tanh^2(w^T z + b)) w, with u_hat = u + (m(w^T u) - w^T u) w / ||w||^2,
  m(a) = -1 + softplus(a), which keeps w^T u_hat >= -1 (f invertible).
* radial:  f(z) = z + beta h(alpha, r) (z - z0),  r = ||z - z0||,  h = 1 / (alpha + r),
  log|det J| = (D - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r),  h' = -1 / (alpha + r)^2,
  alpha = softplus(a) > 0, beta = -alpha + softplus(b) >= -alpha (invertible).

Neither has a closed-form inverse: the density of a flow's own samples is read from TFP's bijector
cache (the pre-images it keeps).  :class:`kvae.parts.posteriors.FlowPosterior` stacks them (and gated
IAF steps) after a Gaussian posterior.
"""
import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors


class PlanarFlow(tfb.Bijector):
    """f(z) = z + u_hat tanh(w^T z + b) (module docstring); w, u [D], b scalar."""

    def __init__(self, w, u, b, name="planar"):
        parameters = dict(locals())
        self.w, self.u, self.b = w, u, b
        super().__init__(forward_min_event_ndims=1, validate_args=False, parameters=parameters, name=name)

    def u_hat(self):
        """u + (m(w^T u) - w^T u) w / ||w||^2, with m(a) - a = -1 + softplus(-a) (no cancellation)."""
        wu = tf.reduce_sum(self.w * self.u)
        return self.u + (-1.0 + tf.nn.softplus(-wu)) * self.w / tf.reduce_sum(self.w * self.w)

    def _forward(self, z):
        return z + self.u_hat() * tf.tanh(tf.reduce_sum(z * self.w, -1, keepdims=True) + self.b)

    def _forward_log_det_jacobian(self, z):
        """log(1 + sech^2(a) w^T u_hat) with w^T u_hat = -1 + softplus(w^T u) exactly, written as
        log(tanh^2(a) + sech^2(a) softplus(w^T u)): summing w * u_hat would round w^T u_hat to -1
        once softplus(w^T u) < float32's spacing at w^T u (w^T u <~ -17), and log|det| to -inf where a = 0."""
        act = tf.tanh(tf.reduce_sum(z * self.w, -1) + self.b)
        sech2 = 1.0 - tf.square(act)
        return tf.math.log(tf.square(act) + sech2 * tf.nn.softplus(tf.reduce_sum(self.w * self.u)))


class RadialFlow(tfb.Bijector):
    """f(z) = z + beta h(alpha, r) (z - z0) (module docstring); z0 [D], raw alpha and beta scalars."""

    def __init__(self, z0, alpha_raw, beta_raw, name="radial"):
        parameters = dict(locals())
        self.z0, self.alpha_raw, self.beta_raw = z0, alpha_raw, beta_raw
        super().__init__(forward_min_event_ndims=1, validate_args=False, parameters=parameters, name=name)

    def _alpha_beta(self):
        alpha = tf.nn.softplus(self.alpha_raw)
        return alpha, -alpha + tf.nn.softplus(self.beta_raw)

    def _forward(self, z):
        alpha, beta = self._alpha_beta()
        diff = z - self.z0
        r = tf.norm(diff, axis=-1, keepdims=True)
        return z + beta / (alpha + r) * diff

    def _forward_log_det_jacobian(self, z):
        alpha, beta = self._alpha_beta()
        r = tf.norm(z - self.z0, axis=-1)
        h = 1.0 / (alpha + r)
        d = tf.cast(tf.shape(z)[-1], z.dtype)
        # log(1 + x), not log1p: tf2onnx has no Log1p at opset 17
        return (d - 1.0) * tf.math.log(1.0 + beta * h) + tf.math.log(1.0 + beta * h - beta * r / (alpha + r) ** 2)
