"""Likelihood heads p(x|z): Keras 3 layers from decoder features to a ``tfd.Distribution`` over x.

Contract (shared by every likelihood):

* ``layer(features)`` returns the distribution *parameters* as a tuple of float32 tensors;
* ``layer.distribution(params)`` returns a ``tfd.Distribution`` whose event shape is the
  data shape (``tfd.Independent`` over pixels), so ``log_prob(x)`` is one number per example;
* ``layer.support`` is ``"binary"`` or ``"real"`` and drives input validation;
* ``layer.normalised`` says whether ``log_prob`` is a normalised log-density (the MS-SSIM head's is
  a reconstruction score: the model then has no NLL, ELBO or exported ``log_prob``);
* ``layer.images(params, uniform)`` is what a sampler shows: E[x|z] for factorised likelihoods,
  an ancestral draw driven by the uniform noise for autoregressive ones (``needs_uniform``).

The head is a Dense layer applied on the last axis when the decoder features already have the
data's spatial shape (a 1x1 convolution), otherwise Flatten + Dense + Reshape.  Parameters are
cast to float32 so that log-probabilities stay float32 under mixed precision.
"""
import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kvae import registry
from kvae.parts.contracts import Likelihood

tfd = tfp.distributions


class LikelihoodHead(Likelihood):
    """Maps decoder features to ``num_params`` tensors of the event shape with one Dense layer
    (spectrally normalised with ``spectral_norm=True``, as the RAE-SN decoder needs)."""

    num_params = 1
    support = "real"
    needs_uniform = False
    normalised = True  # log_prob is a normalised log-density (False: a reconstruction score, no NLL)

    def images(self, params, uniform=None):
        """E[x|z] from the parameters (deterministic)."""
        return self.distribution(params).mean()

    def named_params(self, params):
        """The parameters an exported ``decode`` returns, by name."""
        return dict(zip(self.param_names, params))

    def __init__(self, event_shape, spectral_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.event_shape = tuple(int(d) for d in event_shape)
        self.spectral_norm = bool(spectral_norm)

    def build(self, features_shape):
        features_shape = tuple(features_shape)
        self._spatial = features_shape[1:-1] == self.event_shape[:-1]
        channels = self.event_shape[-1]
        units = self.num_params * (channels if self._spatial else math.prod(self.event_shape))
        shape = features_shape if self._spatial else (features_shape[0], math.prod(features_shape[1:]))
        self.dense = keras.layers.Dense(units, name="params")
        if self.spectral_norm:
            self.dense = keras.layers.SpectralNormalization(self.dense, name="params_sn")
        self.dense.build(shape)

    def raw_params(self, features, split=True):
        """The head's output split into ``num_params`` float32 tensors of shape [B, *event_shape]
        (one tensor with ``num_params * C`` channels when ``split=False``)."""
        if self._spatial:
            out = self.dense(features)
        else:
            flat = keras.ops.reshape(features, (-1, math.prod(features.shape[1:])))
            out = self.dense(flat)
        out = keras.ops.cast(out, "float32")
        out = keras.ops.reshape(out, (-1,) + self.event_shape[:-1] + (self.num_params * self.event_shape[-1],))
        if self.num_params == 1 or not split:
            return (out,)
        return tuple(keras.ops.split(out, self.num_params, axis=-1))

    def call(self, features):
        return self.raw_params(features)

    def get_config(self):
        return {**super().get_config(), "event_shape": list(self.event_shape), "spectral_norm": self.spectral_norm}


def bernoulli_log_prob(logits, x):
    """log Bernoulli(x; sigmoid(logits)) for x in {0, 1}, broadcasting, from ops that convert to ONNX
    (TFP's uses MulNoNan and the cross-entropy op Log1p, which do not)."""
    x = tf.cast(x, logits.dtype)
    return logits * x - tf.nn.relu(logits) - tf.nn.softplus(-tf.abs(logits))


class _LogitBernoulli(tfd.Bernoulli):
    """``tfd.Bernoulli`` with :func:`bernoulli_log_prob`: the same numbers on {0, 1}, exportable."""

    def _log_prob(self, x):
        return bernoulli_log_prob(self._logits_parameter_no_checks(), x)


@keras.saving.register_keras_serializable(package="kvae")
class BernoulliLikelihood(LikelihoodHead):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(logit_i(z))), for binary images."""

    support = "binary"
    param_names = ("logits",)

    def named_params(self, params):
        return {"probs": tf.sigmoid(params[0]), "logits": params[0]}

    def distribution(self, params):
        (logits,) = params
        return tfd.Independent(
            _LogitBernoulli(logits=logits, dtype=tf.float32),
            reinterpreted_batch_ndims=len(self.event_shape),
        )


@keras.saving.register_keras_serializable(package="kvae")
class GaussianLikelihood(LikelihoodHead):
    r"""p(x|z) = prod_i N(x_i; mu_i(z), sigma_i^2), for real-valued data.

    ``scale`` is a positive float (fixed sigma), ``"learned"`` (one trainable sigma per data
    dimension, shared by all examples) or ``"predicted"`` (sigma_i(z) output by the decoder).
    """

    param_names = ("loc", "scale")

    def __init__(self, event_shape, scale="learned", min_scale=1e-3, **kwargs):
        if not (scale in ("learned", "predicted") or (isinstance(scale, (int, float)) and scale > 0)):
            from kvae.errors import ConfigError

            raise ConfigError(f"scale must be a positive number, 'learned' or 'predicted', got {scale!r}")
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


class PixelCNNBernoulli(tfd.Distribution):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(logit_i(x_<i, cond(z)))) with a PixelCNN network.

    ``log_prob`` is one network pass; ``sample`` is the pixel-by-pixel ancestral sampler; ``mean``
    is not available in closed form (kvae's ``sample``/``reconstruct`` then draw instead).
    """

    def __init__(self, network, conditioning, event_shape, name="PixelCNNBernoulli"):
        parameters = dict(locals())
        self._network = network
        self._cond = tf.convert_to_tensor(conditioning, tf.float32)
        self._event = tuple(int(d) for d in event_shape)
        super().__init__(dtype=tf.float32, reparameterization_type=tfd.NOT_REPARAMETERIZED, validate_args=False,
                         allow_nan_stats=True, parameters=parameters, name=name)

    @property
    def conditioning(self):
        return self._cond

    def _batch_shape(self):
        return self._cond.shape[:-3]

    def _batch_shape_tensor(self):
        return tf.shape(self._cond)[:-3]

    def _event_shape(self):
        return tf.TensorShape(self._event)

    def _event_shape_tensor(self):
        return tf.constant(self._event, tf.int32)

    def logits(self, x):
        """Per-pixel logits given x (any leading dims broadcasting against the batch shape)."""
        x = tf.cast(x, tf.float32)
        # broadcast x's and the conditioning's leading dims against each other with adds (ONNX-friendly)
        xb = x + tf.zeros_like(self._cond[..., :1])
        cb = self._cond + tf.zeros_like(x[..., :1])
        flat = self._network(tf.reshape(xb, tf.concat([[-1], self._event], 0)),
                             tf.reshape(cb, tf.concat([[-1], tf.shape(self._cond)[-3:]], 0)))
        return tf.reshape(flat, tf.shape(xb)), xb

    def _log_prob(self, x):
        logits, xb = self.logits(x)
        return tf.reduce_sum(bernoulli_log_prob(logits, xb), axis=[-3, -2, -1])

    def _sample_n(self, n, seed=None):
        from kvae.nn.pixelcnn import compiled_ancestral_sample

        cond = tf.broadcast_to(self._cond, tf.concat([[n], tf.shape(self._cond)], 0))
        flat_cond = tf.reshape(cond, tf.concat([[-1], tf.shape(self._cond)[-3:]], 0))
        uniform = tf.random.stateless_uniform(
            tf.concat([tf.shape(flat_cond)[:1], self._event], 0),
            seed=tf.cast(seed, tf.int32) if seed is not None else tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32))
        uniform = tf.ensure_shape(uniform, [None, *self._event])
        x = compiled_ancestral_sample(self._network, flat_cond, uniform)
        return tf.reshape(x, tf.concat([[n], tf.shape(self._cond)[:-3], self._event], 0))


@keras.saving.register_keras_serializable(package="kvae")
class PixelCNNLikelihood(LikelihoodHead):
    """PixelCNN decoder for binary images (van den Oord et al. 2016; VLAE, Chen et al. 2017).

    The decoder network's features become a ``cond_channels`` feature map of the image's size
    (a per-pixel Dense layer, or Dense + Reshape) that a :class:`~kvae.nn.PixelCNNNetwork`
    sees in every masked layer (``conditioning="every_layer"``) or concatenated to the image at its
    input (``conditioning="input"``, VLAE's).  ``num_layers`` x ``kernel_size`` sets the receptive
    field (``receptive_field`` reports it); 6 layers of 3x3 is VLAE's local decoder.
    """

    support = "binary"
    param_names = ("conditioning",)

    def __init__(self, event_shape, num_layers=6, kernel_size=3, filters=32, cond_channels=4,
                 conditioning="every_layer", **kwargs):
        self.cond_channels = int(cond_channels)
        self.num_params = self.cond_channels
        super().__init__(event_shape, **kwargs)
        if len(self.event_shape) != 3:
            from kvae.errors import ConfigError

            raise ConfigError(f"a PixelCNN decoder needs image data (H, W, C), got {self.event_shape}")
        from kvae.nn.pixelcnn import PixelCNNNetwork

        self.network = PixelCNNNetwork(self.event_shape[-1], num_layers, kernel_size, filters,
                                       conditioning=conditioning, name="pixelcnn")

    @property
    def memory_factor(self):
        return 4 * self.network.filters

    @property
    def receptive_field(self):
        return self.network.receptive_field()

    def build(self, features_shape):
        super().build(features_shape)
        shape = (None,) + self.event_shape
        if not self.network.built:
            self.network.build(shape, shape[:-1] + (self.cond_channels * self.event_shape[-1],))

    def call(self, features):
        return self.raw_params(features, split=False)

    needs_uniform = True

    def distribution(self, params):
        (cond,) = params
        return PixelCNNBernoulli(self.network, cond, self.event_shape)

    def images(self, params, uniform=None):
        """Pixel-by-pixel draw x_i = 1[u_i < p(x_i | x_<i, z)] for the given uniform noise."""
        from kvae.nn.pixelcnn import ancestral_sample

        return ancestral_sample(self.network, params[0], uniform)

    def get_config(self):
        net = self.network
        return {**super().get_config(), "num_layers": net.num_layers, "kernel_size": net.kernel_size,
                "filters": net.filters, "cond_channels": self.cond_channels, "conditioning": net.conditioning}


class MSSSIMReconstruction(tfd.Distribution):
    r"""The MS-SSIM VAE's reconstruction term as a distribution-shaped object: ``log_prob(x)`` is
    -(1 - MS-SSIM(x, E[x|z])) (one number per example; :func:`kvae.nn.ssim.ms_ssim`), ``mean()`` and ``sample()`` are E[x|z] =
    sigmoid(logits).  Not a normalised density (``normalised = False``): there is no NLL or ELBO."""

    normalised = False

    def __init__(self, logits, power_factors, filter_size, filter_sigma=1.5, positive="shift",
                 name="MSSSIMReconstruction"):
        parameters = dict(locals())
        self._logits = tf.convert_to_tensor(logits, tf.float32)
        self._factors, self._filter, self._sigma = tuple(power_factors), int(filter_size), float(filter_sigma)
        self._positive = positive
        super().__init__(dtype=tf.float32, reparameterization_type=tfd.FULLY_REPARAMETERIZED, validate_args=False,
                         allow_nan_stats=True, parameters=parameters, name=name)

    def _batch_shape(self):
        return self._logits.shape[:-3]

    def _batch_shape_tensor(self):
        return tf.shape(self._logits)[:-3]

    def _event_shape(self):
        return self._logits.shape[-3:]

    def _event_shape_tensor(self):
        return tf.shape(self._logits)[-3:]

    def _mean(self):
        return tf.sigmoid(self._logits)

    def _sample_n(self, n, seed=None):
        return tf.broadcast_to(self._mean(), tf.concat([[n], tf.shape(self._logits)], 0))

    def _log_prob(self, x):
        from kvae.nn.ssim import ms_ssim

        mean = self._mean() + tf.zeros_like(tf.cast(x, tf.float32))
        x = tf.cast(x, tf.float32) + tf.zeros_like(mean)
        return -(1.0 - ms_ssim(x, mean, self._factors, self._filter, self._sigma, positive=self._positive))


@keras.saving.register_keras_serializable(package="kvae")
class MSSSIMLikelihood(LikelihoodHead):
    """Decoder head of the MS-SSIM VAE (Snell et al. 2017): logits -> E[x|z] = sigmoid(logits), and a
    reconstruction term 1 - MS-SSIM(x, E[x|z]) (:mod:`kvae.nn.ssim`) in place of -log p(x|z).

    Args:
      power_factors: weight of each scale; None picks :func:`kvae.nn.ssim.default_scales` for the image.
      filter_size: Gaussian window in pixels; None with ``power_factors=None`` picks the largest that fits.
      filter_sigma: the window's standard deviation (1.5, Wang et al.).
      positive: how each scale's term is made positive before its power: ``"shift"`` (v + 1) / 2 as
        pythae trains (finite gradients everywhere), or ``"relu"``, TensorFlow's clip at 0 (equal
        to ``tf.image.ssim_multiscale``; NaN gradients where a term is 0).
    """

    support = "real"
    normalised = False
    param_names = ("logits",)

    def __init__(self, event_shape, power_factors=None, filter_size=None, filter_sigma=1.5, positive="shift",
                 **kwargs):
        super().__init__(event_shape, **kwargs)
        from kvae.nn.ssim import check_scales, default_scales

        if positive not in ("shift", "relu"):
            from kvae.errors import ConfigError

            raise ConfigError(f"positive must be 'shift' or 'relu', got {positive!r}")
        self.positive = positive
        if power_factors is None:
            power_factors, filter_size = default_scales(self.event_shape, filter_size)
        elif filter_size is None:
            filter_size = 3
        check_scales(self.event_shape, power_factors, filter_size)
        self.power_factors = tuple(float(p) for p in power_factors)
        self.filter_size, self.filter_sigma = int(filter_size), float(filter_sigma)

    def named_params(self, params):
        return {"probs": tf.sigmoid(params[0]), "logits": params[0]}

    def distribution(self, params):
        (logits,) = params
        return MSSSIMReconstruction(logits, self.power_factors, self.filter_size, self.filter_sigma, self.positive)

    def get_config(self):
        return {**super().get_config(), "power_factors": list(self.power_factors), "filter_size": self.filter_size,
                "filter_sigma": self.filter_sigma, "positive": self.positive}


def get(identifier, event_shape):
    """Return a decoder likelihood from a name ("bernoulli", "gaussian"; :func:`kvae.registry.names`
    ``("likelihood")``), a config dict or a layer (passed through)."""
    return registry.build("likelihood", identifier, event_shape, name="likelihood", label="decoder likelihood")


def register(name, cls):
    """Make ``cls(event_shape, name=...)`` available as ``decoder=name``
    (``kvae.registry.register("likelihood", name, cls)``)."""
    registry.register("likelihood", name, cls)
