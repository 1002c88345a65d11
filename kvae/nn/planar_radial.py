r"""Planar and radial flows (Rezende & Mohamed 2015) as TFP bijectors, and a posterior that stacks them.

* planar:  f(z) = z + u_hat tanh(w^T z + b),  log|det J| = log|1 + u_hat^T psi(z)|,
  psi(z) = (1 - tanh^2(w^T z + b)) w, with u_hat = u + (m(w^T u) - w^T u) w / ||w||^2,
  m(a) = -1 + softplus(a), which keeps w^T u_hat >= -1 (f invertible).
* radial:  f(z) = z + beta h(alpha, r) (z - z0),  r = ||z - z0||,  h = 1 / (alpha + r),
  log|det J| = (D - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r),  h' = -1 / (alpha + r)^2,
  alpha = softplus(a) > 0, beta = -alpha + softplus(b) >= -alpha (invertible).

Neither has a closed-form inverse: a posterior's log q(z_K|x) is evaluated on its own samples, whose
pre-images TFP's bijector cache keeps (as for kvae's IAF posterior).  The flows' parameters are
learned globally (not amortised by the encoder), as in pythae's VAE_LinNF.

:class:`PlanarRadialPosterior` also takes ``"iaf"`` entries: gated IAF steps (Kingma et al. 2016,
:class:`kvae.nn.flows.GatedIAFStep`) whose MADEs see a context computed from the encoder features, so
one posterior can mix amortised IAF steps with global planar and radial flows, e.g.
``flows="iaf,planar,iaf,radial"``; log q(z_K|x) = log N(z_0) - sum_k log|det J_k| over all of them.
"""
import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kvae.parts.posteriors import GaussianPosterior

tfb, tfd = tfp.bijectors, tfp.distributions


class PlanarFlow(tfb.Bijector):
    """f(z) = z + u_hat tanh(w^T z + b) (module docstring); w, u [D], b scalar."""

    def __init__(self, w, u, b, name="planar"):
        parameters = dict(locals())
        self.w, self.u, self.b = w, u, b
        super().__init__(forward_min_event_ndims=1, validate_args=False, parameters=parameters, name=name)

    def u_hat(self):
        wu = tf.reduce_sum(self.w * self.u)
        return self.u + (-1.0 + tf.nn.softplus(wu) - wu) * self.w / tf.reduce_sum(self.w * self.w)

    def _forward(self, z):
        return z + self.u_hat() * tf.tanh(tf.reduce_sum(z * self.w, -1, keepdims=True) + self.b)

    def _forward_log_det_jacobian(self, z):
        act = tf.tanh(tf.reduce_sum(z * self.w, -1) + self.b)
        return tf.math.log(tf.abs(1.0 + (1.0 - act ** 2) * tf.reduce_sum(self.w * self.u_hat())))


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


@keras.saving.register_keras_serializable(package="kvae")
class PlanarRadialPosterior(keras.layers.Layer):
    """q(z|x): N(mu(x), sigma(x)^2) pushed through planar/radial flows, e.g. ``flows="planar,planar,radial"``
    (pythae's VAE_LinNF), and gated IAF steps (``"iaf"`` entries, amortised through a context from the
    encoder features; ``iaf_hidden``, ``context_size``, ``forget_bias`` as :class:`kvae.parts.posteriors.IAFPosterior`).
    log q(z_K|x) = log N(z_0) - sum_k log|det J_k(z_{k-1})|."""

    factorized = False

    def __init__(self, latent_dim, flows="planar,planar", min_scale=1e-4, iaf_hidden=(320, 320), context_size=64,
                 forget_bias=2.0, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.min_scale = int(latent_dim), float(min_scale)
        self.flows = [f.strip() for f in (flows.split(",") if isinstance(flows, str) else flows) if f.strip()]
        bad = [f for f in self.flows if f not in ("planar", "radial", "iaf")]
        if bad or not self.flows:
            raise ValueError(f"flows must be a comma-separated list of planar/radial/iaf, got {flows!r}")
        self.iaf_hidden, self.context_size = [int(h) for h in iaf_hidden], int(context_size)
        self.forget_bias = float(forget_bias)
        self.gaussian = GaussianPosterior(self.latent_dim, min_scale=min_scale, name="gaussian")
        num_iaf = self.flows.count("iaf")
        self.param_names = ("loc", "scale", "context") if num_iaf else ("loc", "scale")
        self.mades = []
        if num_iaf:
            from kvae.nn.flows import made_stack

            self.context = keras.layers.Dense(self.context_size, activation="elu", name="context")
            self.mades = made_stack(self.latent_dim, num_iaf, self.iaf_hidden, context_size=self.context_size,
                                    log_scale="raw", name="iaf_made")

    def build(self, input_shape):
        if not self.gaussian.built:
            self.gaussian.build(input_shape)
        if self.mades:
            if not self.context.built:
                self.context.build(input_shape)
            for made in self.mades:
                if not made.built:
                    made.build((None, self.latent_dim))
        d = self.latent_dim
        self.flow_params = []
        for i, kind in enumerate(self.flows):
            init = keras.initializers.RandomNormal(0.0, 0.01, seed=i)
            if kind == "iaf":
                self.flow_params.append(None)  # its MADE is in self.mades
            elif kind == "planar":
                self.flow_params.append((
                    self.add_weight(shape=(d,), initializer=init, name=f"planar{i}_w"),
                    self.add_weight(shape=(d,), initializer=init, name=f"planar{i}_u"),
                    self.add_weight(shape=(), initializer="zeros", name=f"planar{i}_b")))
            else:
                self.flow_params.append((
                    self.add_weight(shape=(d,), initializer=init, name=f"radial{i}_z0"),
                    self.add_weight(shape=(), initializer="zeros", name=f"radial{i}_alpha"),
                    self.add_weight(shape=(), initializer="zeros", name=f"radial{i}_beta")))
        self.built = True

    def call(self, h):
        loc, scale = self.gaussian(h)
        if not self.mades:
            return loc, scale
        return loc, scale, tf.cast(self.context(h), tf.float32)

    def bijectors(self, context=None):
        """The flows in the order they are applied to z_0 (``context`` [B, context_size] for IAF steps)."""
        from kvae.nn.flows import GatedIAFStep

        out, mades = [], iter(self.mades)
        for i, (kind, p) in enumerate(zip(self.flows, self.flow_params)):
            if kind == "iaf":
                out.append(GatedIAFStep(next(mades), context, self.forget_bias, name=f"gated_iaf_{i}"))
            else:
                out.append(PlanarFlow(*p) if kind == "planar" else RadialFlow(*p))
        return out

    def distribution(self, params):
        loc, scale = params[0], params[1]
        context = params[2] if len(params) > 2 else None
        base = tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)
        return tfd.TransformedDistribution(base, tfb.Chain(list(reversed(self.bijectors(context)))))

    def reparameterize(self, q, eps):
        """z_K = f_K(...f_1(mu + sigma eps)); q.log_prob(z_K) reads the pre-image from TFP's cache."""
        normal = q.distribution.distribution
        return q.bijector.forward(normal.loc + normal.scale * eps)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "flows": ",".join(self.flows),
                "min_scale": self.min_scale, "iaf_hidden": self.iaf_hidden, "context_size": self.context_size,
                "forget_bias": self.forget_bias}
