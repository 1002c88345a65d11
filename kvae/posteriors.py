"""Posterior heads q(z|x): Keras 3 layers that turn encoder features into a ``tfd.Distribution``.

Contract (shared by every posterior):

* ``layer(h)`` returns the posterior *parameters* as a tuple of tensors (exportable);
* ``layer.distribution(params)`` returns a reparameterised ``tfd.Distribution`` with
  event shape ``[latent_dim]``;
* ``layer.factorized`` tells whether ``distribution(params).distribution`` is a batch of
  univariate distributions (one per latent dimension), which enables KL per dimension
  and free bits.
"""
import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="kvae")
class GaussianPosterior(keras.layers.Layer):
    r"""Diagonal Gaussian q(z|x) = N(mu(x), diag sigma(x)^2) (Kingma & Welling 2013).

    ``sigma = softplus(a) + min_scale`` keeps the scale positive and away from 0;
    samples are reparameterised, z = mu + sigma * eps.
    """

    factorized = True

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

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "min_scale": self.min_scale}


_POSTERIORS = {"gaussian": GaussianPosterior}


def get(identifier, latent_dim):
    """Return a posterior layer from a name (``"gaussian"``) or pass a layer through."""
    if isinstance(identifier, keras.layers.Layer):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    try:
        return _POSTERIORS[identifier](latent_dim, name="posterior")
    except KeyError:
        raise ValueError(
            f"unknown posterior {identifier!r}; choose one of {sorted(_POSTERIORS)} or pass a layer"
        ) from None


def register(name, cls):
    """Make ``cls(latent_dim, name=...)`` available as ``posterior=name``."""
    _POSTERIORS[name] = cls
