"""Priors p(z): Keras 3 layers whose ``distribution()`` returns a ``tfd.Distribution``.

Contract: ``layer.distribution()`` has event shape ``[latent_dim]`` and empty batch shape;
``layer.factorized`` says whether it is a product of univariate distributions (then its
``.distribution`` attribute holds them, batch shape ``[latent_dim]``).  Priors with weights
(flows, mixtures) keep them as Keras variables so they train and save with the model.
"""
import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="kvae")
class StandardNormalPrior(keras.layers.Layer):
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

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


_PRIORS = {"normal": StandardNormalPrior}


def get(identifier, latent_dim):
    """Return a prior layer from a name (``"normal"``) or pass a layer through."""
    if isinstance(identifier, keras.layers.Layer):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    try:
        return _PRIORS[identifier](latent_dim, name="prior")
    except KeyError:
        raise ValueError(
            f"unknown prior {identifier!r}; choose one of {sorted(_PRIORS)} or pass a layer"
        ) from None


def register(name, cls):
    """Make ``cls(latent_dim, name=...)`` available as ``prior=name``."""
    _PRIORS[name] = cls
