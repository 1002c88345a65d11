r"""Multi-scale structural similarity (Wang, Simoncelli & Bovik 2003) as a reconstruction term, for
the MS-SSIM VAE (Snell et al. 2017, "Learning to generate images with perceptual similarity
metrics").

MS-SSIM(x, y) = l_M(x, y)^{w_M} \prod_{j=1}^{M} cs_j(x, y)^{w_j}, where cs_j is the mean
contrast-structure term at scale j (images average-pooled by 2 between scales), l_M the luminance
term at the coarsest scale, computed with a Gaussian window (``filter_size``, σ = ``filter_sigma``).
:func:`ms_ssim` computes it as TensorFlow's ``tf.image.ssim_multiscale`` does (images in [0, max_val],
per example; equal to it with ``positive="relu"``), which needs every scale to be at least
``filter_size`` pixels (VALID windows): the standard 5
scales with an 11-pixel window need images of 176 pixels or more.  :func:`default_scales` picks,
for a smaller image, the most scales (up to 5) whose coarsest size still holds a 3-pixel window,
with pythae's weights for that number of scales (28×28 MNIST: 4 scales, window 3).
"""
import tensorflow as tf

from kvae.errors import ConfigError

#: the power factors of Wang et al. (5 scales) and, for fewer scales, the ones pythae uses
POWER_FACTORS = {5: (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 4: (0.3117, 0.3384, 0.2675, 0.0824),
                 3: (0.4558, 0.1633, 0.3809), 2: (0.3222, 0.6778), 1: (1.0,)}


def scale_sizes(side, num_scales):
    """Image side at each scale: an odd side is padded by one (symmetric) before 2x2 average pooling,
    as TensorFlow's MS-SSIM does."""
    sizes = [int(side)]
    for _ in range(num_scales - 1):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def default_scales(image_shape, filter_size=None):
    """(power_factors, filter_size) for images of ``image_shape`` (H, W, C): the most scales (<= 5)
    whose coarsest side holds the window; the window is ``filter_size`` or the largest odd size
    <= 11 that fits there (at least 3)."""
    side = min(int(image_shape[0]), int(image_shape[1]))
    smallest_window = 3 if filter_size is None else int(filter_size)
    for m in (5, 4, 3, 2, 1):
        coarsest = scale_sizes(side, m)[-1]
        if coarsest >= smallest_window:
            window = filter_size if filter_size is not None else min(11, coarsest - (1 - coarsest % 2))
            return POWER_FACTORS[m], int(window)
    raise ConfigError(f"MS-SSIM needs images of at least {smallest_window} pixels per side, got {side}")


def check_scales(image_shape, power_factors, filter_size):
    """Raise a ConfigError naming the fix when the window does not fit the coarsest scale."""
    side = min(int(image_shape[0]), int(image_shape[1]))
    sizes = scale_sizes(side, len(power_factors))
    if sizes[-1] < int(filter_size):
        fits = [m for m in range(1, 6) if scale_sizes(side, m)[-1] >= int(filter_size)]
        hint = f"at most {max(fits)} scales fit a {filter_size}-pixel window" if fits else "use a smaller window"
        raise ConfigError(f"MS-SSIM with {len(power_factors)} scales on {side}-pixel images reaches {sizes[-1]} "
                          f"pixels, smaller than the {filter_size}-pixel window: {hint} (or power_factors=None)")


def gaussian_window(size, sigma):
    """The normalised 2-D Gaussian window [size, size] (TensorFlow's ``_fspecial_gauss``)."""
    coords = tf.range(size, dtype=tf.float32) - (size - 1) / 2.0
    g = -0.5 * tf.square(coords) / (sigma ** 2)
    g = tf.reshape(g, [1, -1]) + tf.reshape(g, [-1, 1])
    return tf.reshape(tf.nn.softmax(tf.reshape(g, [1, -1])), [size, size])


def ms_ssim(x, y, power_factors, filter_size, filter_sigma=1.5, max_val=1.0, k1=0.01, k2=0.03, positive="relu"):
    r"""MS-SSIM per example of images x, y [..., H, W, C] in [0, max_val].

    The arithmetic of ``tf.image.ssim_multiscale`` (Gaussian window with VALID convolutions, odd
    sides padded symmetrically before 2x2 average pooling, C1 = (k1 max_val)^2, C2 = (k2 max_val)^2,
    mean over channels), with the way negative terms are made positive before the powers as an
    option: ``positive="relu"`` clips them at 0 as TensorFlow does (equal to
    ``tf.image.ssim_multiscale``; its gradient is NaN where a term is 0, e.g. an untrained decoder's
    output anti-correlated with the image), ``"shift"`` maps each term v in [-1, 1] to (v + 1) / 2
    as pythae does (always positive, a training loss).
    """
    if positive not in ("relu", "shift"):
        raise ConfigError(f"positive must be 'relu' or 'shift', got {positive!r}")
    x, y = tf.cast(x, tf.float32), tf.cast(y, tf.float32)
    lead = tf.shape(x)[:-3]
    channels = x.shape[-1]
    x = tf.reshape(x, tf.concat([[-1], tf.shape(x)[-3:]], 0))
    y = tf.reshape(y, tf.concat([[-1], tf.shape(y)[-3:]], 0))
    kernel = tf.tile(gaussian_window(int(filter_size), float(filter_sigma))[:, :, None, None], [1, 1, channels, 1])
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2

    def reduce(t):
        return tf.nn.depthwise_conv2d(t, kernel, strides=[1, 1, 1, 1], padding="VALID")

    def make_positive(v):
        return tf.nn.relu(v) if positive == "relu" else (v + 1.0) / 2.0

    terms = []
    for k in range(len(power_factors)):
        if k > 0:
            rem_h, rem_w = x.shape[1] % 2, x.shape[2] % 2
            if rem_h or rem_w:
                pad = [[0, 0], [0, rem_h], [0, rem_w], [0, 0]]
                x, y = tf.pad(x, pad, mode="SYMMETRIC"), tf.pad(y, pad, mode="SYMMETRIC")
            x = tf.nn.avg_pool2d(x, 2, 2, "VALID")
            y = tf.nn.avg_pool2d(y, 2, 2, "VALID")
        mean_x, mean_y = reduce(x), reduce(y)
        num0 = 2.0 * mean_x * mean_y
        den0 = tf.square(mean_x) + tf.square(mean_y)
        luminance = (num0 + c1) / (den0 + c1)
        cs = (2.0 * reduce(x * y) - num0 + c2) / (reduce(tf.square(x) + tf.square(y)) - den0 + c2)
        if k < len(power_factors) - 1:
            terms.append(make_positive(tf.reduce_mean(cs, axis=[1, 2])))
        else:
            terms.append(make_positive(tf.reduce_mean(luminance * cs, axis=[1, 2])))
    stacked = tf.stack(terms, axis=-1)  # [N, C, scales]
    value = tf.reduce_mean(tf.reduce_prod(tf.pow(stacked, tf.constant(power_factors, tf.float32)), axis=-1), axis=-1)
    return tf.reshape(value, lead)
