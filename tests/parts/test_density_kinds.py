"""Ex-post densities over codes (kvae.parts.densities): the Gaussian mixture, the MAF/IAF flows and the
two-stage VAE integrate to 1, sample their moments, stay out of the model's training, save, export
and run from the CLI."""
import json
import os

import keras
import numpy as np
import pytest

import kvae
from kvae.cli import main as cli
from kvae.parts import densities as density
from kvae.errors import ConfigError


@pytest.fixture(scope="module")
def trained():
    x, _ = kvae.data.load("digits", "train").arrays()
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(64,), seed=0)
    model.compile(optimizer="adam")
    model.fit(x, batch_size=64, epochs=5, verbose=0)
    return model, x


@pytest.fixture(scope="module")
def fitted(trained):
    model, x = trained
    out = {}
    for kind in density.KINDS:
        if kind == "gmm":
            layer = kind
        elif kind == "two-stage":
            layer = density.TwoStageDensity(2, hidden_units=(64, 64), epochs=100, batch_size=64, name="density")
        else:
            layer = density.FlowDensity(2, kind=kind, hidden_units=(32, 32), epochs=15, name="density")
        m = model.with_density(layer)
        m.fit_density(x)
        out[kind] = m
    return out


@pytest.mark.parametrize("kind", density.KINDS)
def test_log_prob_integrates_to_one_on_a_grid(fitted, trained, kind):
    model, x = fitted[kind], trained[1]
    codes = model.posterior_means(x)
    lo, hi = codes.mean(0) - 7 * codes.std(0), codes.mean(0) + 7 * codes.std(0)
    g0, g1 = np.linspace(lo[0], hi[0], 301), np.linspace(lo[1], hi[1], 301)
    grid = np.stack(np.meshgrid(g0, g1, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)
    p = np.exp(model.density.log_prob(grid).numpy()).reshape(301, 301)
    total = np.trapezoid(np.trapezoid(p, g1, axis=1), g0)
    # exact densities: 1 up to the grid; the two-stage VAE's importance-sampled bound: at most 1, close to it
    assert total == pytest.approx(1.0, abs=0.02) if kind != "two-stage" else 0.9 < total < 1.02


@pytest.mark.parametrize("kind", ("gmm", "maf", "iaf"))
def test_samples_have_the_densitys_moments(fitted, kind):
    model = fitted[kind]
    rng = np.random.RandomState(0)
    eps = rng.normal(size=(20000, 2)).astype(np.float32)
    z = model.density.from_noise(eps, rng.uniform(size=20000).astype(np.float32)).numpy()
    # the density's own moments by quadrature-free Monte Carlo: TFP's sampler for the mixture,
    # the change of variables (importance weights p/N under a wide Gaussian) for the flows
    wide_mean, wide_sd = z.mean(0), 3 * z.std(0)
    proposal = rng.normal(size=(60000, 2)) * wide_sd + wide_mean
    log_q = (-0.5 * ((proposal - wide_mean) / wide_sd) ** 2 - np.log(wide_sd * np.sqrt(2 * np.pi))).sum(1)
    log_p = model.density.log_prob(proposal.astype(np.float32)).numpy().astype(np.float64)
    w = np.exp(log_p - log_q)
    w /= w.sum()
    mean = (w[:, None] * proposal).sum(0)
    cov = (w[:, None, None] * np.einsum("ni,nj->nij", proposal - mean, proposal - mean)).sum(0)
    np.testing.assert_allclose(z.mean(0), mean, atol=0.05 * np.sqrt(np.diag(cov)).max())
    np.testing.assert_allclose(np.cov(z.T), cov, rtol=0.1, atol=0.02 * np.abs(cov).max())


def test_two_stage_generative_model_has_the_codes_moments(fitted, trained):
    """Dai & Wipf sample the second decoder's mean m + s g(v); with its gamma noise added, the second
    stage's generative model m + s (g(v) + sqrt(gamma) e) has the moments of the codes it was fitted to."""
    model, x = fitted["two-stage"], trained[1]
    codes = model.posterior_means(x)
    rng = np.random.RandomState(0)
    d = model.density
    mean_z = d.from_noise(rng.normal(size=(20000, 2)).astype(np.float32)).numpy()
    noise = np.sqrt(np.exp(d.log_gamma.numpy())) * rng.normal(size=mean_z.shape) * d.scale.numpy()
    z = mean_z + noise
    np.testing.assert_allclose(z.mean(0), codes.mean(0), atol=0.1 * codes.std(0).max())
    np.testing.assert_allclose(np.cov(z.T), np.cov(codes.T), rtol=0.25, atol=0.05 * np.abs(np.cov(codes.T)).max())


def test_flow_densities_stay_out_of_the_models_training(fitted, trained, tmp_path):
    fitted["maf"].save(str(tmp_path / "copy.keras"))
    model, x = keras.models.load_model(str(tmp_path / "copy.keras")), trained[1]
    before = [v.numpy().copy() for v in model.density.weights]
    assert all(id(v) not in {id(t) for t in model.trainable_variables} for v in model.density.weights)
    model.compile(optimizer="adam")
    model.fit(x[:128], batch_size=64, epochs=1, verbose=0)
    for b, v in zip(before, model.density.weights):
        np.testing.assert_array_equal(b, v.numpy())


def test_with_density_keeps_the_weights_and_fit_density_names_the_kind(trained):
    model, x = trained
    other = model.with_density("iaf")
    np.testing.assert_allclose(other.sample(3, seed=1), model.sample(3, seed=1), atol=1e-6)
    assert other.density.kind == "iaf" and not other.density.is_fitted
    with pytest.raises(ConfigError, match="with_density"):
        model.fit_density(x, kind="maf")


@pytest.mark.parametrize("kind", ("maf", "two-stage"))
def test_trained_density_saves_exports_and_serves(fitted, tmp_path, kind):
    from kvae.export import bundle as export
    from kvae_serve.bundle import Bundle

    model = fitted[kind]
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.density.kind == kind and loaded.density.is_fitted
    np.testing.assert_allclose(loaded.sample(5, source="density", seed=3), model.sample(5, source="density", seed=3),
                               atol=1e-5)
    manifest = export.export(model, str(tmp_path / "bundle"))
    spec = manifest["endpoints"]["sample_density"]
    assert [i["name"] for i in spec["inputs"]] == ["eps"]  # no component choice
    assert manifest["parity"]["sample_density"]["onnx_max_abs_diff"] <= 1e-5
    bundle = Bundle(str(tmp_path / "bundle"))
    images = bundle.sample(4, seed=0, source="density")
    eps = np.random.default_rng(0).standard_normal((4, 2))
    np.testing.assert_allclose(images, model.sample_density_from_noise(eps.astype(np.float32)).numpy(), atol=1e-5)


def test_fit_density_kind_from_the_command_line(tmp_path):
    run = str(tmp_path / "run")
    assert cli.main(["train", "--model", "vae", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2",
                     "--quiet", "--out", run]) == 0
    assert cli.main(["fit-density", run, "--kind", "maf", "--epochs", "2", "--limit", "300"]) == 0
    model = keras.models.load_model(os.path.join(run, "model.keras"))
    assert model.density.kind == "maf" and model.density.is_fitted
    assert os.path.isfile(os.path.join(run, "samples_density.png"))
    assert cli.main(["fit-density", run, "--kind", "gmm", "--epochs", "2"]) == 1  # --epochs is for flows
    assert set(kvae.registry.TABLE["density"]) - {"none"} == set(density.KINDS)  # the CLI's --kind choices
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["model"] == "vae"
