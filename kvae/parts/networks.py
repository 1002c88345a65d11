"""Encoder and decoder network builders.

An *encoder network* maps data of shape ``input_shape`` (batch first) to features ``h``; a
*decoder network* maps a latent code (with the label appended, for conditional models) to
features that a likelihood head turns into distribution parameters.  Any Keras layer or model
with those input/output conventions can be passed instead of a builder name.
"""
import math

import keras

from kvae.errors import ConfigError


def mlp_encoder(input_shape, hidden=(500, 500), activation="relu", name="encoder_network"):
    """Flatten, then Dense layers of sizes ``hidden``."""
    layers = [keras.Input(shape=tuple(input_shape)), keras.layers.Flatten()]
    layers += [keras.layers.Dense(int(h), activation=activation) for h in hidden]
    return keras.Sequential(layers, name=name)


def mlp_decoder(code_dim, output_shape, hidden=(500, 500), activation="relu", name="decoder_network"):
    """Dense layers of sizes ``reversed(hidden)`` from the code (the head maps to pixels)."""
    layers = [keras.Input(shape=(int(code_dim),))]
    layers += [keras.layers.Dense(int(h), activation=activation) for h in reversed(tuple(hidden))]
    return keras.Sequential(layers, name=name)


def conv_encoder(input_shape, hidden=(500,), channels=(32, 64), activation="relu", name="encoder_network",
                 kernel_size=3):
    """Strided convolutions (one stride-2 ``kernel_size`` layer per entry of ``channels``), then Dense ``hidden``."""
    layers = [keras.Input(shape=tuple(input_shape))]
    for c in channels:
        layers.append(keras.layers.Conv2D(int(c), kernel_size, strides=2, padding="same", activation=activation))
    layers.append(keras.layers.Flatten())
    layers += [keras.layers.Dense(int(h), activation=activation) for h in hidden]
    return keras.Sequential(layers, name=name)


def conv_decoder(code_dim, output_shape, hidden=(500,), channels=(32, 64), activation="relu",
                 name="decoder_network", kernel_size=3):
    """Mirror of :func:`conv_encoder`: Dense to a small feature map, stride-2 transposed
    convolutions up to (at least) the output size, cropped to it.  Features keep the output's
    spatial shape, so the likelihood head acts per pixel."""
    if len(output_shape) != 3:
        raise ConfigError(f"a conv decoder needs image data (H, W, C), got shape {tuple(output_shape)}")
    height, width = int(output_shape[0]), int(output_shape[1])
    scale = 2 ** len(channels)
    h0, w0 = math.ceil(height / scale), math.ceil(width / scale)
    layers = [keras.Input(shape=(int(code_dim),))]
    layers += [keras.layers.Dense(int(h), activation=activation) for h in reversed(tuple(hidden))]
    layers += [
        keras.layers.Dense(h0 * w0 * int(channels[-1]), activation=activation),
        keras.layers.Reshape((h0, w0, int(channels[-1]))),
    ]
    for c in reversed(tuple(channels)):
        layers.append(
            keras.layers.Conv2DTranspose(int(c), kernel_size, strides=2, padding="same", activation=activation)
        )
    crop_h, crop_w = h0 * scale - height, w0 * scale - width
    if crop_h or crop_w:
        layers.append(keras.layers.Cropping2D(((0, crop_h), (0, crop_w))))
    return keras.Sequential(layers, name=name)


def conv4_encoder(input_shape, hidden=(128,), activation="relu", name="encoder_network"):
    """The dSprites encoder of Higgins et al. (2017) and Kim & Mnih (2018, Table 1): 4x4 stride-2
    convolutions with 32, 32, 64, 64 channels, then Dense ``hidden`` (the papers: 128 or 256)."""
    return conv_encoder(input_shape, hidden, (32, 32, 64, 64), activation, name, kernel_size=4)


def conv4_decoder(code_dim, output_shape, hidden=(128,), activation="relu", name="decoder_network"):
    """Its mirror: Dense ``hidden``, Dense to a 4x4x64 map (for 64x64 images), 4x4 stride-2
    transposed convolutions with 64, 64, 32, 32 channels; the likelihood head maps the last 32
    features of each pixel to its parameters (the papers' last layer has one channel)."""
    return conv_decoder(code_dim, output_shape, hidden, (32, 32, 64, 64), activation, name, kernel_size=4)


def _residual_blocks(h, channels, bottleneck, count, prefix):
    """``count`` blocks h + Conv1x1(ReLU(Conv3x3(ReLU(h)))) with a ``bottleneck``-channel middle."""
    for i in range(count):
        r = keras.layers.ReLU(name=f"{prefix}_res{i}_relu_in")(h)
        r = keras.layers.Conv2D(bottleneck, 3, padding="same", activation="relu", name=f"{prefix}_res{i}_conv3")(r)
        r = keras.layers.Conv2D(channels, 1, name=f"{prefix}_res{i}_conv1")(r)
        h = keras.layers.Add(name=f"{prefix}_res{i}_add")([h, r])
    return h


def _halvings(size, times=3):
    """Spatial sizes after ``times`` stride-2 'same' convolutions: 28 -> [28, 14, 7, 4]."""
    sizes = [int(size)]
    for _ in range(times):
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


def resnet_encoder(input_shape, hidden=None, name="encoder_network"):
    """pythae's MNIST benchmark ResNet encoder (``Encoder_ResNet_VAE_MNIST``): convolutions 4x4/2 with
    64, 4x4/2 with 128, 3x3/2 with 128 channels (no activation between them, as pythae), two
    residual blocks (ReLU, 3x3 conv to 32, ReLU, 1x1 conv to 128, added), flattened (2048
    features at 28x28; the posterior head is pythae's final Linear layer).  ``hidden`` is not used."""
    if len(input_shape) != 3:
        raise ConfigError(f"a ResNet encoder needs image data (H, W, C), got shape {tuple(input_shape)}")
    x = keras.Input(shape=tuple(input_shape))
    h = keras.layers.Conv2D(64, 4, strides=2, padding="same", name="conv_64")(x)
    h = keras.layers.Conv2D(128, 4, strides=2, padding="same", name="conv_128a")(h)
    h = keras.layers.Conv2D(128, 3, strides=2, padding="same", name="conv_128b")(h)
    h = _residual_blocks(h, 128, 32, 2, "enc")
    return keras.Model(x, keras.layers.Flatten(name="flatten")(h), name=name)


def resnet_decoder(code_dim, output_shape, hidden=None, name="decoder_network", features=4):
    """pythae's MNIST benchmark ResNet decoder (``Decoder_ResNet_AE_MNIST``): Linear to a 128-channel
    map at 1/8 of the image (4x4 for 28x28), transposed 3x3/2 convolution to 128 channels, two
    residual blocks and ReLU, transposed 3x3/2 to 64 channels and ReLU, transposed 3x3/2 to the image
    size.  Each transposed convolution is cropped as PyTorch's ``padding=1`` (and ``output_padding``)
    crop it: 4 -> 7 -> 14 -> 28.  The last one is linear with ``features`` channels; the likelihood
    head's per-pixel Dense composes with it into one transposed convolution to the head's
    parameters, which is pythae's last layer (64 -> 1 channel, then the Bernoulli's sigmoid) for
    heads of up to ``features`` parameters per pixel.  ``hidden`` is not used."""
    if len(output_shape) != 3:
        raise ConfigError(f"a ResNet decoder needs image data (H, W, C), got shape {tuple(output_shape)}")
    rows, cols = _halvings(output_shape[0]), _halvings(output_shape[1])
    z = keras.Input(shape=(int(code_dim),))
    h = keras.layers.Dense(rows[3] * cols[3] * 128, name="dense_map")(z)
    h = keras.layers.Reshape((rows[3], cols[3], 128))(h)

    def up(h, channels, level, activation, label):
        h = keras.layers.Conv2DTranspose(channels, 3, strides=2, padding="valid", activation=activation,
                                         name=f"convt_{label}")(h)
        full_r, full_c = 2 * rows[level + 1] + 1, 2 * cols[level + 1] + 1  # 'valid' output size
        return keras.layers.Cropping2D(((1, full_r - 1 - rows[level]), (1, full_c - 1 - cols[level])),
                                       name=f"crop_{label}")(h)

    h = up(h, 128, 2, None, "128")
    h = _residual_blocks(h, 128, 32, 2, "dec")
    h = keras.layers.ReLU(name="dec_relu")(h)
    h = up(h, 64, 1, "relu", "64")
    h = up(h, int(features), 0, None, "out")
    return keras.Model(z, h, name=name)


#: (encoder builder, decoder builder) of each ``network=`` name (the registry's "network" entries)
MLP, CONV = (mlp_encoder, mlp_decoder), (conv_encoder, conv_decoder)
CONV4, RESNET = (conv4_encoder, conv4_decoder), (resnet_encoder, resnet_decoder)


def build(kind, input_shape, code_dim, hidden):
    """Return ``(encoder_network, decoder_network)`` for a builder name (``"mlp"``, ``"conv"``, ``"conv4"``,
    ``"resnet"`` or one given to ``kvae.registry.register("network", name, (encoder, decoder))``; the
    ResNet ignores ``hidden``)."""
    from kvae import registry

    enc, dec = registry.get("network", kind)
    if kind in ("conv", "conv4", "resnet") and len(input_shape) != 3:
        raise ConfigError(f"network={kind!r} needs image data (H, W, C), got input shape {tuple(input_shape)}")
    return enc(input_shape, hidden=hidden), dec(code_dim, input_shape, hidden=hidden)
