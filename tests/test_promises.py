"""Documented promises, each with a test: CLI options reach the model and the run, ex-post densities,
diagnostics, TFDS-backed data sets (through a stubbed loader), EMA, user parts, the Bernoulli
log-prob, drawing samples."""
import json
import os

import keras
import matplotlib.image as mpimg
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import kvae
from kvae.cli import main as cli
from kvae.data import datasets as data
from kvae.training import runs

TINY = ["--dataset", "digits", "--hidden", "16", "--latent-dim", "3", "--quiet"]


def _config(run):
    return json.load(open(os.path.join(run, "config.json")))


def _history(run):
    return json.load(open(os.path.join(run, "history.json")))


def test_fit_density_from_train_and_from_its_own_command(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert cli.main(["train", "--model", "rae", *TINY, "--epochs", "2", "--fit-density", "--out", run]) == 0
    model, _ = runs.load_run(run)
    assert model.density.is_fitted
    # q is a point mass: no KL per dimension to plot (it would be infinite everywhere)
    assert not os.path.exists(os.path.join(run, "kl_per_dim.png")) and os.path.exists(os.path.join(run, "samples.png"))
    with open(os.path.join(run, "kl_per_dim.png"), "wb") as f:  # an older kvae's blank plot: continuing removes it
        f.write(b"\x89PNG")
    assert cli.main(["train", "--model", "rae", *TINY, "--epochs", "3", "--fit-density", "--out", run]) == 0
    assert not os.path.exists(os.path.join(run, "kl_per_dim.png")) and len(_history(run)["loss"]) == 3
    codes = model.posterior_means(data.load("digits", "train").arrays()[0])
    mixture = model.density.distribution()
    # the mixture was fitted on all 1257 training codes: its mean is theirs
    np.testing.assert_allclose(mixture.mean().numpy(), codes.mean(0), atol=0.05 * codes.std(0).max())
    other = str(tmp_path / "vae")
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", other]) == 0
    assert not runs.load_run(other)[0].density.is_fitted
    assert cli.main(["fit-density", other, "--limit", "500"]) == 0
    assert "fitted a 10-component Gaussian mixture on 500 codes" in capsys.readouterr().out
    fitted = runs.load_run(other)[0]
    assert fitted.density.is_fitted
    # each PNG is the grid of 64 means of p(x|z) at seed 0, z from the mixture or from the prior
    from kvae.evaluation.plotting import image_grid

    grids = {}
    for source in ("density", "prior"):
        grids[source] = image_grid(fitted.sample(64, seed=0, source=source).numpy(), ncol=8)
        shown = mpimg.imread(os.path.join(other, f"samples_{source}.png"))[..., 0]
        np.testing.assert_allclose(shown, grids[source], atol=2 / 255)
    assert np.abs(grids["density"] - grids["prior"]).max() > 0.1  # two different figures


def test_evaluate_diagnostics_writes_numbers_and_pictures(tmp_path):
    run = str(tmp_path / "run")
    assert cli.main(["train", *TINY, "--epochs", "2", "--out", run]) == 0
    path = str(tmp_path / "d.json")
    assert cli.main(["evaluate", run, "--split", "valid", "--k", "5", "--diagnostics", "--json", path]) == 0
    result = json.load(open(path))
    for key in ("mutual_information", "mmd_to_prior", "log_det_cov", "probe_accuracy"):
        assert np.isfinite(result[key]), key
    assert len(result["kl_per_dim"]) == 3
    # the probe written out: logistic regression on standardised posterior means, digits train -> valid
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    model, _ = runs.load_run(run)
    (tx, ty), (vx, vy) = (data.load("digits", s).arrays() for s in ("train", "valid"))
    train_codes, valid_codes = np.asarray(model.posterior_means(tx)), np.asarray(model.posterior_means(vx))
    scaler = StandardScaler().fit(train_codes)
    probe = LogisticRegression(max_iter=2000).fit(scaler.transform(train_codes), ty)
    assert result["probe_accuracy"] == pytest.approx(probe.score(scaler.transform(valid_codes), vy), abs=1e-12)
    shuffled = LogisticRegression(max_iter=2000).fit(scaler.transform(train_codes), np.random.default_rng(0).permutation(ty))
    chance = shuffled.score(scaler.transform(valid_codes), vy)  # a probe of shuffled labels: 0.09 here
    assert result["probe_accuracy"] > chance + 0.1  # the codes carry the class (0.24 after two epochs, 3-d codes)
    # the other numbers, transcribed on the same draws of q(z|x) (seed [0, 31]): log det of their covariance
    # (numpy), the MMD to as many N(0, I) draws of RandomState(0) and the mutual information (the library's
    # functions, each checked against its formula in tests/models/test_regularised.py)
    from kvae.evaluation import metrics

    draws = np.asarray(model.encode(vx).sample(seed=tf.constant([0, 31], tf.int32)), np.float64)
    assert result["log_det_cov"] == pytest.approx(np.linalg.slogdet(np.cov(draws, rowvar=False))[1], rel=1e-9)
    assert result["mmd_to_prior"] == pytest.approx(metrics.mmd_to_prior(draws, seed=0), rel=1e-6, abs=1e-9)
    assert result["mutual_information"] == pytest.approx(metrics.mutual_information(model, vx, seed=0), rel=1e-6)
    kl = np.asarray(metrics.posterior_statistics(model, vx, seed=0)["kl_per_dim"]).mean(0)
    np.testing.assert_allclose(result["kl_per_dim"], kl, rtol=1e-6)
    # traversal.png under its title: the first validation digit's posterior mean with one dimension at a time
    # swept over 9 values in [-3, 3], one row per dimension, each image E[x|z]
    from kvae.evaluation.plotting import image_grid

    codes = np.repeat(np.asarray(model.posterior_means(vx[:1])), 27, axis=0)
    for d in range(3):
        codes[9 * d:9 * (d + 1), d] = np.linspace(-3, 3, 9)
    grid = image_grid(model.decode(codes.astype(np.float32)).mean().numpy(), ncol=9, min_size=512)
    traversal = mpimg.imread(os.path.join(run, "traversal.png"))
    assert traversal.shape[1] == grid.shape[1]
    np.testing.assert_allclose(traversal[-grid.shape[0]:, :, 0], grid, atol=2 / 255)


def _stub_tfds(monkeypatch, images, labels):
    def fake(name, tfds_split, data_dir):
        return images, labels

    monkeypatch.setattr(data, "_tfds_arrays", fake)


def test_mnist_is_dynamically_binarised_and_fashion_mnist_is_gaussian(monkeypatch, tmp_path):
    rng = np.random.RandomState(123)  # not seed 0: Split.arrays binarises with RandomState(0)
    images = (rng.uniform(size=(300, 28, 28, 1)) * 255).astype(np.uint8)
    labels = rng.randint(0, 10, 300)
    _stub_tfds(monkeypatch, images, labels)
    mnist = data.load("mnist", "train")
    assert mnist.dynamic and mnist.binary
    x, _ = mnist.arrays()
    assert set(np.unique(x)) <= {0.0, 1.0}  # evaluation splits: binarised once, with a fixed seed
    np.testing.assert_array_equal(x, mnist.arrays()[0])
    assert abs(x.mean() - images.mean() / 255) < 0.01  # Bernoulli(intensity), not a threshold
    fashion = data.load("fashion_mnist", "train")
    assert not fashion.binary and fashion.arrays()[0].max() <= 1.0
    model = runs.build_model("vae", fashion.input_shape, fashion.num_classes, binary=fashion.binary)
    assert type(model.likelihood).__name__ == "GaussianLikelihood"
    bad = images.astype(np.float32)
    bad[3, 4, 5, 0] = 300.0
    _stub_tfds(monkeypatch, bad, labels)
    with pytest.raises(kvae.errors.DataError, match=r"not 8-bit intensities 0..255 \(first at index \(3, 4, 5, 0\)"):
        data.load("mnist", "train")


def test_ema_replaces_the_weights_at_the_end_of_fit(tmp_path):
    x, _ = data.load("digits", "train").arrays()
    raw, ema = [], []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # the last one runs before Keras swaps in the averages
            raw[:] = [w.numpy().copy() for w in self.model.trainable_variables]
            ema[:] = [v.numpy().copy() for v in self.model.optimizer._model_variables_moving_average]

    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), seed=0)
    model.compile(optimizer=runs.make_optimizer("adam", 1e-2, ema=0.9))
    model.fit(x, batch_size=100, epochs=2, verbose=0, callbacks=[Record()])
    final = [w.numpy() for w in model.trainable_variables]
    assert any(np.abs(r - f).max() > 1e-4 for r, f in zip(raw, final))  # the raw weights were replaced
    for e, f in zip(ema, final):
        np.testing.assert_allclose(e, f, atol=1e-6)  # ... by the moving average


def test_cli_beta_warmup_and_beta_tcvae_dataset_size(tmp_path):
    run = str(tmp_path / "b")
    assert cli.main(["train", "--model", "beta-vae", *TINY, "--epochs", "2", "--limit", "400", "--batch-size", "100",
                     "--beta", "2", "--kl-warmup-steps", "4", "--out", run]) == 0
    history = _history(run)
    np.testing.assert_allclose(history["beta"], [np.mean([0, 0.5, 1.0, 1.5]), 2.0], atol=1e-6)  # steps 0-3, 4-7
    config = _config(run)["model_config"]
    assert config["beta"] == 2.0 and config["kl_warmup_steps"] == 4
    run = str(tmp_path / "tc")
    assert cli.main(["train", "--model", "beta-tcvae", *TINY, "--epochs", "1", "--limit", "300", "--out", run]) == 0
    (reg,) = _config(run)["model_config"]["regularizers"]
    assert reg["config"]["dataset_size"] == 300  # the estimator's N: the training-set size


@pytest.mark.parametrize("extra, check", [
    (["--strategy", "mirrored"], lambda c: c["strategy"] == "mirrored" and c["replicas"] >= 1
     and c["steps_per_execution"] == 1),  # Keras' multi-step loop fails under a strategy (keras#19246)
    (["--jit-compile"], lambda c: c["jit_compile"] is True),
    (["--precision", "mixed_bfloat16"], lambda c: c["precision"] == "mixed_bfloat16"),
])
def test_scale_options_from_the_cli(tmp_path, extra, check):
    run = str(tmp_path / "run")
    assert cli.main(["train", *TINY, "--epochs", "1", "--limit", "200", *extra, "--out", run]) == 0
    assert check(_config(run))
    assert np.all(np.isfinite(_history(run)["loss"]))
    if "mixed_bfloat16" in extra:
        model, _ = runs.load_run(run)
        assert keras.mixed_precision.global_policy().name == "float32"  # the run restored the policy


def test_non_finite_weights_stop_training_and_are_not_checkpointed(tmp_path):
    from kvae.training.callbacks import SafeBackupAndRestore

    x, _ = data.load("digits", "train").arrays()
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), seed=0)
    model.compile(optimizer="adam")
    good = SafeBackupAndRestore(str(tmp_path / "b"), save_freq=2)
    model.fit(x[:400], batch_size=100, epochs=1, verbose=0, callbacks=[good])  # a finished run: no checkpoint left

    class Poison(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                w = self.model.trainable_variables[0]
                w.assign(tf.fill(w.shape, np.nan))

    backup = SafeBackupAndRestore(str(tmp_path / "b"), save_freq=1)
    model.fit(x[:800], batch_size=100, epochs=3, verbose=0, callbacks=[Poison(), backup])
    assert backup.diverged is not None and backup.diverged["where"] == "weights"
    assert int(model.optimizer.iterations.numpy()) < 4 + 24  # stopped early
    check = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), seed=0)
    check.load_weights(str(tmp_path / "b" / "latest.weights.h5"))
    assert all(np.all(np.isfinite(w)) for w in check.get_weights())  # the kept checkpoint is finite


def test_kernel_regularizer_losses_reach_the_training_loss():
    enc = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(16, "relu", kernel_regularizer=keras.regularizers.L2(10.0))])
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, encoder_network=enc, hidden=(16,), seed=0)
    model.compile(optimizer="sgd")
    x, _ = data.load("digits", "valid").arrays()
    r = model.evaluate(x, batch_size=len(x), verbose=0, return_dict=True)
    l2 = 10.0 * float(np.sum(enc.layers[-1].kernel.numpy() ** 2))
    np.testing.assert_allclose(r["loss"] - r["neg_elbo"], l2, rtol=1e-3)


def test_a_registered_user_part_builds_by_name_and_round_trips(tmp_path):
    @keras.saving.register_keras_serializable(package="test_promises")
    class WidePrior(kvae.parts.priors.StandardNormalPrior):
        def distribution(self):
            tfd = tfp.distributions
            return tfd.Independent(tfd.Normal(tf.zeros(self.latent_dim), 3.0 * tf.ones(self.latent_dim)), 1)

    kvae.parts.priors.register("wide", WidePrior)
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), prior="wide", seed=0)
    assert isinstance(model.prior, WidePrior)
    np.testing.assert_allclose(model.prior_distribution().stddev().numpy(), [3.0, 3.0])
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert isinstance(keras.models.load_model(path).prior, WidePrior)


def test_onnx_friendly_bernoulli_log_prob_equals_tfps():
    from kvae.parts.likelihoods import bernoulli_log_prob

    rng = np.random.RandomState(0)
    logits = rng.normal(size=(50, 7)).astype("float32") * 20  # large logits: the stable form matters
    x = (rng.uniform(size=(50, 7)) > 0.5).astype("float32")
    expected = tfp.distributions.Bernoulli(logits=logits, dtype=tf.float32).log_prob(x).numpy()
    np.testing.assert_allclose(bernoulli_log_prob(tf.constant(logits), tf.constant(x)).numpy(), expected, atol=1e-5)


def test_sample_mean_false_draws_binary_pixels(tmp_path):
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=0)
    mean = model.sample(16, seed=1).numpy()
    draws = model.sample(16, seed=1, mean=False).numpy()
    assert set(np.unique(draws)) <= {0.0, 1.0} and len(np.unique(mean)) > 2
    assert abs(draws.mean() - mean.mean()) < 0.1
    run = str(tmp_path / "run")
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", run]) == 0
    assert cli.main(["sample", run, "--n", "8", "--draw", "--out", str(tmp_path / "d.png")]) == 0
    image = mpimg.imread(str(tmp_path / "d.png"))[..., 0]
    # the grid of the model's binary draws, exactly (a mean image, or another seed, would not match)
    from kvae.evaluation.plotting import image_grid

    model, _ = runs.load_run(run)
    np.testing.assert_array_equal(image, image_grid(model.sample(8, seed=0, mean=False).numpy(), ncol=8))
