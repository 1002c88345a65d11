"""Posterior heads q(z|x): Keras 3 layers that turn encoder features into a ``tfd.Distribution``.

Contract (shared by every posterior):

* ``layer(h)`` returns the posterior *parameters* as a tuple of tensors (exportable);
* ``layer.distribution(params)`` returns a reparameterised ``tfd.Distribution`` with
  event shape ``[latent_dim]``;
* ``layer.reparameterize(q, eps)`` (optional) maps standard-normal noise [B, latent_dim] to a
  sample of q, so the noise can be given explicitly (distributed training, exported endpoints);
* ``layer.factorized`` tells whether ``distribution(params).distribution`` is a batch of
  univariate distributions (one per latent dimension), which enables KL per dimension
  and free bits.
"""
import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kvae import registry

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="kvae")
class GaussianPosterior(keras.layers.Layer):
    r"""Diagonal Gaussian q(z|x) = N(mu(x), diag sigma(x)^2) (Kingma & Welling 2013).

    ``sigma = softplus(a) + min_scale`` keeps the scale positive and away from 0;
    samples are reparameterised, z = mu + sigma * eps.
    """

    factorized = True
    param_names = ("loc", "scale")

    def __init__(self, latent_dim, min_scale=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.min_scale = float(min_scale)
        self.dense = keras.layers.Dense(2 * self.latent_dim, name="params")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, h):
        raw = keras.ops.cast(self.dense(h), "float32")
        loc, raw_scale = keras.ops.split(raw, 2, axis=-1)
        scale = keras.ops.softplus(raw_scale) + self.min_scale
        return loc, scale

    def distribution(self, params):
        loc, scale = params
        return tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)

    def reparameterize(self, q, eps):
        """z = mu + sigma * eps for standard-normal noise eps of shape [B, latent_dim]."""
        normal = q.distribution
        return normal.loc + normal.scale * eps

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "min_scale": self.min_scale}


@keras.saving.register_keras_serializable(package="kvae")
class IAFPosterior(keras.layers.Layer):
    r"""Gaussian posterior followed by T inverse-autoregressive-flow steps (Kingma et al. 2016).

    z_0 ~ N(mu(x), sigma(x)^2); z_t = sigma_t * z_{t-1} + (1 - sigma_t) * m_t with
    [m_t, s_t] = MADE_t(z_{t-1}; c(x)), sigma_t = sigmoid(s_t + forget_bias) (the paper's gated
    update, :class:`kvae.nn.flows.GatedIAFStep`), the MADE also seeing the context c(x) computed from
    the encoder features; log q(z_T|x) = log N(z_0) - sum_t sum_d log sigma_t,d (change of
    variables, TFP's ``TransformedDistribution``; the log-determinants of the flow's own samples
    come from TFP's bijector cache, so no sequential inverse is run).
    """

    factorized = False
    param_names = ("loc", "scale", "context")

    def __init__(self, latent_dim, num_steps=2, hidden_units=(320, 320), context_size=64, min_scale=1e-4,
                 forget_bias=2.0, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.num_steps = int(latent_dim), int(num_steps)
        self.forget_bias = float(forget_bias)
        self.hidden_units, self.context_size = [int(h) for h in hidden_units], int(context_size)
        self.min_scale = float(min_scale)
        self.gaussian = GaussianPosterior(self.latent_dim, min_scale=min_scale, name="gaussian")
        self.context = keras.layers.Dense(self.context_size, activation="elu", name="context")
        from kvae.nn.flows import made_stack

        self.mades = made_stack(self.latent_dim, self.num_steps, self.hidden_units, context_size=self.context_size,
                                log_scale="raw", name="iaf_made")

    def build(self, input_shape):
        if not self.gaussian.built:
            self.gaussian.build(input_shape)
        if not self.context.built:
            self.context.build(input_shape)
        for made in self.mades:
            if not made.built:
                made.build((None, self.latent_dim))
        self.built = True

    def call(self, h):
        loc, scale = self.gaussian(h)
        return loc, scale, tf.cast(self.context(h), tf.float32)

    def distribution(self, params):
        from kvae.nn.flows import gated_inverse_autoregressive_flow

        loc, scale, context = params
        base = tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)
        return tfd.TransformedDistribution(base, gated_inverse_autoregressive_flow(self.mades, context,
                                                                                   self.forget_bias))

    def reparameterize(self, q, eps):
        """z_T = IAF(mu + sigma * eps); q.log_prob(z_T) then reads the flow's log-det from TFP's cache."""
        normal = q.distribution.distribution
        return q.bijector.forward(normal.loc + normal.scale * eps)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "num_steps": self.num_steps,
                "hidden_units": self.hidden_units, "context_size": self.context_size, "min_scale": self.min_scale,
                "forget_bias": self.forget_bias}


@keras.saving.register_keras_serializable(package="kvae")
class DeterministicPosterior(keras.layers.Layer):
    """z = E(x), a point mass (RAE and plain autoencoders, Ghosh et al. 2020): no density, no KL."""

    factorized = False
    deterministic = True
    param_names = ("z",)

    def __init__(self, latent_dim, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.dense = keras.layers.Dense(self.latent_dim, name="code")

    def build(self, input_shape):
        if not self.dense.built:
            self.dense.build(input_shape)
        self.built = True

    def call(self, h):
        return (keras.ops.cast(self.dense(h), "float32"),)

    def distribution(self, params):
        return tfd.Independent(tfd.Deterministic(params[0]), reinterpreted_batch_ndims=1)

    def reparameterize(self, q, eps):
        """The code itself (eps enters with weight 0 so exported graphs keep the same inputs)."""
        return q.distribution.loc + 0.0 * eps

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


def _planar_radial(kinds):
    def make(latent_dim, name="posterior"):
        from kvae.nn.planar_radial import PlanarRadialPosterior

        return PlanarRadialPosterior(latent_dim, kinds, name=name)

    return make


planar_posterior = _planar_radial("planar,planar,planar,planar")  # posterior="planar"
radial_posterior = _planar_radial("radial,radial,radial,radial")  # posterior="radial"


def get(identifier, latent_dim):
    """Return a posterior from a name ("gaussian"; :func:`kvae.registry.names` ``("posterior")``), a config
    dict or a layer (passed through)."""
    return registry.build("posterior", identifier, latent_dim, name="posterior")


def register(name, cls):
    """Make ``cls(latent_dim, name=...)`` available as ``posterior=name``
    (``kvae.registry.register("posterior", name, cls)``)."""
    registry.register("posterior", name, cls)
