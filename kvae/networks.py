"""Encoder and decoder network builders.

An *encoder network* maps data of shape ``input_shape`` (batch first) to features ``h``; a
*decoder network* maps a latent code (with the label appended, for conditional models) to
features that a likelihood head turns into distribution parameters.  Any Keras layer or model
with those input/output conventions can be passed instead of a builder name.
"""
import math

import keras


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
        raise ValueError(f"a conv decoder needs image data (H, W, C), got shape {tuple(output_shape)}")
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


_BUILDERS = {"mlp": (mlp_encoder, mlp_decoder), "conv": (conv_encoder, conv_decoder),
             "conv4": (conv4_encoder, conv4_decoder)}


def build(kind, input_shape, code_dim, hidden):
    """Return ``(encoder_network, decoder_network)`` for a builder name (``"mlp"``, ``"conv"``, ``"conv4"``)."""
    try:
        enc, dec = _BUILDERS[kind]
    except KeyError:
        raise ValueError(f"unknown network {kind!r}; choose one of {sorted(_BUILDERS)}") from None
    if kind in ("conv", "conv4") and len(input_shape) != 3:
        raise ValueError(f"network={kind!r} needs image data (H, W, C), got input shape {tuple(input_shape)}")
    return enc(input_shape, hidden=hidden), dec(code_dim, input_shape, hidden=hidden)
