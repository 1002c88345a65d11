r"""The deterministic paths of a top-down hierarchy over spatial latent groups.

Resolutions: the image (H, W) is halved once per group, so three groups of a 28x28 image sit at
14x14, 7x7 and 4x4 ('same' stride-2 convolutions).  Each path is made of gated residual blocks
(van den Oord et al. 2016's gate on a residual branch, as in addtt/ladder-vae-pytorch):

    h + a * sigmoid(g),   [a, g] = Conv3x3(ELU(Conv3x3(ELU(h))))

* :class:`BottomUp`: x -> features d_1 (highest resolution) ... d_L (lowest);
* :class:`TopDown`: from the top group down, the prior head of each group, and the generative
  path h_l = blocks(up(h_{l+1})) + Conv(z_l) (z_l enters through a skip into the deterministic
  path), ending in features at the image's resolution.
"""
import math

import keras
import numpy as np


def resolutions(size, groups):
    """Spatial sizes of the groups, highest resolution first: 28, 3 groups -> [14, 7, 4]."""
    sizes, s = [], int(size)
    for _ in range(groups):
        s = math.ceil(s / 2)
        sizes.append(s)
    return sizes


@keras.saving.register_keras_serializable(package="kvae")
class GatedResidualBlock(keras.layers.Layer):
    """h + a * sigmoid(g) with [a, g] = Conv3x3(ELU(Conv3x3(ELU(h)))), channels preserved."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.conv1 = keras.layers.Conv2D(self.channels, 3, padding="same", name="conv1")
        self.conv2 = keras.layers.Conv2D(2 * self.channels, 3, padding="same", name="conv2")

    def build(self, input_shape):
        self.conv1.build(input_shape)
        self.conv2.build(tuple(input_shape[:-1]) + (self.channels,))

    def call(self, h):
        r = self.conv2(keras.ops.elu(self.conv1(keras.ops.elu(h))))
        a, g = keras.ops.split(r, 2, axis=-1)
        return h + a * keras.ops.sigmoid(g)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


def _blocks(channels, count, prefix):
    return [GatedResidualBlock(channels, name=f"{prefix}_block{i}") for i in range(count)]


@keras.saving.register_keras_serializable(package="kvae")
class BottomUp(keras.layers.Layer):
    """x [B, H, W, C_x] -> [d_1, ..., d_L], d_l of shape [B, H_l, W_l, channels] (H_l = ceil(H / 2^l))."""

    def __init__(self, groups=3, channels=64, blocks=2, **kwargs):
        super().__init__(**kwargs)
        self.groups, self.channels, self.num_blocks = int(groups), int(channels), int(blocks)
        self.stem = keras.layers.Conv2D(self.channels, 3, padding="same", name="stem")
        self.down = [keras.layers.Conv2D(self.channels, 3, strides=2, padding="same", name=f"down{i}")
                     for i in range(self.groups)]
        self.blocks = [_blocks(self.channels, self.num_blocks, f"up{i}") for i in range(self.groups)]

    def call(self, x, training=False):
        h = self.stem(x)
        out = []
        for down, blocks in zip(self.down, self.blocks):
            h = down(keras.ops.elu(h))
            for block in blocks:
                h = block(h)
            out.append(h)
        return out

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "channels": self.channels, "blocks": self.num_blocks}


@keras.saving.register_keras_serializable(package="kvae")
class TopDown(keras.layers.Layer):
    """The generative path: per group (top first) a prior head (except the top, whose prior is
    learned), a projection of z_l into the path, residual blocks, and an upsampling to the next
    group's resolution (cropped to it); ends at the image's resolution with ``channels`` features."""

    def __init__(self, image_size, groups=3, channels=64, latent_channels=8, blocks=2, **kwargs):
        super().__init__(**kwargs)
        self.image_size = [int(s) for s in image_size]
        self.groups, self.channels = int(groups), int(channels)
        self.latent_channels, self.num_blocks = int(latent_channels), int(blocks)
        heights, widths = (resolutions(n, self.groups) for n in self.image_size)
        self.sizes = list(zip(heights, widths))[::-1]  # top (lowest resolution) first
        self.prior_heads = [None] + [keras.layers.Conv2D(2 * self.latent_channels, 3, padding="same",
                                                         name=f"prior_head{i}") for i in range(1, self.groups)]
        self.z_in = [keras.layers.Conv2D(self.channels, 3, padding="same", name=f"z_in{i}")
                     for i in range(self.groups)]
        self.blocks = [_blocks(self.channels, self.num_blocks, f"down{i}") for i in range(self.groups)]
        self.up = [keras.layers.Conv2DTranspose(self.channels, 3, strides=2, padding="same", name=f"up{i}")
                   for i in range(self.groups)]

    def build(self, input_shape=None):
        for i, (h, w) in enumerate(self.sizes):
            feat = (None, h, w, self.channels)
            if self.prior_heads[i] is not None:
                self.prior_heads[i].build(feat)
            self.z_in[i].build((None, h, w, self.latent_channels))
            for block in self.blocks[i]:
                block.build(feat)
            self.up[i].build(feat)
        self.built = True

    def call(self, code, training=False):
        """Features at the image's resolution for flat codes [N, D] (groups top first): the path with
        every group given."""
        sizes = [h * w * self.latent_channels for h, w in self.sizes]
        h = None
        for i, part in enumerate(keras.ops.split(code, list(np.cumsum(sizes)[:-1]), axis=-1)):
            hh, ww = self.sizes[i]
            h = self.absorb(i, h, keras.ops.reshape(part, (-1, hh, ww, self.latent_channels)))
        return h

    def target_size(self, i):
        """The spatial size after group i's upsampling: the next group's, or the image's."""
        return tuple(self.sizes[i + 1]) if i + 1 < self.groups else tuple(self.image_size)

    def prior_params(self, i, h):
        """(mu, raw sigma) of p(z_i | groups above) from the path's features h (i >= 1)."""
        return keras.ops.split(keras.ops.cast(self.prior_heads[i](h), "float32"), 2, axis=-1)

    def absorb(self, i, h, z):
        """The path after group i: blocks(h + Conv(z)) upsampled (and cropped) to the next resolution."""
        z_feat = self.z_in[i](z)
        h = z_feat if h is None else h + z_feat
        for block in self.blocks[i]:
            h = block(h)
        h = self.up[i](keras.ops.elu(h))
        th, tw = self.target_size(i)
        return h[:, :th, :tw, :]

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "groups": self.groups,
                "channels": self.channels, "latent_channels": self.latent_channels, "blocks": self.num_blocks}
