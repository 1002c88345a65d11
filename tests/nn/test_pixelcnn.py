"""PixelCNN: causality by gradients, the reported receptive field against the measured one, the sampler."""
import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.nn import PixelCNNNetwork, ancestral_sample, causal_mask


def _net(num_layers, kernel_size, size=10, cond=2, conditioning="every_layer"):
    net = PixelCNNNetwork(1, num_layers=num_layers, kernel_size=kernel_size, filters=8, conditioning=conditioning)
    net.build((None, size, size, 1), (None, size, size, cond))
    return net


def _gradient_support(net, row, col, size=10, cond=2):
    x = tf.cast(tf.random.uniform((3, size, size, 1), seed=1) < 0.5, tf.float32)
    c = tf.random.normal((3, size, size, cond), seed=2)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = tf.reduce_sum(net(x, c)[:, row, col, 0])
    g = np.abs(tape.gradient(out, x).numpy()).sum(axis=(0, 3))
    return {(int(i) - row, int(j) - col) for i, j in zip(*np.nonzero(g))}


def test_masks():
    a, b = causal_mask(3, "A", 1, 1)[..., 0, 0], causal_mask(3, "B", 1, 1)[..., 0, 0]
    np.testing.assert_array_equal(a, [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(b, [[1, 1, 1], [1, 1, 0], [0, 0, 0]])


@pytest.mark.parametrize("num_layers, kernel_size", [(1, 3), (3, 3), (6, 3), (2, 5)])
def test_output_never_sees_current_or_later_pixels_and_field_is_as_reported(num_layers, kernel_size):
    size = 14
    net = _net(num_layers, kernel_size, size)
    row, col = 9, 6
    measured = _gradient_support(net, row, col, size)
    assert all(dy < 0 or (dy == 0 and dx < 0) for dy, dx in measured), "sees the pixel itself or a later one"
    reported = net.receptive_field()
    assert sorted(measured) == reported["offsets"]
    assert reported["rows_above"] == num_layers * (kernel_size // 2)


def test_local_decoder_field_is_smaller_than_a_deep_one():
    local, deep = _net(6, 3).receptive_field(), _net(12, 5).receptive_field()
    assert local["rows_above"] == 6 and deep["rows_above"] == 24
    assert local["size"] < deep["size"]


@pytest.mark.parametrize("conditioning", ["every_layer", "input"])
def test_sampler_is_autoregressively_consistent_and_band_is_exact(conditioning):
    net = _net(3, 3, size=8, conditioning=conditioning)
    for w in net.weights:  # biases away from zero, so the zero padding of a band would show
        if w.path.endswith("bias"):
            w.assign(tf.random.normal(w.shape, seed=5))
    cond = tf.random.normal((4, 8, 8, 2), seed=3)
    u = tf.random.uniform((4, 8, 8, 1), seed=4)
    x = ancestral_sample(net, cond, u, band=True)
    # every pixel equals the draw its own conditional would make given the finished image
    np.testing.assert_array_equal(x.numpy() > 0.5, u.numpy() < tf.sigmoid(net(x, cond)).numpy())
    np.testing.assert_array_equal(x, ancestral_sample(net, cond, u, band=False))


def test_pixelcnn_decoder_in_a_vae_reports_its_field_and_log_prob_is_normalised():
    model = kvae.VAE(input_shape=(2, 2, 1), latent_dim=2, hidden=(8,),
                     decoder=kvae.parts.likelihoods.PixelCNNLikelihood((2, 2, 1), num_layers=2, filters=4), seed=0)
    assert model.likelihood.receptive_field["rows_above"] == 2
    px = model.decode(tf.random.normal((3, 2)))
    # sum over all 16 binary 2x2 images of p(x|z) is 1 for each z
    images = np.array([[(i >> b) & 1 for b in range(4)] for i in range(16)], np.float32).reshape(16, 1, 2, 2, 1)
    total = tf.reduce_logsumexp(px.log_prob(images), axis=0)
    np.testing.assert_allclose(total, np.zeros(3), atol=1e-5)


def _conv_same(x, kernel):
    """'same' cross-correlation written out in numpy: x [N, H, W, C], kernel [k, k, C, F]."""
    k = kernel.shape[0]
    c = k // 2
    padded = np.pad(x, ((0, 0), (c, c), (c, c), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nhwc,cf->nhwf", padded[:, i:i + x.shape[1], j:j + x.shape[2]], kernel[i, j])
    return out


def test_input_conditioning_is_the_map_concatenated_to_the_image():
    """VLAE's conditioning: the first layer is one k x k convolution of [x, cond] whose causal mask
    covers the image channels only; no later layer reads cond."""
    net = _net(3, 3, size=7, cond=4, conditioning="input")
    rng = np.random.RandomState(0)
    x = (rng.uniform(size=(2, 7, 7, 1)) < 0.5).astype(np.float32)
    cond = rng.normal(size=(2, 7, 7, 4)).astype(np.float32)
    kernel = np.concatenate([net.first.kernel.numpy() * causal_mask(3, "A", 1, 16),
                             net.first_cond.kernel.numpy()], axis=2)  # [3, 3, 1 + 4, 16]
    expected = _conv_same(np.concatenate([x, cond], -1), kernel) + net.first.bias.numpy()
    got = net.first(x) + net.first_cond(cond)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert all(c is None for _, c, _ in net.blocks) and len(net.weights) < len(_net(3, 3, 7, 4).weights)


def _b_stack_reach(num_blocks, kernel_size):
    """Offsets (dy, dx) of the first layer's output that reach a pixel through ``num_blocks``
    residual type-B layers, composed here from the numpy masks."""
    m = causal_mask(kernel_size, "B", 1, 1)[..., 0, 0]
    c = kernel_size // 2
    b = {(i - c, j - c) for i, j in zip(*np.nonzero(m))}
    reach = {(0, 0)}
    for _ in range(num_blocks):
        reach |= {(y1 + y2, x1 + x2) for y1, x1 in reach for y2, x2 in b}
    return reach


@pytest.mark.parametrize("conditioning", ["every_layer", "input"])
def test_cond_reaches_a_pixel_where_the_masks_say(conditioning):
    """Gradient support of one pixel's logit on cond: the B stack's reach (every layer reads cond at
    its own position) or that reach widened by the full k x k input kernel (concatenation), whose
    lowest row is ``cond_rows_below`` (the sampler's band relies on it)."""
    size, row, col = 14, 7, 6
    net = _net(3, 3, size, cond=2, conditioning=conditioning)
    x = tf.cast(tf.random.uniform((2, size, size, 1), seed=1) < 0.5, tf.float32)
    c = tf.random.normal((2, size, size, 2), seed=2)
    with tf.GradientTape() as tape:
        tape.watch(c)
        out = tf.reduce_sum(net(x, c)[:, row, col, 0])
    g = np.abs(tape.gradient(out, c).numpy()).sum(axis=(0, 3))
    measured = {(int(i) - row, int(j) - col) for i, j in zip(*np.nonzero(g))}
    reach = _b_stack_reach(2, 3)
    if conditioning == "input":
        reach = {(y + dy, x + dx) for y, x in reach for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    assert measured == reach
    assert max(dy for dy, _ in measured) == net.cond_rows_below == (1 if conditioning == "input" else 0)
    # the image side is unchanged: still strictly causal, same field as reported
    assert sorted(_gradient_support(net, row, col, size)) == net.receptive_field()["offsets"]
