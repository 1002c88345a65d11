r"""PixelCNN (van den Oord et al. 2016) as Keras 3 layers, with a receptive field you choose and can read.

* :class:`MaskedConv2D`: a convolution whose kernel is multiplied by a causal mask (raster order).
  Type ``"A"`` (first layer) hides the current pixel, type ``"B"`` lets it through.  All channels
  of a pixel form one unit (so the channels of one pixel are conditionally independent given the
  previous pixels and z).
* :class:`PixelCNNNetwork`: masked type-A convolution, then ``num_layers - 1`` gated residual
  blocks (masked type-B convolution, gate tanh(a) * sigmoid(b), 1x1 convolution, skip connection),
  then per-pixel logits.  The conditioning feature map (computed from z) enters either every layer
  through 1x1 convolutions (``conditioning="every_layer"``, the conditional PixelCNN of van den
  Oord et al. 2016) or once, concatenated to the image at the input (``conditioning="input"``, as
  VLAE describes it).  VLAE's "local" decoder is 6 masked 3x3 layers (Chen et al. 2017).
* :meth:`PixelCNNNetwork.receptive_field`: the exact set of input offsets that can reach an
  output pixel, composed from the masks (single-stack PixelCNNs have a blind spot; it is
  included, not ignored).
* :func:`ancestral_sample`: pixel-by-pixel sampling as one ``tf.while_loop`` with the uniform
  noise as input; each step recomputes only the band of rows inside the receptive field.
"""
import keras
import numpy as np
import tensorflow as tf

from kvae.errors import ConfigError


def causal_mask(kernel_size, mask_type, in_channels, out_channels):
    """[k, k, in, out] numpy mask: rows above the centre, and the centre row left of the centre
    (and the centre itself for type B)."""
    if mask_type not in ("A", "B"):
        raise ConfigError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    k = int(kernel_size)
    c = k // 2
    mask = np.zeros((k, k, in_channels, out_channels), np.float32)
    mask[:c] = 1.0
    mask[c, :c + (1 if mask_type == "B" else 0)] = 1.0
    return mask


def mask_offsets(kernel_size, mask_type):
    """The (dy, dx) offsets a masked kernel reads, relative to the output pixel."""
    m = causal_mask(kernel_size, mask_type, 1, 1)[..., 0, 0]
    c = int(kernel_size) // 2
    return {(int(i) - c, int(j) - c) for i, j in zip(*np.nonzero(m))}


@keras.saving.register_keras_serializable(package="kvae")
class MaskedConv2D(keras.layers.Layer):
    """Convolution with a causal mask (``"A"`` or ``"B"``), 'same' padding, stride 1."""

    def __init__(self, filters, kernel_size=3, mask_type="B", **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.mask_type = int(filters), int(kernel_size), mask_type
        if self.kernel_size % 2 != 1:
            raise ConfigError(f"kernel_size must be odd, got {kernel_size}")

    def build(self, input_shape):
        in_ch = int(input_shape[-1])
        mask = causal_mask(self.kernel_size, self.mask_type, in_ch, self.filters)
        self.mask = self.add_weight(shape=mask.shape, initializer=keras.initializers.Constant(mask),
                                    trainable=False, name="mask")
        self.kernel = self.add_weight(shape=mask.shape, initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")
        self.built = True

    def call(self, x):
        kernel = tf.cast(self.kernel * self.mask, self.compute_dtype)
        return tf.nn.conv2d(tf.cast(x, self.compute_dtype), kernel, 1, "SAME") + tf.cast(self.bias, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "mask_type": self.mask_type}


@keras.saving.register_keras_serializable(package="kvae")
class PixelCNNNetwork(keras.layers.Layer):
    """``network(x, cond) -> logits``: x [N, H, W, C] (binary pixels), cond [N, H, W, c] (from z).

    ``conditioning="every_layer"``: every layer adds a 1x1 convolution of ``cond``.
    ``conditioning="input"``: ``cond`` is concatenated to the image as extra input channels of the
    first (type-A) layer, whose mask covers the image channels only (``cond`` depends on z, not on
    pixels, so the layer reads its whole k x k neighbourhood), and no later layer sees it.
    """

    CONDITIONINGS = ("every_layer", "input")

    def __init__(self, channels=1, num_layers=6, kernel_size=3, filters=32, head_initializer="glorot_uniform",
                 conditioning="every_layer", **kwargs):
        super().__init__(**kwargs)
        self.head_initializer = head_initializer
        if num_layers < 1:
            raise ConfigError("a PixelCNN needs at least one masked layer")
        if conditioning not in self.CONDITIONINGS:
            raise ConfigError(f"conditioning must be one of {self.CONDITIONINGS}, got {conditioning!r}")
        self.conditioning = conditioning
        self.channels, self.num_layers = int(channels), int(num_layers)
        self.kernel_size, self.filters = int(kernel_size), int(filters)
        f = self.filters
        every = conditioning == "every_layer"
        self.first = MaskedConv2D(2 * f, self.kernel_size, "A", name="masked_a")
        # the first layer's kernel over the conditioning channels: 1x1, or k x k unmasked (concatenation)
        self.first_cond = keras.layers.Conv2D(2 * f, 1 if every else self.kernel_size, padding="same",
                                              use_bias=every, name="cond_0")
        self.blocks = [(MaskedConv2D(2 * f, self.kernel_size, "B", name=f"masked_b_{i}"),
                        keras.layers.Conv2D(2 * f, 1, name=f"cond_{i + 1}") if every else None,
                        keras.layers.Conv2D(f, 1, name=f"proj_{i}")) for i in range(self.num_layers - 1)]
        self.head = keras.layers.Conv2D(self.channels, 1, kernel_initializer=head_initializer, name="logits")

    def build(self, x_shape, cond_shape=None):
        x_shape = tuple(x_shape)
        cond_shape = tuple(cond_shape) if cond_shape is not None else x_shape[:-1] + (1,)
        self.first.build(x_shape)
        self.first_cond.build(cond_shape)
        hidden = x_shape[:-1] + (self.filters,)
        for masked, cond, proj in self.blocks:
            masked.build(hidden)
            if cond is not None:
                cond.build(cond_shape)
            proj.build(hidden)
        self.head.build(hidden)
        self.built = True

    @staticmethod
    def _gate(h):
        a, b = tf.split(h, 2, axis=-1)
        return tf.tanh(a) * tf.sigmoid(b)

    def call(self, x, cond):
        h = self._gate(self.first(x) + self.first_cond(cond))
        for masked, cond_layer, proj in self.blocks:
            a = masked(h)
            if cond_layer is not None:
                a = a + cond_layer(cond)
            h = h + proj(self._gate(a))
        return tf.cast(self.head(tf.nn.elu(h)), tf.float32)

    def receptive_field(self):
        """Offsets (dy, dx) of the input pixels that reach one output pixel, composed exactly from the
        masks: type A once, then type B per block (the residual keeps what was reached before)."""
        reach = set(mask_offsets(self.kernel_size, "A"))
        b = mask_offsets(self.kernel_size, "B")
        for _ in range(self.num_layers - 1):
            reach = reach | {(y1 + y2, x1 + x2) for (y1, x1) in reach for (y2, x2) in b}
        offsets = sorted(reach)
        return {"offsets": offsets, "size": len(offsets),
                "rows_above": -min(dy for dy, _ in offsets),
                "cols_left": -min(dx for _, dx in offsets), "cols_right": max(dx for _, dx in offsets)}

    @property
    def rows_above(self):
        return self.num_layers * (self.kernel_size // 2)

    @property
    def cond_rows_below(self):
        """Rows of ``cond`` below a pixel that reach its logits (the k x k input kernel's lower half)."""
        return 0 if self.conditioning == "every_layer" else self.kernel_size // 2

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "num_layers": self.num_layers,
                "kernel_size": self.kernel_size, "filters": self.filters, "head_initializer": self.head_initializer,
                "conditioning": self.conditioning}


def ancestral_sample(network, cond, uniform, band=True):
    """Draw x pixel by pixel in raster order: x_i = 1[u_i < sigmoid(logit_i(x_<i, cond))].

    ``uniform`` [N, H, W, C] holds the noise, so the sampler is deterministic given its inputs.
    With ``band=True`` each step runs the network on the rows [r - R, r + B] only (R = rows in the
    receptive field above a pixel, B = rows of ``cond`` below it that reach it; the image's rows
    below r are still zero), which gives the same logits at row r as the full image.
    """
    cond = tf.convert_to_tensor(cond)
    uniform = tf.convert_to_tensor(uniform, tf.float32)
    shape = tf.shape(uniform)
    height, width = uniform.shape[1], uniform.shape[2]
    rows, below = network.rows_above, network.cond_rows_below

    def body(i, x):
        r, c = i // width, i % width
        if band:
            top = tf.maximum(r - rows, 0)
            logits = network(x[:, top:r + 1 + below], cond[:, top:r + 1 + below])
            logit = logits[:, r - top, c, :]
        else:
            logit = network(x, cond)[:, r, c, :]
        new = tf.cast(uniform[:, r, c, :] < tf.sigmoid(logit), tf.float32)
        where = tf.reshape(tf.one_hot(i, height * width, dtype=tf.float32), [1, height, width, 1])
        return i + 1, x + where * new[:, None, None, :]

    x0 = tf.zeros(shape, tf.float32)
    _, x = tf.while_loop(lambda i, x: i < height * width, body, [tf.constant(0), x0],
                         shape_invariants=[tf.TensorShape([]), uniform.shape])
    return x


# Compiled once per (network, shapes): eager callers get a graph while_loop, not a Python loop.
compiled_ancestral_sample = tf.function(ancestral_sample, reduce_retracing=True)
