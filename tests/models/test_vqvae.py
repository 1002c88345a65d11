"""VQ-VAE (van den Oord et al. 2017): the quantiser, its moving-average codebook, the loss, and the
PixelCNN prior over code indices, each against a numpy transcription."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import log_softmax, softmax

import kvae
from kvae.models.vqvae.code_prior import PixelCNNCodePrior, inverse_cdf_index, normal_cdf
from kvae.models.vqvae.quantize import VectorQuantizer, nearest, perplexity


def _numpy_nearest(z, codebook):
    d = ((z[..., None, :] - codebook) ** 2).sum(-1)
    return d.argmin(-1)


def test_nearest_entry_and_straight_through_gradient():
    """z_q is the nearest codebook row (brute force in numpy); d(sum w * z_q)/dz_e = w (the identity)."""
    rng = np.random.RandomState(0)
    vq = VectorQuantizer(num_embeddings=7, embedding_dim=3, update="loss")
    vq.build()
    vq.codebook.assign(rng.normal(size=(7, 3)).astype("float32"))
    z_e = tf.Variable(rng.normal(size=(5, 4, 3)).astype("float32"))
    w = rng.normal(size=(5, 4, 3)).astype("float32")
    with tf.GradientTape() as tape:
        z_q, codes = vq(z_e)
        out = tf.reduce_sum(z_q * w)
    want = _numpy_nearest(z_e.numpy(), vq.codebook.numpy())
    np.testing.assert_array_equal(codes.numpy(), want)
    np.testing.assert_allclose(z_q.numpy(), vq.codebook.numpy()[want], atol=1e-6)
    np.testing.assert_allclose(tape.gradient(out, z_e).numpy(), w, atol=1e-6)
    np.testing.assert_array_equal(nearest(z_e, vq.codebook).numpy(), want)


def _numpy_ema(count, total, book, z, codes, k, decay, eps):
    onehot = np.eye(k)[codes.reshape(-1)]
    count = decay * count + (1 - decay) * onehot.sum(0)
    total = decay * total + (1 - decay) * onehot.T @ z.reshape(-1, z.shape[-1])
    n = count.sum()
    smoothed = (count + eps) / (n + k * eps) * n
    return count, total, np.where((count > 0)[:, None], total / smoothed[:, None], book)


def test_moving_average_codebook_equals_the_papers_update():
    """Two training calls move counts, sums and codebook as Appendix A.1 + Laplace smoothing (numpy),
    from counts and sums at 0, an entry never chosen keeping its vector; z_q comes from the codebook
    before the call's update; inference calls change nothing."""
    rng = np.random.RandomState(1)
    k, d, decay, eps = 5, 2, 0.9, 1e-5
    vq = VectorQuantizer(k, d, update="ema", decay=decay, epsilon=eps)
    vq.build()
    count, total, book = np.zeros(k), np.zeros((k, d)), vq.codebook.numpy().astype(np.float64)
    for step in range(2):
        z = (rng.normal(size=(6, 3, d)) * 0.5).astype("float32")
        codes = _numpy_nearest(z, book)
        z_q, got = vq(tf.constant(z), training=True)
        np.testing.assert_array_equal(got.numpy(), codes)
        np.testing.assert_allclose(z_q.numpy(), book[codes], atol=1e-6)
        count, total, book = _numpy_ema(count, total, book, z, codes, k, decay, eps)
        np.testing.assert_allclose(vq.ema_count.numpy(), count, rtol=1e-5)
        np.testing.assert_allclose(vq.ema_sum.numpy(), total, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(vq.codebook.numpy(), book, rtol=1e-4, atol=1e-6)
    before = vq.codebook.numpy().copy()
    vq(tf.constant(z), training=False)
    np.testing.assert_array_equal(vq.codebook.numpy(), before)


def test_unused_entry_keeps_its_vector():
    vq = VectorQuantizer(3, 2, update="ema", decay=0.5, epsilon=0.0)
    vq.build()
    vq.codebook.assign([[0.0, 0.0], [10.0, 10.0], [-10.0, 5.0]])
    for _ in range(5):
        vq(tf.constant([[[0.1, 0.2]], [[-0.1, 0.0]]]), training=True)
    np.testing.assert_allclose(vq.codebook.numpy()[1:], [[10.0, 10.0], [-10.0, 5.0]], rtol=1e-5)
    np.testing.assert_allclose(vq.codebook.numpy()[0], [0.0, 0.1], atol=1e-5)  # the mean of its vectors


def test_dead_entries_restart_at_batch_vectors():
    """With restart_threshold t, after each moving-average step (numpy, as above) the entries whose
    count is below t take the batch vectors restart_picks(step) chooses, with count t and sum t z; the
    live entries follow the paper's update."""
    from kvae.models.vqvae.quantize import restart_picks

    rng = np.random.RandomState(3)
    k, d, decay, eps, t = 6, 2, 0.8, 1e-5, 0.5
    vq = VectorQuantizer(k, d, update="ema", decay=decay, epsilon=eps, restart_threshold=t)
    vq.build()
    vq.codebook.assign(np.array([[0, 0], [0.1, 0], [50, 50], [60, 60], [70, 70], [80, 80]], "float32"))
    count, total, book = np.zeros(k), np.zeros((k, d)), vq.codebook.numpy().astype(np.float64)
    restarted = 0
    for step in range(3):
        z = (rng.normal(size=(8, 1, d)) * 0.3).astype("float32")
        codes = _numpy_nearest(z, book)
        vq(tf.constant(z), training=True)
        count, total, book = _numpy_ema(count, total, book, z, codes, k, decay, eps)
        dead = count < t
        picks = restart_picks(step, 8, k).numpy()
        fresh = z.reshape(-1, d)[picks]
        count, total = np.where(dead, t, count), np.where(dead[:, None], t * fresh, total)
        book = np.where(dead[:, None], fresh, book)
        restarted += int(dead.sum())
        np.testing.assert_allclose(vq.ema_count.numpy(), count, rtol=1e-5)
        np.testing.assert_allclose(vq.ema_sum.numpy(), total, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(vq.codebook.numpy(), book, rtol=1e-4, atol=1e-6)
    assert restarted >= 4 and np.abs(vq.codebook.numpy()).max() < 5  # the far entries came to the data
    with pytest.raises(ValueError, match="restart_threshold"):
        VectorQuantizer(k, d, update="loss", restart_threshold=1.0)


def test_perplexity_is_exp_entropy_of_code_usage():
    codes = np.array([[0, 0, 1, 3], [3, 3, 3, 0]])
    p = np.bincount(codes.ravel(), minlength=6) / codes.size
    want = np.exp(-sum(v * np.log(v) for v in p if v > 0))
    assert float(perplexity(tf.constant(codes), 6)) == pytest.approx(want, rel=1e-5)
    assert float(perplexity(tf.zeros([4], tf.int32), 6)) == pytest.approx(1.0)


def _model(**kw):
    options = dict(input_shape=(8, 8, 1), grid=(2, 2), embedding_dim=3, num_embeddings=6, hidden=(16,), seed=4)
    options.update(kw)
    return kvae.VQVAE(**options)


@pytest.mark.parametrize("codebook", ["ema", "loss"])
def test_loss_is_reconstruction_plus_commitment(codebook):
    """Per example: -log p(x|z_q) + 0.25 ||z_e - z_q||^2 (+ ||z_e - e||^2 for the loss-trained codebook),
    written out from the encoder's z_e, the codebook and scipy-free Bernoulli log-likelihood."""
    model = _model(codebook=codebook, commitment=0.25)
    x = (np.random.RandomState(2).uniform(size=(5, 8, 8, 1)) > 0.5).astype("float32")
    terms = model.compute_terms(x, training=False)
    loss = model.bound_loss(terms, 0.0).numpy()
    z_e = terms["z_e"].numpy().reshape(5, 4, 3)
    book = model.posterior.quantizer.codebook.numpy()
    codes = _numpy_nearest(z_e, book)
    z_q = book[codes].reshape(5, -1)
    probs = np.asarray(model.decode(z_q).mean()).reshape(5, -1)
    xf = x.reshape(5, -1)
    log_px = (xf * np.log(probs) + (1 - xf) * np.log1p(-probs)).sum(1)
    sq = ((z_e.reshape(5, -1) - z_q) ** 2).sum(1)
    want = -log_px + 0.25 * sq + (sq if codebook == "loss" else 0.0)
    np.testing.assert_allclose(loss, want, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(terms["kl"].numpy(), 4 * np.log(6), rtol=1e-5)  # uniform code prior: H W log K


def test_loss_trained_codebook_gets_gradient_and_ema_codebook_is_not_trainable():
    x = (np.random.RandomState(3).uniform(size=(8, 8, 8, 1)) > 0.5).astype("float32")
    loss_model = _model(codebook="loss")
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(loss_model.bound_loss(loss_model.compute_terms(x, training=True), 0.0))
    grad = tape.gradient(loss, loss_model.posterior.quantizer.codebook)
    assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0
    ema_model = _model(codebook="ema")
    assert not any("codebook" in w.path for w in ema_model.trainable_weights)
    assert not any("prior" in w.path for w in ema_model.trainable_weights)  # fit_prior trains it, not fit


def test_unfitted_code_prior_is_uniform_and_its_sampler_is_uniform():
    prior = PixelCNNCodePrior(grid=(2, 3), num_embeddings=5, num_layers=2, filters=8)
    prior.build()
    codes = np.random.RandomState(0).randint(0, 5, size=(7, 6))
    np.testing.assert_allclose(prior.log_prob_codes(codes).numpy(), -6 * np.log(5), rtol=1e-6)
    u = np.random.RandomState(1).uniform(size=(4000, 6)).astype("float32")
    drawn = prior.sample_codes(u).numpy()
    np.testing.assert_array_equal(drawn, np.minimum((u * 5).astype(int), 4))  # inverse CDF of the uniform
    np.testing.assert_allclose(normal_cdf(tf.constant([-1.0, 0.0, 2.0])).numpy(), [0.158655, 0.5, 0.97725],
                               atol=1e-5)


def test_code_prior_sampler_follows_the_pixelcnn_conditionals():
    """On a 1 x 2 grid with K = 3 and random weights: the first index's frequencies match
    softmax(logits at position 0), the second's given the first match softmax(logits at position 1 | k_0)."""
    keras.utils.set_random_seed(5)
    prior = PixelCNNCodePrior(grid=(1, 2), num_embeddings=3, num_layers=2, filters=8)
    prior.build()
    rng = np.random.RandomState(5)
    for w in prior.network.head.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 2.0)
    n = 20000
    draws = prior.sample_codes(rng.uniform(size=(n, 2)).astype("float32")).numpy()
    p0 = softmax(prior.logits(np.zeros((1, 2), int)).numpy()[0, 0, 0])
    np.testing.assert_allclose(np.bincount(draws[:, 0], minlength=3) / n, p0, atol=0.015)
    for first in range(3):
        p1 = softmax(prior.logits(np.array([[first, 0]])).numpy()[0, 0, 1])
        chosen = draws[draws[:, 0] == first, 1]
        if len(chosen) > 500:
            np.testing.assert_allclose(np.bincount(chosen, minlength=3) / len(chosen), p1, atol=0.05)
        # and log p(k) is the sum of the two conditionals' log-probabilities
        lp = prior.log_prob_codes(np.array([[first, 2]])).numpy()[0]
        want = log_softmax(prior.logits(np.array([[first, 2]])).numpy()[0, 0], axis=-1)
        assert lp == pytest.approx(want[0, first] + want[1, 2], rel=1e-5)


def test_inverse_cdf_index():
    logits = np.log(np.array([[0.2, 0.3, 0.5]], "float32"))
    got = [int(inverse_cdf_index(tf.constant(logits), tf.constant([u]))[0]) for u in (0.1, 0.25, 0.49, 0.51, 0.999)]
    assert got == [0, 1, 1, 2, 2]


def test_fit_prior_learns_dependent_codes():
    """Index maps whose second half copies the first: the fitted prior's held-out -log p(k) falls far
    below the uniform H W log K (the copied half costs nothing once learned)."""
    model = _model(prior_layers=3, prior_filters=16)
    rng = np.random.RandomState(6)
    first = rng.randint(0, 6, size=(600, 2))
    codes = np.concatenate([first, first], axis=1)
    info = model.prior.fit(codes, epochs=30, batch_size=50, lr=3e-3)
    assert info["uniform_nll"] == pytest.approx(4 * np.log(6))
    assert info["heldout_nll"] < info["uniform_nll"] - 0.6 * 2 * np.log(6), info
    assert model.prior.is_fitted
    assert not any("prior" in w.path for w in model.trainable_weights)  # still only fit_prior trains it
    # once fitted, the KL of the training terms is -log p(k(x)) under the PixelCNN, not H W log K
    x = (rng.uniform(size=(4, 8, 8, 1)) > 0.5).astype("float32")
    terms = model.compute_terms(x)
    np.testing.assert_allclose(terms["kl"].numpy(), -model.prior.log_prob_codes(terms["codes"]).numpy(), rtol=1e-6)
    assert not np.allclose(terms["kl"].numpy(), 4 * np.log(6))


def test_vqvae_trains_and_reports_codebook_usage():
    digits = kvae.data.load("digits", "train")
    x, _ = digits.arrays()
    model = kvae.VQVAE(input_shape=(8, 8, 1), grid=(2, 2), embedding_dim=4, num_embeddings=16, hidden=(64,), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(x, batch_size=64, epochs=6, verbose=0).history
    assert history["rec_loss"][-1] < history["rec_loss"][0] - 3
    assert {"commitment", "perplexity"} <= set(history)
    usage = model.codebook_usage(x)
    codes = model.codes(x)
    assert usage["dead_codes"] == 16 - len(np.unique(codes))
    assert 1.0 <= usage["perplexity"] <= 16
    result = kvae.evaluation.evaluate(model, x[:200])
    assert result["kl"] == pytest.approx(4 * np.log(16), rel=1e-5)
    assert result["neg_elbo"] == pytest.approx(result["rec_loss"] + result["kl"], rel=1e-6)


def test_command_line_train_fit_prior_evaluate_export_and_serve(tmp_path, capsys):
    """kvae train --model vq-vae, fit-prior, evaluate and export on digits; the served bundle's sample
    (the PixelCNN prior's Loop + decoder, from explicit noise) equals the model's own."""
    import json
    import os

    from kvae.cli import main as cli
    from kvae_serve.bundle import Bundle

    run, bundle_dir = str(tmp_path / "run"), str(tmp_path / "bundle")
    assert cli.main(["train", "--model", "vq-vae", "--dataset", "digits", "--epochs", "2", "--grid", "2,2",
                     "--embedding-dim", "4", "--num-embeddings", "16", "--hidden", "64", "--quiet", "--out", run]) == 0
    assert cli.main(["fit-prior", run, "--epochs", "2", "--quiet"]) == 0
    assert "held-out -log p(k)" in capsys.readouterr().out
    path = str(tmp_path / "eval.json")
    assert cli.main(["evaluate", run, "--split", "valid", "--json", path]) == 0
    result = json.load(open(path))
    assert result["code_prior_fitted"] and result["kl"] < 4 * np.log(16)  # the fitted prior beats the uniform
    assert 0 <= result["dead_codes"] < 16 and 1 <= result["perplexity"] <= 16
    assert cli.main(["export", run, "--out", bundle_dir, "--explorer-examples", "0"]) == 0
    model = keras.models.load_model(os.path.join(run, "model.keras"))
    assert model.prior.is_fitted
    assert not any("prior" in w.path for w in model.trainable_weights)  # still only fit_prior trains it
    eps = np.random.default_rng(0).standard_normal((5, model.latent_dim)).astype("float32")
    served = Bundle(bundle_dir)
    got = served.run("sample", eps=eps)["images"]
    np.testing.assert_allclose(got, model.sample_from_noise(eps).numpy(), atol=1e-5)
    assert cli.main(["fit-prior", run.replace("run", "nope")]) == 1
