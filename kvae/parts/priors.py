"""Priors p(z): Keras 3 layers whose ``distribution()`` returns a ``tfd.Distribution``.

Contract: ``layer.distribution()`` has event shape ``[latent_dim]`` and empty batch shape;
``layer.from_noise(eps)`` maps standard-normal noise to a draw of p(z) (exported samplers take the
noise as input);
``layer.factorized`` says whether it is a product of univariate distributions (then its
``.distribution`` attribute holds them, batch shape ``[latent_dim]``).  Priors with weights
(flows, mixtures) keep them as Keras variables so they train and save with the model.
"""
import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kvae import registry
from kvae.parts.contracts import Prior

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="kvae")
class StandardNormalPrior(Prior):
    """p(z) = N(0, I), the prior of the VAE (Kingma & Welling 2013)."""

    factorized = True

    def __init__(self, latent_dim, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)

    def build(self, input_shape=None):
        self.built = True

    def call(self, z):
        return self.distribution().log_prob(z)

    def distribution(self):
        zeros = tf.zeros([self.latent_dim], tf.float32)
        return tfd.Independent(tfd.Normal(zeros, 1.0), reinterpreted_batch_ndims=1)

    def from_noise(self, eps):
        """z ~ p(z) from standard-normal noise eps [..., latent_dim] (here z = eps)."""
        return tf.convert_to_tensor(eps, tf.float32)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@keras.saving.register_keras_serializable(package="kvae")
class FlowPrior(Prior):
    r"""Autoregressive-flow prior ("AF prior", Chen et al. 2017): p(z) = N(0, I) pushed through
    ``num_steps`` MADE-driven affine autoregressive steps.

    ``kind="maf"``: log p(z) costs one MADE pass per step and sampling is sequential (D passes);
    ``kind="iaf"``: sampling is one pass per step and log p(z) of arbitrary z is sequential.
    log p(z) = log N(f^{-1}(z); 0, I) + log |det d f^{-1}/dz|.
    """

    factorized = False

    def __init__(self, latent_dim, num_steps=4, hidden_units=(640, 640, 640), kind="maf", **kwargs):
        super().__init__(**kwargs)
        if kind not in ("maf", "iaf"):
            from kvae.errors import ConfigError

            raise ConfigError(f"kind must be 'maf' or 'iaf', got {kind!r}")
        self.latent_dim, self.num_steps, self.kind = int(latent_dim), int(num_steps), kind
        self.hidden_units = [int(h) for h in hidden_units]
        from kvae.nn.flows import made_stack

        self.mades = made_stack(self.latent_dim, self.num_steps, self.hidden_units, name="prior_made")

    def build(self, input_shape=None):
        for made in self.mades:
            if not made.built:
                made.build((None, self.latent_dim))
        self.built = True

    def bijector(self):
        from kvae.nn import flows

        if self.kind == "maf":
            return flows.masked_autoregressive_flow(self.mades)
        return flows.inverse_autoregressive_flow(self.mades)

    def call(self, z):
        return self.distribution().log_prob(z)

    def from_noise(self, eps):
        """z = f(eps): the flow applied to standard-normal noise (sequential for kind="maf")."""
        return self.bijector().forward(tf.convert_to_tensor(eps, tf.float32))

    def distribution(self):
        base = tfd.Independent(tfd.Normal(tf.zeros([self.latent_dim]), 1.0), reinterpreted_batch_ndims=1)
        return tfd.TransformedDistribution(base, self.bijector())

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "num_steps": self.num_steps,
                "hidden_units": self.hidden_units, "kind": self.kind}


@keras.saving.register_keras_serializable(package="kvae")
class VampPrior(Prior):
    r"""VampPrior (Tomczak & Welling 2018): p(z) = (1/K) sum_k q(z | u_k), the model's own posterior at
    K learned pseudo-inputs ``u_k = hardtanh_[0,1](w_k)`` (initialised N(0.05, 0.01) as in the paper).

    The layer is bound to its model (``bind(model)``, called when the model builds its parts) and
    evaluates the model's encoder on the pseudo-inputs, so gradients reach both.  Sampling takes
    the component as explicit noise: ``from_noise(eps, component_uniform)`` picks component
    floor(u K) and returns loc_k + scale_k eps (the exported ``sample`` endpoint takes
    ``component_uniform`` [N] in [0, 1]).  Needs an unconditional model with a Gaussian posterior.
    """

    factorized = False
    needs_component_noise = True

    def __init__(self, latent_dim, num_components=500, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.num_components = int(latent_dim), int(num_components)
        if self.num_components < 1:
            from kvae.errors import ConfigError

            raise ConfigError(f"num_components must be positive, got {num_components}")
        self._model_encode = None

    def bind(self, model):
        from kvae.errors import ConfigError

        if model.conditional:
            raise ConfigError("the VampPrior needs an unconditional model (its components are q(z|u_k) without labels)")
        from kvae.parts.posteriors import FlowPosterior

        # a flow posterior's (loc, scale) are its base Gaussian's, not q(z|u_k): mixing them would be another prior
        if not hasattr(model.posterior, "reparameterize") or getattr(model.posterior, "deterministic", False) or \
                tuple(getattr(model.posterior, "param_names", ())) != ("loc", "scale") or \
                isinstance(model.posterior, FlowPosterior):
            raise ConfigError("the VampPrior needs a Gaussian posterior (loc, scale), not "
                              f"{type(model.posterior).__name__}")
        if getattr(self, "pseudo_inputs", None) is None:
            self.pseudo_inputs = self.add_weight(
                shape=(self.num_components,) + tuple(model.data_shape), name="pseudo_inputs",
                initializer=keras.initializers.RandomNormal(0.05, 0.01))
        self._model_encode = model.encode_params  # a bound method: not tracked as a sub-layer
        self.built = True

    def build(self, input_shape=None):
        self.built = True

    def components(self):
        """(loc, scale) [K, D] of q(z | u_k)."""
        if self._model_encode is None:
            from kvae.errors import ConfigError

            raise ConfigError("the VampPrior is not bound to a model: pass it as a model's prior")
        u = tf.clip_by_value(self.pseudo_inputs, 0.0, 1.0)
        return self._model_encode(u)

    def call(self, z):
        return self.distribution().log_prob(z)

    def distribution(self):
        loc, scale = self.components()
        return tfd.MixtureSameFamily(
            tfd.Categorical(logits=tf.zeros([self.num_components])),
            tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1))

    def from_noise(self, eps, component_uniform=None):
        """z = loc_k + scale_k eps with k = floor(u K) (component_uniform u [N] in [0, 1])."""
        if component_uniform is None:
            from kvae.errors import ConfigError

            raise ConfigError("the VampPrior samples with explicit component noise: from_noise(eps, component_uniform)")
        loc, scale = self.components()
        k = tf.minimum(tf.cast(tf.floor(tf.cast(component_uniform, tf.float32) * self.num_components), tf.int32),
                       self.num_components - 1)
        return tf.gather(loc, k) + tf.gather(scale, k) * tf.convert_to_tensor(eps, tf.float32)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "num_components": self.num_components}


def iaf_prior(latent_dim, name="prior"):
    """``prior="iaf"``: a :class:`FlowPrior` of kind ``"iaf"``."""
    return FlowPrior(latent_dim, kind="iaf", name=name)


def get(identifier, latent_dim):
    """Return a prior from a name ("normal"; :func:`kvae.registry.names` ``("prior")``), a config dict or a
    layer (passed through)."""
    return registry.build("prior", identifier, latent_dim, name="prior")


def register(name, cls):
    """Make ``cls(latent_dim, name=...)`` available as ``prior=name``
    (``kvae.registry.register("prior", name, cls)``)."""
    registry.register("prior", name, cls)
