r"""MADE: masked autoencoder for distribution estimation (Germain et al., ICML 2015), as a Keras 3 layer.

Output unit d (in the chosen input order) depends only on the inputs that come *before* d in
that order, so it can parameterise p(x_d | x_<d) or an autoregressive flow step.  Masks follow
the paper: input k has degree m(k) = its position in the order (1..D); hidden unit degrees lie
in [min degree of the previous layer, D - 1]; a hidden unit sees units of degree <= its own, and
output d sees hidden units of degree < m(d).  Masks are built in numpy and kept as
non-trainable weights, so they save with the model and export to ONNX as constants.

An optional context vector (e.g. the encoder's output, for IAF posteriors) is fed to every
hidden layer and to the output through unmasked weights: it may influence every output.

The layer returns ``(shift, log_scale)`` for an affine autoregressive step
``y_d = x_d * exp(log_scale_d) + shift_d``, with a bounded log-scale for stability
(``"tanh"``: log_scale = bound * tanh(raw / bound)), or ``(m, s)`` unchanged (``"raw"``) for
the gated IAF step of Kingma et al. 2016 (:class:`kvae.nn.flows.GatedIAFStep`), which applies its
own sigmoid gate.  The last layer starts at zero, so every flow step starts near the identity.
"""
import keras
import numpy as np
import tensorflow as tf

from kvae.errors import ConfigError


def input_order(kind, size, seed=0):
    """Positions (1..D) of the inputs: ``"natural"``, ``"reversed"``, ``"random"`` or an explicit list."""
    if isinstance(kind, (list, tuple, np.ndarray)):
        order = np.asarray(kind, np.int64)
        if sorted(order.tolist()) != list(range(1, size + 1)):
            raise ConfigError(f"an explicit order must be a permutation of 1..{size}, got {list(order)}")
        return order
    if kind == "natural":
        return np.arange(1, size + 1)
    if kind == "reversed":
        return np.arange(size, 0, -1)
    if kind == "random":
        return np.random.RandomState(seed).permutation(size) + 1
    raise ConfigError(f"unknown input order {kind!r}; use natural, reversed, random or a list")


def made_masks(order, hidden_units, seed=0):
    """Masks [D, H1], [H1, H2], ..., [H_L, D] for inputs with degrees ``order`` (numpy float32)."""
    size = len(order)
    degrees = [np.asarray(order)]
    for units in hidden_units:
        low = min(int(degrees[-1].min()), size - 1)
        # evenly spread degrees (deterministic, covers every degree when units >= D - 1)
        degrees.append(np.sort(np.arange(units) % max(1, size - low) + low) if size > 1 else np.ones(units, int))
    masks = [(d_out[None, :] >= d_in[:, None]).astype(np.float32) for d_in, d_out in zip(degrees[:-1], degrees[1:])]
    masks.append((np.asarray(order)[None, :] > degrees[-1][:, None]).astype(np.float32))
    return masks


@keras.saving.register_keras_serializable(package="kvae")
class MADE(keras.layers.Layer):
    """Masked dense autoregressive network: ``made(x[, context]) -> (shift, log_scale)``, each [..., D]."""

    def __init__(self, event_size, hidden_units=(64, 64), order="natural", context_size=None,
                 activation="relu", log_scale="tanh", log_scale_bound=3.0, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.event_size = int(event_size)
        self.hidden_units = [int(h) for h in hidden_units]
        self.order_spec = order if isinstance(order, str) else [int(o) for o in order]
        self.order = input_order(order, self.event_size, seed)
        self.context_size = None if context_size is None else int(context_size)
        self.activation = keras.activations.get(activation)
        self.activation_name = activation
        if log_scale not in ("tanh", "raw"):
            raise ConfigError(f"log_scale must be 'tanh' or 'raw', got {log_scale!r}")
        self.log_scale_kind = log_scale
        self.log_scale_bound = float(log_scale_bound)
        self.seed = int(seed)

    def build(self, input_shape=None):
        masks = made_masks(self.order, self.hidden_units, self.seed)
        sizes = [self.event_size] + self.hidden_units
        self.kernels, self.biases, self.masks, self.context_kernels = [], [], [], []
        for i, mask in enumerate(masks[:-1]):
            self.masks.append(self.add_weight(shape=mask.shape, initializer=keras.initializers.Constant(mask),
                                              trainable=False, name=f"mask_{i}"))
            self.kernels.append(self.add_weight(shape=(sizes[i], sizes[i + 1]), initializer="glorot_uniform",
                                                name=f"kernel_{i}"))
            self.biases.append(self.add_weight(shape=(sizes[i + 1],), initializer="zeros", name=f"bias_{i}"))
            if self.context_size:
                self.context_kernels.append(self.add_weight(
                    shape=(self.context_size, sizes[i + 1]), initializer="glorot_uniform", name=f"context_kernel_{i}"))
        out_mask = np.repeat(masks[-1], 2, axis=1)  # shift and log-scale for each output, interleaved
        self.out_mask = self.add_weight(shape=out_mask.shape, initializer=keras.initializers.Constant(out_mask),
                                        trainable=False, name="mask_out")
        self.out_kernel = self.add_weight(shape=(sizes[-1], 2 * self.event_size), initializer="zeros",
                                          name="kernel_out")
        self.out_bias = self.add_weight(shape=(2 * self.event_size,), initializer="zeros", name="bias_out")
        if self.context_size:  # context reaches every output directly, the first one included
            self.context_out_kernel = self.add_weight(shape=(self.context_size, 2 * self.event_size),
                                                      initializer="zeros", name="context_kernel_out")
        self.built = True

    def call(self, x, context=None):
        if not self.built:
            self.build(x.shape)
        h = tf.cast(x, self.compute_dtype)
        if self.context_size and context is None:
            raise ConfigError("this MADE was built with context_size; pass context=")
        for i, (kernel, bias, mask) in enumerate(zip(self.kernels, self.biases, self.masks)):
            pre = tf.matmul(h, kernel * mask) + bias
            if self.context_size:
                pre = pre + tf.matmul(tf.cast(context, self.compute_dtype), self.context_kernels[i])
            h = self.activation(pre)
        out = tf.matmul(h, self.out_kernel * self.out_mask) + self.out_bias
        if self.context_size:
            out = out + tf.matmul(tf.cast(context, self.compute_dtype), self.context_out_kernel)
        out = tf.cast(out, tf.float32)
        out = tf.reshape(out, tf.concat([tf.shape(out)[:-1], [self.event_size, 2]], 0))
        shift, raw = out[..., 0], out[..., 1]
        if self.log_scale_kind == "tanh":
            return shift, self.log_scale_bound * tf.tanh(raw / self.log_scale_bound)
        return shift, raw

    def get_config(self):
        return {**super().get_config(), "event_size": self.event_size, "hidden_units": self.hidden_units,
                "order": self.order_spec, "context_size": self.context_size, "activation": self.activation_name,
                "log_scale": self.log_scale_kind, "log_scale_bound": self.log_scale_bound, "seed": self.seed}
