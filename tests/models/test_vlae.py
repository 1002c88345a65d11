"""VLAE pieces: free bits, the local decoder's receptive field, large-k evaluation, the CLI."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.cli import main as cli


def test_free_bits_floor_per_dimension():
    model = kvae.VAE(input_shape=(4, 4, 1), latent_dim=3, hidden=(8,), free_bits_per_dim=0.5, seed=0)
    kl_per_dim = tf.Variable([[0.1, 1.0, 0.6], [0.2, 2.0, 0.2]])  # batch means 0.15, 1.5, 0.4
    with tf.GradientTape() as tape:
        penalty = model.kl_penalty({"kl": tf.reduce_sum(kl_per_dim, -1), "kl_per_dim": kl_per_dim})
        mean = tf.reduce_mean(penalty)
    np.testing.assert_allclose(mean, 0.5 + 1.5 + 0.5, rtol=1e-6)  # sum_d max(lambda, E KL_d)
    grad = tape.gradient(mean, kl_per_dim).numpy()
    np.testing.assert_allclose(grad, [[0, 0.5, 0], [0, 0.5, 0]])  # only the dimension above the floor learns


def test_free_bits_floor_on_the_total_for_flow_priors():
    model = kvae.VAE(input_shape=(4, 4, 1), latent_dim=4, hidden=(8,), free_bits_per_dim=0.5, seed=0,
                     prior=kvae.parts.priors.FlowPrior(4, num_steps=1, hidden_units=(8,)))
    kl = tf.constant([1.0, 2.0])
    np.testing.assert_allclose(model.kl_penalty({"kl": kl, "kl_per_dim": None}), [2.0, 2.0])  # floor 0.5 * 4
    np.testing.assert_allclose(model.kl_penalty({"kl": kl + 2, "kl_per_dim": None}), kl + 2)


def test_vlae_defaults_are_the_papers():
    model = kvae.VLAE(input_shape=(28, 28, 1), hidden=(32,))
    rf = model.likelihood.receptive_field
    assert model.latent_dim == 64 and model.free_bits_per_dim == 0.01
    assert model.likelihood.network.num_layers == 6 and model.likelihood.network.kernel_size == 3
    assert rf["rows_above"] == 6 and model.likelihood.network.filters == 12
    assert model.prior.num_steps == 4 and model.prior.hidden_units == [640, 640, 640]
    # z's 4-channel map concatenated to the image at the PixelCNN's input; a ResNet encoder
    assert model.likelihood.network.conditioning == "input" and model.likelihood.cond_channels == 4
    assert model.get_config()["network"] == "resnet" and model.encoder_network.output_shape == (None, 2048)


def test_a_vlae_saved_before_the_conditioning_option_loads_as_it_was_trained():
    """A config without ``conditioning`` (the first pretrained VLAE's, ``vlae-mlp-binarized-mnist``) keeps
    every-layer conditioning and its MLP encoder; the round trip of a new default VLAE keeps its own."""
    stored = os.path.join(os.path.dirname(kvae.pretrained.__file__), "files", "vlae-mlp-binarized-mnist")
    assert "conditioning" not in open(os.path.join(stored, "model.json")).read()
    pre = kvae.pretrained.load("vlae-mlp-binarized-mnist")
    assert pre.likelihood.network.conditioning == "every_layer" and pre.get_config()["conditioning"] == "every_layer"
    assert pre.get_config()["network"] == "mlp"
    model = kvae.VLAE(input_shape=(8, 8, 1), latent_dim=4, flow_steps=1, flow_hidden=(8,), pixelcnn_filters=4, seed=0)
    again = kvae.VLAE.from_config(model.get_config())
    assert again.likelihood.network.conditioning == "input" and again.get_config()["network"] == "resnet"


def test_log_likelihood_with_k_4096_fits_in_memory():
    model = kvae.VLAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(16,), flow_steps=2, flow_hidden=(16,),
                      pixelcnn_filters=8, seed=0)
    x = (np.random.RandomState(0).uniform(size=(3, 8, 8, 1)) > 0.5).astype("float32")
    ll = model.log_likelihood(x, k=4096, max_elements=2**20)
    assert ll.shape == (3,) and np.all(np.isfinite(ll))
    elbo = np.mean([model.elbo(x, seed=s).numpy() for s in range(64)], axis=0)  # E_q[log w]
    assert np.all(ll.numpy() >= elbo - 0.5), (ll, elbo)  # log E[w] >= E[log w]


def test_vlae_from_the_cli(tmp_path):
    out = str(tmp_path / "vlae")
    assert cli.main(["train", "--model", "vlae", "--epochs", "1", "--limit", "200", "--latent-dim", "4",
                     "--hidden", "32", "--flow-steps", "1", "--flow-hidden", "16", "--pixelcnn-layers", "2",
                     "--pixelcnn-filters", "4", "--posterior", "iaf", "--optimizer", "adamax", "--lr", "2e-3",
                     "--ema", "0.99", "--network", "mlp", "--conditioning", "every_layer", "--out", out,
                     "--quiet"]) == 0
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["model_class"] == "VLAE" and config["model_config"]["posterior"]["class_name"] == "IAFPosterior"
    assert config["model_config"]["network"] == "mlp" and config["model_config"]["conditioning"] == "every_layer"
    assert config["model_config"]["decoder"]["config"]["conditioning"] == "every_layer"
    path = str(tmp_path / "e.json")
    assert cli.main(["evaluate", out, "--k", "16", "--limit", "4", "--json", path]) == 0
    assert json.load(open(path))["kl_per_dim"] is None  # flow prior: no per-dimension KL
    assert cli.main(["sample", out, "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    # the PNG is the grid of the run's model's own sample at --seed's default 0 (its PixelCNN decoder's images)
    import matplotlib.image as mpimg

    from kvae.evaluation.plotting import image_grid
    from kvae.training import runs

    model, _ = runs.load_run(out)
    want = image_grid(model.sample(4, seed=0).numpy(), ncol=4)
    np.testing.assert_allclose(mpimg.imread(str(tmp_path / "s.png"))[..., 0], want, atol=2 / 255)
    assert np.abs(image_grid(model.sample(4, seed=1).numpy(), ncol=4) - want).max() > 0.1


def test_flow_prior_and_iaf_posterior_on_a_plain_vae_from_the_cli(tmp_path):
    out = str(tmp_path / "afvae")
    assert cli.main(["train", "--model", "vae", "--prior", "maf", "--posterior", "iaf", "--epochs", "1",
                     "--latent-dim", "4", "--hidden", "32", "--flow-steps", "2", "--flow-hidden", "16",
                     "--out", out, "--quiet"]) == 0
    config = json.load(open(os.path.join(out, "config.json")))["model_config"]
    assert config["prior"]["class_name"] == "FlowPrior" and config["posterior"]["class_name"] == "IAFPosterior"


def test_free_bits_total_is_maes_clamp_of_the_batch_mean_kl():
    """MAE's reference code: loss uses KL.mean().clamp(min=free_bits)."""
    model = kvae.MAE(input_shape=(4, 4, 1), latent_dim=3, hidden=(8,), free_bits_total=2.0, seed=0)
    for kl_values, expected_mean in (([1.0, 2.0], 2.0), ([3.0, 5.0], 4.0)):
        kl = tf.Variable(kl_values)
        with tf.GradientTape() as tape:
            mean = tf.reduce_mean(model.kl_penalty({"kl": kl, "kl_per_dim": None}))
        np.testing.assert_allclose(mean.numpy(), max(np.mean(kl_values), 2.0), rtol=1e-6)
        assert float(mean) == expected_mean
        grad = tape.gradient(mean, kl)
        np.testing.assert_allclose(0 if grad is None else grad.numpy(), [0, 0] if expected_mean == 2.0 else [0.5, 0.5])
    with pytest.raises(kvae.errors.ConfigError, match="not both"):
        kvae.VAE(input_shape=(4, 4, 1), free_bits_per_dim=0.1, free_bits_total=1.0)


def test_vlae_trains_with_the_papers_optimizer_by_default(tmp_path):
    out = str(tmp_path / "v")
    assert cli.main(["train", "--model", "vlae", "--epochs", "1", "--limit", "100", "--latent-dim", "3", "--hidden",
                     "16", "--flow-steps", "1", "--flow-hidden", "8", "--pixelcnn-layers", "2",
                     "--pixelcnn-filters", "4", "--out", out, "--quiet"]) == 0
    config = json.load(open(os.path.join(out, "config.json")))
    assert (config["optimizer"], config["lr"], config["ema"]) == ("adamax", 2e-3, 0.998)
    out = str(tmp_path / "w")
    assert cli.main(["train", "--epochs", "1", "--limit", "100", "--latent-dim", "2", "--hidden", "8",
                     "--out", out, "--quiet"]) == 0
    config = json.load(open(os.path.join(out, "config.json")))
    assert (config["optimizer"], config["lr"], config["ema"]) == ("adam", 1e-3, None)
