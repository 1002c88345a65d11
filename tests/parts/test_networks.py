"""The network builders: pythae's MNIST ResNet (``network="resnet"``) against its layer list, written out."""
import keras
import numpy as np
import pytest

import kvae
from kvae.parts import networks

# pythae.models.nn.benchmarks.mnist.Encoder_ResNet_VAE_MNIST / Decoder_ResNet_AE_MNIST, as listed in its
# docstrings: (kind, in, out, kernel, stride, padding, output_padding)
PYTHAE_ENCODER = [("conv", 1, 64, 4, 2, 1, 0), ("conv", 64, 128, 4, 2, 1, 0), ("conv", 128, 128, 3, 2, 1, 0)]
PYTHAE_DECODER = [("convT", 128, 128, 3, 2, 1, 0), ("convT", 128, 64, 3, 2, 1, 1), ("convT", 64, 1, 3, 2, 1, 1)]
RESBLOCK = [(128, 32, 3), (32, 128, 1)]  # ReLU, conv 3x3 128->32, ReLU, conv 1x1 32->128, added to the input


def _params(layers):
    return sum(i * o * k * k + o for _, i, o, k, *_ in layers)


def _sizes(n, layers):
    out = [n]
    for kind, _, _, k, s, p, op in layers:  # PyTorch's output-size formulas
        n = (n + 2 * p - k) // s + 1 if kind == "conv" else (n - 1) * s - 2 * p + k + op
        out.append(n)
    return out


def test_resnet_matches_pythaes_layer_list():
    enc, dec = networks.build("resnet", (28, 28, 1), 16, hidden=(500, 500))  # hidden is not used
    res = 2 * sum(i * o * k * k + o for i, o, k in RESBLOCK)
    assert enc.count_params() == _params(PYTHAE_ENCODER) + res
    assert enc.output_shape == (None, 128 * 4 * 4)  # pythae's Linear heads read 2048 features
    # pythae's last layer maps 64 channels to 1 (then a sigmoid); kvae's linearly to 4 features for the head
    last = 64 * 4 * 9 + 4
    assert dec.count_params() == (16 * 2048 + 2048) + _params(PYTHAE_DECODER) + res - (64 * 9 + 1) + last
    assert dec.output_shape == (None, 28, 28, 4)
    convs = [l for l in enc.layers if isinstance(l, keras.layers.Conv2D) and l.strides == (2, 2)]
    assert [l.output.shape[1] for l in convs] == _sizes(28, PYTHAE_ENCODER)[1:] == [14, 7, 4]
    crops = [l for l in dec.layers if isinstance(l, keras.layers.Cropping2D)]
    assert [l.output.shape[1] for l in crops] == _sizes(4, PYTHAE_DECODER)[1:] == [7, 14, 28]


def _conv_transpose_torch(x, kernel, stride, padding, output_padding):
    """PyTorch's ConvTranspose2d written out: scatter x[i] * w[a] to i * stride + a, then drop
    ``padding`` at the start and keep (n - 1) s - 2p + k + op rows.  x [H, W, C], kernel [k, k, out, C]."""
    k = kernel.shape[0]
    h, w = x.shape[:2]
    full = np.zeros(((h - 1) * stride + k + output_padding, (w - 1) * stride + k + output_padding, kernel.shape[2]))
    for i in range(h):
        for j in range(w):
            full[i * stride:i * stride + k, j * stride:j * stride + k] += np.einsum("abOC,C->abO", kernel, x[i, j])
    oh, ow = (h - 1) * stride - 2 * padding + k + output_padding, (w - 1) * stride - 2 * padding + k + output_padding
    return full[padding:padding + oh, padding:padding + ow]


@pytest.mark.parametrize("n, op", [(4, 0), (7, 1), (14, 1)])
def test_resnet_upsampling_is_pytorchs_transposed_convolution(n, op):
    """kvae's 'valid' transposed convolution + crop gives PyTorch's padding=1 (and output_padding) result."""
    _, dec = networks.build("resnet", (28, 28, 1), 3, hidden=())
    name = {4: "128", 7: "64", 14: "out"}[n]
    convt, crop = dec.get_layer(f"convt_{name}"), dec.get_layer(f"crop_{name}")
    x = np.random.RandomState(0).normal(size=(1, n, n, convt.input.shape[-1])).astype("float32")
    got = crop(convt(x)).numpy()[0]
    kernel, bias = [w.numpy() for w in convt.weights]
    expected = _conv_transpose_torch(x[0], kernel, 2, 1, op) + bias
    if convt.activation is keras.activations.relu:
        expected = np.maximum(expected, 0)
    assert convt.activation is (keras.activations.linear if name == "out" else
                                {"128": keras.activations.linear, "64": keras.activations.relu}[name])
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_resnet_decoder_with_a_bernoulli_head_is_pythaes_last_layer():
    """The linear last transposed convolution (64 -> 4) followed by the head's per-pixel Dense (4 -> 1)
    is one transposed convolution 64 -> 1 with the contracted kernel: pythae's last layer."""
    model = kvae.VAE(input_shape=(28, 28, 1), latent_dim=3, network="resnet", seed=0)
    dec = model.decoder_network
    z = np.random.RandomState(0).normal(size=(2, 3)).astype("float32")
    logits = model.decode(z).distribution.logits.numpy()
    h = keras.Model(dec.input, dec.get_layer("crop_64").output)(z).numpy()  # [2, 14, 14, 64] after ReLU
    convt = dec.get_layer("convt_out")
    k, b = [w.numpy() for w in convt.weights]  # [3, 3, 4, 64], [4]
    head = [w.numpy() for w in model.likelihood.weights if w.path.endswith("kernel")][0]  # [4, 1]
    head_b = [w.numpy() for w in model.likelihood.weights if w.path.endswith("bias")][0]
    one = np.einsum("abfc,fo->aboc", k, head)  # [3, 3, 1, 64]
    expected = np.stack([_conv_transpose_torch(h[i], one, 2, 1, 1) for i in range(2)]) + b @ head + head_b
    np.testing.assert_allclose(logits.reshape(expected.shape), expected, atol=1e-4)


def test_resnet_residual_block_is_x_plus_the_bottleneck():
    enc, _ = networks.build("resnet", (28, 28, 1), 3, hidden=())
    inner = keras.Model(enc.input, [enc.get_layer("conv_128b").output, enc.get_layer("enc_res0_add").output])
    x = (np.random.RandomState(1).uniform(size=(2, 28, 28, 1)) < 0.5).astype("float32")
    h, out = [t.numpy() for t in inner(x)]
    k3, b3 = [w.numpy() for w in enc.get_layer("enc_res0_conv3").weights]
    k1, b1 = [w.numpy() for w in enc.get_layer("enc_res0_conv1").weights]
    r = np.maximum(h, 0)
    padded = np.pad(r, ((0, 0), (1, 1), (1, 1), (0, 0)))
    mid = sum(np.einsum("nhwc,cf->nhwf", padded[:, a:a + 4, b:b + 4], k3[a, b]) for a in range(3) for b in range(3))
    mid = np.maximum(mid + b3, 0)
    np.testing.assert_allclose(out, h + np.einsum("nhwc,cf->nhwf", mid, k1[0, 0]) + b1, atol=1e-4)


def test_resnet_runs_in_any_model_and_any_image_size():
    for shape in [(8, 8, 1), (9, 13, 2)]:
        model = kvae.VAE(input_shape=shape, latent_dim=3, network="resnet", decoder="gaussian", seed=0)
        x = np.random.RandomState(0).uniform(size=(2,) + shape).astype("float32")
        assert model.decode(model.encode(x).sample(seed=[1, 2])).event_shape == shape
    with pytest.raises(ValueError, match="image data"):
        networks.build("resnet", (64,), 3, hidden=())


def test_rae_spectral_norm_wraps_every_resnet_decoder_layer():
    _, plain = networks.build("resnet", (8, 8, 1), 3, hidden=())
    model = kvae.RAE(input_shape=(8, 8, 1), latent_dim=3, network="resnet", regularization="sn", seed=0)
    weighted = [l for l in plain.layers if isinstance(l, (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv2DTranspose))]
    wrapped = [l for l in model.decoder_network.layers if isinstance(l, keras.layers.SpectralNormalization)]
    assert len(weighted) == len(wrapped) == 8
    x = (np.random.RandomState(0).uniform(size=(16, 8, 8, 1)) < 0.5).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, epochs=2, batch_size=8, verbose=0)
    for _ in range(50):  # each training-mode call runs one power iteration and divides by its estimate
        model.decode_params(np.zeros((1, 3), "float32"), training=True)
    for layer in wrapped:  # Keras normalises the kernel reshaped to [-1, its last axis]
        kernel = layer.layer.kernel.numpy()
        assert np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), 2) <= 1.05, layer.name
