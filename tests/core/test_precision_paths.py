"""The XLA and bfloat16 paths compute the same likelihood as float32 graphs: the same weights and
the same importance-sampling noise give the same log p̂(x) within their numerical tolerance
(XLA: float32 reassociation only; mixed_bfloat16: networks in bfloat16, log-probabilities in
float32, within 0.1 nats per example on average, the bar for offering it)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import kvae


def _vae(policy="float32"):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        return kvae.VAE(input_shape=(28, 28, 1), latent_dim=16, hidden=(200, 200), seed=0)
    finally:
        keras.mixed_precision.set_global_policy(previous)


@pytest.fixture(scope="module")
def trained(digits28_dir):
    # 28x28 binary digits bundled with the tests (scikit-learn's digits enlarged; no MNIST file needed)
    x = kvae.data.load("binarized_mnist", "train", digits28_dir).arrays()[0]
    model = _vae()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x, batch_size=100, epochs=3, verbose=0)
    valid = kvae.data.load("binarized_mnist", "valid", digits28_dir).arrays()[0][:100]
    eps = tf.random.stateless_normal([50, len(valid), 16], [5, 6])
    return model, tf.constant(valid), eps


def test_xla_log_prob_equals_the_graph_one(trained):
    model, x, eps = trained
    graph = tf.function(model.log_prob_from_noise)(x, eps).numpy()
    xla = tf.function(model.log_prob_from_noise, jit_compile=True)(x, eps).numpy()
    assert -450 < graph.mean() < -100  # a trained model (untrained: about -545) on real digits, not a degenerate case
    np.testing.assert_allclose(xla, graph, atol=2e-3, rtol=0)


def test_bfloat16_log_prob_is_within_01_nats_of_float32(trained):
    model, x, eps = trained
    mixed = _vae("mixed_bfloat16")
    mixed(x[:2])
    mixed.set_weights(model.get_weights())
    assert mixed.encoder_network.layers[-1].compute_dtype == "bfloat16"
    f32 = model.log_prob_from_noise(x, eps).numpy()
    bf16 = mixed.log_prob_from_noise(x, eps).numpy()
    assert bf16.dtype == np.float32
    assert np.abs(bf16 - f32).max() > 1e-4  # bfloat16 did run
    assert abs(float((bf16 - f32).mean())) < 0.1
