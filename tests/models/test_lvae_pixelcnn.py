"""The ladder VAE with a local PixelCNN decoder (``pixelcnn_layers > 0``): the battery, the importance
weights through the hierarchy and the PixelCNN, and the layer sampler's pixel noise."""
import numpy as np
import pytest
import tensorflow as tf

import kvae
from battery import ModelBattery
from kvae.nn.pixelcnn import ancestral_sample


def small(**kw):
    options = dict(groups=2, channels=8, latent_channels=2, blocks=1, pixelcnn_layers=2, pixelcnn_filters=4, seed=0)
    return kvae.LadderVAE(input_shape=(8, 8, 1), **{**options, **kw})


class TestLadderVAEPixelCNN(ModelBattery):  # residual merge, PixelCNN decoder
    def make_model(self):
        return kvae.LadderVAE(input_shape=self.input_shape, groups=2, channels=8, latent_channels=2, blocks=1,
                              merge="residual", pixelcnn_layers=2, pixelcnn_filters=4, seed=0)


def test_the_decoder_is_a_pixelcnn_conditioned_on_the_top_down_features():
    model = small()
    assert type(model.likelihood).__name__ == "PixelCNNLikelihood" and model.likelihood.needs_uniform
    assert small(pixelcnn_layers=0).likelihood.needs_uniform is False
    with pytest.raises(kvae.errors.ConfigError, match="pixelcnn_layers"):
        small(pixelcnn_layers=-1)


def test_importance_weights_use_the_pixelcnn_density():
    """log_prob_from_noise = logmeanexp_k [log p(x|z) + log p(z) - log q(z|x)], log p(x|z) the PixelCNN's
    (a sum of per-pixel Bernoulli terms whose logits see only earlier pixels)."""
    model = small()
    x = (np.random.RandomState(0).uniform(size=(3, 8, 8, 1)) > 0.5).astype("float32")
    eps = np.random.RandomState(1).normal(size=(5, 3, model.latent_dim)).astype("float32")
    q = model.encode(x)
    z = q.from_noise(eps)
    px = model.decode(z)
    log_w = (px.log_prob(x) + model.prior_distribution().log_prob(z) - q.log_prob(z)).numpy()
    want = np.log(np.mean(np.exp(log_w - log_w.max(0)), 0)) + log_w.max(0)
    np.testing.assert_allclose(model.log_prob_from_noise(x, eps).numpy(), want, rtol=1e-4)
    # the Bernoulli decoder's weights differ: the density in use is the PixelCNN's
    assert np.abs(small(pixelcnn_layers=0).log_prob_from_noise(x, eps).numpy() - want).max() > 1e-2


def test_layer_grid_draws_pixels_with_noise_from_the_seed():
    model = small()
    a = model.sample_from_layer(1, rows=2, cols=2, seed=3).numpy()
    np.testing.assert_array_equal(a, model.sample_from_layer(1, rows=2, cols=2, seed=3).numpy())
    assert set(np.unique(a)) <= {0.0, 1.0}
    _, features = model.codes_from_layer(1, 2, 2, seed=3)
    uniform = tf.random.stateless_uniform([4, 8, 8, 1], [3, 7])
    want = ancestral_sample(model.likelihood.network, model.likelihood(features)[0], uniform).numpy()
    np.testing.assert_array_equal(a, want)
