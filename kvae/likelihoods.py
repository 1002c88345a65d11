"""Likelihood heads p(x|z): Keras 3 layers from decoder features to a ``tfd.Distribution`` over x.

Contract (shared by every likelihood):

* ``layer(features)`` returns the distribution *parameters* as a tuple of float32 tensors;
* ``layer.distribution(params)`` returns a ``tfd.Distribution`` whose event shape is the
  data shape (``tfd.Independent`` over pixels), so ``log_prob(x)`` is one number per example;
* ``layer.support`` is ``"binary"`` or ``"real"`` and drives input validation.

The head is a Dense layer applied on the last axis when the decoder features already have the
data's spatial shape (a 1x1 convolution), otherwise Flatten + Dense + Reshape.  Parameters are
cast to float32 so that log-probabilities stay float32 under mixed precision.
"""
import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


class LikelihoodHead(keras.layers.Layer):
    """Maps decoder features to ``num_params`` tensors of the event shape."""

    num_params = 1
    support = "real"

    def __init__(self, event_shape, **kwargs):
        super().__init__(**kwargs)
        self.event_shape = tuple(int(d) for d in event_shape)

    def build(self, features_shape):
        features_shape = tuple(features_shape)
        self._spatial = features_shape[1:-1] == self.event_shape[:-1]
        channels = self.event_shape[-1]
        if self._spatial:
            self.dense = keras.layers.Dense(self.num_params * channels, name="params")
            self.dense.build(features_shape)
        else:
            self.dense = keras.layers.Dense(self.num_params * math.prod(self.event_shape), name="params")
            self.dense.build((features_shape[0], math.prod(features_shape[1:])))

    def raw_params(self, features):
        """The head's output split into ``num_params`` float32 tensors of shape [B, *event_shape]."""
        if self._spatial:
            out = self.dense(features)
        else:
            flat = keras.ops.reshape(features, (-1, math.prod(features.shape[1:])))
            out = self.dense(flat)
        out = keras.ops.cast(out, "float32")
        out = keras.ops.reshape(out, (-1,) + self.event_shape[:-1] + (self.num_params * self.event_shape[-1],))
        if self.num_params == 1:
            return (out,)
        return tuple(keras.ops.split(out, self.num_params, axis=-1))

    def call(self, features):
        return self.raw_params(features)

    def get_config(self):
        return {**super().get_config(), "event_shape": list(self.event_shape)}


@keras.saving.register_keras_serializable(package="kvae")
class BernoulliLikelihood(LikelihoodHead):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(logit_i(z))), for binary images."""

    support = "binary"

    def distribution(self, params):
        (logits,) = params
        return tfd.Independent(
            tfd.Bernoulli(logits=logits, dtype=tf.float32),
            reinterpreted_batch_ndims=len(self.event_shape),
        )


@keras.saving.register_keras_serializable(package="kvae")
class GaussianLikelihood(LikelihoodHead):
    r"""p(x|z) = prod_i N(x_i; mu_i(z), sigma_i^2), for real-valued data.

    ``scale`` is a positive float (fixed sigma), ``"learned"`` (one trainable sigma per data
    dimension, shared by all examples) or ``"predicted"`` (sigma_i(z) output by the decoder).
    """

    def __init__(self, event_shape, scale="learned", min_scale=1e-3, **kwargs):
        if not (scale in ("learned", "predicted") or (isinstance(scale, (int, float)) and scale > 0)):
            raise ValueError(f"scale must be a positive number, 'learned' or 'predicted', got {scale!r}")
        self.scale = scale
        self.min_scale = float(min_scale)
        self.num_params = 2 if scale == "predicted" else 1
        super().__init__(event_shape, **kwargs)

    def build(self, features_shape):
        super().build(features_shape)
        if self.scale == "learned":
            self.raw_scale = self.add_weight(
                shape=self.event_shape, initializer="zeros", name="raw_scale", dtype="float32"
            )

    def call(self, features):
        params = self.raw_params(features)
        loc = params[0]
        if self.scale == "predicted":
            scale = keras.ops.softplus(params[1]) + self.min_scale
        elif self.scale == "learned":
            scale = keras.ops.softplus(self.raw_scale + 0.5413) + self.min_scale  # softplus(0.5413) = 1
            scale = keras.ops.broadcast_to(scale, keras.ops.shape(loc))
        else:
            scale = keras.ops.full_like(loc, float(self.scale))
        return loc, scale

    def distribution(self, params):
        loc, scale = params
        return tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=len(self.event_shape))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "min_scale": self.min_scale}


_LIKELIHOODS = {"bernoulli": BernoulliLikelihood, "gaussian": GaussianLikelihood}


def get(identifier, event_shape):
    """Return a likelihood head from a name (``"bernoulli"``, ``"gaussian"``) or pass a layer through."""
    if isinstance(identifier, keras.layers.Layer):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    try:
        return _LIKELIHOODS[identifier](event_shape, name="likelihood")
    except KeyError:
        raise ValueError(
            f"unknown decoder likelihood {identifier!r}; choose one of {sorted(_LIKELIHOODS)} or pass a layer"
        ) from None


def register(name, cls):
    """Make ``cls(event_shape, name=...)`` available as ``decoder=name``."""
    _LIKELIHOODS[name] = cls
