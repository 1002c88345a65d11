"""Model-zoo losses against their papers' formulas written out in numpy."""
import keras
import numpy as np
import tensorflow as tf

import kvae
from kvae.regularizers import _fold


def imq_mmd_unbiased(a, b, scales):
    def k(x, y):
        d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
        return sum(c / (c + d2) for c in (2 * x.shape[1] * s ** 2 for s in scales))

    n, m = len(a), len(b)
    kxx, kyy = k(a, a), k(b, b)
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * k(a, b).mean())


def test_wae_loss_is_reconstruction_plus_lambda_imq_mmd():
    model = kvae.WAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), reg_weight=7.0, bandwidths=(1.0, 2.0), seed=0)
    x = (np.random.RandomState(0).uniform(size=(12, 8, 8, 1)) > 0.5).astype("float32")
    seed = tf.constant([3, 4], tf.int32)
    terms = model.compute_terms(x, seed=seed)
    loss, _ = model.per_example_loss(terms, 0.0)
    z = terms["z"].numpy()
    np.testing.assert_allclose(z, model.encode_params(x)[0].numpy(), atol=1e-6)  # deterministic codes
    prior_z = terms["prior"].sample(12, seed=_fold(seed, 11)).numpy()
    want = -terms["log_px_z"].numpy() + 7.0 * imq_mmd_unbiased(z.astype(np.float64), prior_z.astype(np.float64),
                                                               (1.0, 2.0))
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(terms["kl"].numpy(), np.zeros(12))


def test_annealed_capacity_loss_follows_the_kl_target():
    model = kvae.AnnealedCapacityBetaVAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), gamma=100.0,
                                        capacity=20.0, capacity_steps=200, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = (np.random.RandomState(1).uniform(size=(10, 8, 8, 1)) > 0.5).astype("float32")
    terms = model.compute_terms(x, seed=tf.constant([1, 2], tf.int32))
    kl = terms["kl"].numpy().mean()
    for step, c in ((0, 0.0), (50, 5.0), (200, 20.0), (1000, 20.0)):
        model.optimizer.iterations.assign(step)
        loss, _ = model.per_example_loss(terms, None)
        np.testing.assert_allclose(loss.numpy(), -terms["log_px_z"].numpy() + 100.0 * abs(kl - c), rtol=1e-5)
    config = model.get_config()
    assert (config["gamma"], config["capacity"], config["capacity_steps"]) == (100.0, 20.0, 200)
    assert "beta" not in config


def test_new_names_train_and_export_from_the_cli(tmp_path):
    import os

    from kvae import cli

    for name, options in (("wae-mmd", ["--reg-weight", "3"]), ("annealed-beta-vae", ["--capacity-steps", "5"])):
        run, bundle = str(tmp_path / name), str(tmp_path / f"{name}-bundle")
        assert cli.main(["train", "--model", name, "--dataset", "digits", "--epochs", "1", "--hidden", "16",
                         "--latent-dim", "2", "--limit", "200", "--out", run, "--quiet", *options]) == 0
        model = keras.saving.load_model(os.path.join(run, "model.keras"))
        assert model.get_config()["reg_weight" if name == "wae-mmd" else "capacity_steps"] == float(options[1])
        assert cli.main(["export", run, "--out", bundle]) == 0
        assert os.path.isfile(os.path.join(bundle, "manifest.json"))
