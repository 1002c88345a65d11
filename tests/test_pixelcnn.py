"""PixelCNN: causality by gradients, the reported receptive field against the measured one, the sampler."""
import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.layers import PixelCNNNetwork, ancestral_sample, causal_mask


def _net(num_layers, kernel_size, size=10, cond=2):
    net = PixelCNNNetwork(1, num_layers=num_layers, kernel_size=kernel_size, filters=8)
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


def test_sampler_is_autoregressively_consistent_and_band_is_exact():
    net = _net(3, 3, size=8)
    cond = tf.random.normal((4, 8, 8, 2), seed=3)
    u = tf.random.uniform((4, 8, 8, 1), seed=4)
    x = ancestral_sample(net, cond, u, band=True)
    # every pixel equals the draw its own conditional would make given the finished image
    np.testing.assert_array_equal(x.numpy() > 0.5, u.numpy() < tf.sigmoid(net(x, cond)).numpy())
    np.testing.assert_array_equal(x, ancestral_sample(net, cond, u, band=False))


def test_pixelcnn_decoder_in_a_vae_reports_its_field_and_log_prob_is_normalised():
    model = kvae.VAE(input_shape=(2, 2, 1), latent_dim=2, hidden=(8,),
                     decoder=kvae.likelihoods.PixelCNNLikelihood((2, 2, 1), num_layers=2, filters=4), seed=0)
    assert model.likelihood.receptive_field["rows_above"] == 2
    px = model.decode(tf.random.normal((3, 2)))
    # sum over all 16 binary 2x2 images of p(x|z) is 1 for each z
    images = np.array([[(i >> b) & 1 for b in range(4)] for i in range(16)], np.float32).reshape(16, 1, 2, 2, 1)
    total = tf.reduce_logsumexp(px.log_prob(images), axis=0)
    np.testing.assert_allclose(total, np.zeros(3), atol=1e-5)
