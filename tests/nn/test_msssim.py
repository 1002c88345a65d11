"""MS-SSIM (kvae.nn.ssim) against TensorFlow's and a numpy transcription; the MS-SSIM VAE's loss
against the formula; its command line, evaluation and export."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from scipy.signal import correlate2d

import kvae
from kvae.cli import main as cli
from kvae.nn import ssim
from kvae.errors import ConfigError


def numpy_ms_ssim(x, y, factors, size, sigma=1.5, positive="relu"):
    """Wang et al.'s MS-SSIM for single-channel images [N, H, W, 1], written out in numpy/scipy."""
    coords = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-0.5 * (coords[:, None] ** 2 + coords[None, :] ** 2) / sigma ** 2)
    w = g / g.sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    out = []
    for a, b in zip(x[..., 0].astype(np.float64), y[..., 0].astype(np.float64)):
        terms = []
        for k in range(len(factors)):
            if k > 0:
                a = np.pad(a, [[0, a.shape[0] % 2], [0, a.shape[1] % 2]], mode="symmetric")
                b = np.pad(b, [[0, b.shape[0] % 2], [0, b.shape[1] % 2]], mode="symmetric")
                a = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).mean(axis=(1, 3))
                b = b.reshape(b.shape[0] // 2, 2, b.shape[1] // 2, 2).mean(axis=(1, 3))
            mu_a, mu_b = correlate2d(a, w, "valid"), correlate2d(b, w, "valid")
            var_a = correlate2d(a * a, w, "valid") - mu_a ** 2
            var_b = correlate2d(b * b, w, "valid") - mu_b ** 2
            cov = correlate2d(a * b, w, "valid") - mu_a * mu_b
            cs = (2 * cov + c2) / (var_a + var_b + c2)
            lum = (2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1)
            v = cs.mean() if k < len(factors) - 1 else (lum * cs).mean()
            terms.append(max(v, 0.0) if positive == "relu" else (v + 1) / 2)
        out.append(np.prod([t ** p for t, p in zip(terms, factors)]))
    return np.array(out)


@pytest.mark.parametrize("shape", [(28, 28, 1), (8, 8, 1), (27, 23, 1), (64, 64, 1)])
def test_ms_ssim_equals_tensorflows_and_the_numpy_transcription(shape):
    rng = np.random.RandomState(0)
    factors, size = ssim.default_scales(shape)
    x = rng.uniform(size=(3,) + shape).astype(np.float32)
    y = np.clip(x + 0.3 * rng.normal(size=x.shape), 0, 1).astype(np.float32)
    ours = ssim.ms_ssim(x, y, factors, size).numpy()
    np.testing.assert_allclose(ours, tf.image.ssim_multiscale(x, y, 1.0, power_factors=factors,
                                                              filter_size=size).numpy(), atol=1e-6)
    np.testing.assert_allclose(ours, numpy_ms_ssim(x, y, factors, size), atol=2e-5)
    shifted = ssim.ms_ssim(x, y, factors, size, positive="shift").numpy()
    np.testing.assert_allclose(shifted, numpy_ms_ssim(x, y, factors, size, positive="shift"), atol=2e-5)
    assert ssim.ms_ssim(x, x, factors, size).numpy() == pytest.approx(np.ones(3), abs=1e-5)


def test_scales_fit_the_image_and_the_error_names_the_fix():
    assert ssim.default_scales((28, 28, 1)) == (ssim.POWER_FACTORS[4], 3)  # 28, 14, 7, 4
    assert ssim.default_scales((8, 8, 1)) == (ssim.POWER_FACTORS[2], 3)  # 8, 4
    assert ssim.default_scales((256, 256, 3)) == (ssim.POWER_FACTORS[5], 11)  # 256 ... 16: the standard form
    assert ssim.scale_sizes(28, 5) == [28, 14, 7, 4, 2]
    with pytest.raises(ConfigError, match="at most 4 scales fit a 3-pixel window"):
        ssim.check_scales((28, 28, 1), ssim.POWER_FACTORS[5], 3)


def test_shifted_terms_keep_gradients_finite_where_tensorflows_clip_does_not():
    x = tf.constant((np.random.RandomState(0).uniform(size=(4, 8, 8, 1)) > 0.5).astype(np.float32))
    logits = tf.Variable(0.1 * np.random.RandomState(1).normal(size=(4, 8, 8, 1)).astype(np.float32))
    factors, size = ssim.default_scales((8, 8, 1))
    grads = {}
    for positive in ("relu", "shift"):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(ssim.ms_ssim(x, tf.sigmoid(logits), factors, size, positive=positive))
        grads[positive] = tape.gradient(value, logits).numpy()
    assert not np.isfinite(grads["relu"]).all()  # the first image's term is clipped to 0, raised to a power < 1
    assert np.isfinite(grads["shift"]).all() and np.abs(grads["shift"]).max() > 0


def test_the_msssim_vae_loss_is_the_score_plus_beta_kl():
    rng = np.random.RandomState(2)
    x = (rng.uniform(size=(6, 8, 8, 1)) > 0.5).astype(np.float32)
    model = kvae.MSSSIMVAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), beta=0.25, seed=3)
    terms = model.compute_terms(x, seed=tf.constant([1, 2]))
    mean = tf.sigmoid(model.decode_params(terms["z"])[0])
    factors, size = ssim.default_scales((8, 8, 1))
    score = 1.0 - numpy_ms_ssim(x, mean.numpy(), factors, size, positive="shift")
    np.testing.assert_allclose(-terms["log_px_z"].numpy(), score, atol=2e-5)
    loc, scale = (t.numpy() for t in model.encode_params(x))
    kl = (0.5 * (loc ** 2 + scale ** 2 - 1) - np.log(scale)).sum(axis=1)
    np.testing.assert_allclose(terms["kl"].numpy(), kl, rtol=1e-5, atol=1e-5)
    assert model.has_likelihood is False and model.has_density is True
    with pytest.raises(ConfigError, match="not a normalised density"):
        model.log_likelihood(x, k=4)
    with pytest.raises(ConfigError, match="normalised p\\(x\\|z\\)"):
        kvae.MSSSIMVAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), objective="iwae")


def test_msssim_vae_trains_evaluates_and_exports_from_the_command_line(tmp_path):
    run, bundle = str(tmp_path / "run"), str(tmp_path / "bundle")
    assert cli.main(["train", "--model", "msssim-vae", "--dataset", "digits", "--epochs", "1", "--beta", "0.01",
                     "--quiet", "--out", run]) == 0
    assert cli.main(["evaluate", run, "--dataset", "digits", "--split", "valid", "--k", "10", "--limit", "50",
                     "--json", str(tmp_path / "e.json")]) == 0
    result = json.load(open(tmp_path / "e.json"))
    assert result["nll"] is None and result["elbo"] is None and 0 < result["rec_loss"] < 1 and result["kl"] > 0
    assert cli.main(["export", run, "--out", bundle, "--explorer-examples", "0"]) == 0
    manifest = json.load(open(os.path.join(bundle, "manifest.json")))
    assert "log_prob" not in manifest["endpoints"]
    assert all(d["onnx_max_abs_diff"] <= 1e-5 for d in manifest["parity"].values())
