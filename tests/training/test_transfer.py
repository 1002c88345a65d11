"""Warm starts across a model change (kvae.training.transfer): shared variables copied exactly, the
new decoder left as initialised, and the transferred model's ELBO terms of the shared parts unchanged."""
import os

import numpy as np
import pytest

import kvae
from kvae import registry
from kvae.errors import RunError
from kvae.training import files, runs
from kvae.training.transfer import copy_shared_weights, run_model_with_weights


def ladder(**kw):
    return kvae.LadderVAE(input_shape=(8, 8, 1), groups=2, channels=8, latent_channels=2, blocks=1, **kw)


def test_a_pixelcnn_ladder_starts_from_a_bernoulli_ladder():
    x = (np.random.RandomState(0).uniform(size=(4, 8, 8, 1)) > 0.5).astype("float32")
    source, target = ladder(seed=1), ladder(seed=2, pixelcnn_layers=2, pixelcnn_filters=4)
    source(x), target(x)
    before = {w.path: w.numpy().copy() for w in target.weights}
    copied, kept = copy_shared_weights(source, target)
    by_path = {w.path.split("/", 1)[-1] if w.path.startswith(source.name + "/") else w.path: w
               for w in source.weights}
    assert copied and kept and len(copied) + len(kept) == len(target.weights)
    for w in target.weights:
        if w.path in copied:
            path = w.path.split("/", 1)[-1] if w.path.startswith(target.name + "/") else w.path
            np.testing.assert_array_equal(w.numpy(), by_path[path].numpy(), err_msg=w.path)
        else:
            np.testing.assert_array_equal(w.numpy(), before[w.path], err_msg=w.path)
    # exactly the decoder's own variables start fresh: everything under likelihood/, nothing else
    assert all(p.startswith("likelihood/") for p in kept) and any("pixelcnn" in p for p in kept)
    assert not any(p.startswith("likelihood/") for p in copied)
    # the shared parts compute what the source's did: same bottom-up Gaussians and the same KL per group
    for a, b in zip(source.encode_params(x), target.encode_params(x)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    seed = np.array([3, 4], np.int32)
    for ga, gb in zip(source.latent_groups(x, seed=seed), target.latent_groups(x, seed=seed)):
        np.testing.assert_allclose(ga.kl.numpy(), gb.kl.numpy(), rtol=1e-6)


# every registered family, and the parts that add variables (PixelCNN decoders, flows, an ex-post density)
FAMILIES = [(name, {"num_classes": 3} if name == "cvae" else {}) for name in sorted(registry.TABLE["model"])] + [
    ("vae", {"decoder": "pixelcnn"}), ("vae", {"prior": "maf"}), ("vae", {"posterior": "iaf"}),
    ("vae", {"density": "maf"}), ("lvae", {"pixelcnn_layers": 2}), ("vlae", {"pixelcnn_layers": 1})]


def _run_with_weights(tmp_path, name, options, weights_options=None):
    """A run directory whose config.json describes ``name`` with ``options`` and a weights file of it (of
    ``weights_options`` if given) whose every value was changed from the initial one; returns (model of the
    weights, run_dir, weights path)."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    model = runs.build_model(name, (8, 8, 1), **options)
    files.write_json(str(run / "config.json"), {"model": name, "model_class": type(model).__name__,
                                                "model_config": model.get_config()}, default=float)
    if weights_options is not None:
        model = runs.build_model(name, (8, 8, 1), **weights_options)
    rng = np.random.RandomState(0)
    for w in model.weights:
        v = w.numpy()
        w.assign((v + (rng.uniform(0.5, 1.0, v.shape) if v.dtype.kind == "f" else 1)).astype(v.dtype))
    path = str(run / "some.weights.h5")
    model.save_weights(path)
    return model, str(run), path


@pytest.mark.parametrize("name, options", FAMILIES, ids=[f"{n}{o or ''}" for n, o in FAMILIES])
def test_run_model_with_weights_rebuilds_every_variable_of_every_family(tmp_path, name, options):
    """The rebuilt model holds exactly the file's values, every variable (none left as initialised)."""
    source, run_dir, path = _run_with_weights(tmp_path, name, options)
    model, config = run_model_with_weights(run_dir, path)
    assert type(model) is type(source) and config["model"] == name
    assert len(model.weights) == len(source.weights) > 0
    for a, b in zip(model.weights, source.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.parametrize("config_options, weights_options, message", [
    ({"latent_dim": 3}, {"latent_dim": 2}, "of other shapes"),
    ({}, {"decoder": "pixelcnn"}, "variables the model lacks"),
    ({}, {"prior": "maf"}, "variables the model lacks"),  # Keras loads these two without a word,
    ({"hidden": (16,)}, {"hidden": (16, 16)}, "variables the model lacks"),  # skipping what the model lacks
    ({"decoder": "pixelcnn"}, {}, "of the model's variables"),
])
def test_weights_of_other_options_are_one_error_naming_the_file(tmp_path, config_options, weights_options, message):
    _, run_dir, path = _run_with_weights(tmp_path, "vae", config_options, weights_options)
    with pytest.raises(RunError, match=message) as err:
        run_model_with_weights(run_dir, path)
    text = str(err.value)
    assert text.startswith(f"{path} does not hold the weights of the model {run_dir}/config.json describes")
    assert "\n" not in text


def test_a_missing_config_or_weights_file_is_one_error_naming_it(tmp_path):
    _, run_dir, path = _run_with_weights(tmp_path, "vae", {})
    with pytest.raises(RunError, match="weights file .*missing.weights.h5 not found"):
        run_model_with_weights(run_dir, path.replace("some", "missing"))
    os.remove(os.path.join(run_dir, "config.json"))
    with pytest.raises(RunError, match=f"cannot read the model of {run_dir}/config.json .*No such file"):
        run_model_with_weights(run_dir, path)


def test_long_runs_best_says_in_one_line_that_the_best_weights_do_not_fit(tmp_path, monkeypatch):
    """apps/long_runs.py best with best weights of other options (a MAF prior's, which Keras would skip):
    one line naming the file, nothing written."""
    import importlib.util
    import json
    import sys

    _, run_dir, path = _run_with_weights(tmp_path, "vae", {}, {"prior": "maf"})
    os.makedirs(os.path.join(run_dir, "best"))
    weights = os.path.join(run_dir, "best", "best.weights.h5")
    os.replace(path, weights)
    json.dump({"best_epoch": 0}, open(os.path.join(run_dir, "best", "best.json"), "w"))
    json.dump({"loss": [1.0]}, open(os.path.join(run_dir, "history.json"), "w"))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec = importlib.util.spec_from_file_location("long_runs", os.path.join(root, "apps", "long_runs.py"))
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    out = str(tmp_path / "out")
    monkeypatch.setattr(sys, "argv", ["long_runs.py", "best", run_dir, out])
    with pytest.raises(SystemExit) as exit_:
        app.main()
    message = str(exit_.value.code)
    assert message.startswith(f"long_runs.py best: error: {weights} does not hold the weights") and "\n" not in message
    assert not os.path.exists(out)


def test_transfer_weights_app_builds_a_conditional_target(tmp_path):
    """apps/transfer_weights.py to a conditional model of other options: the new model is built with a
    label, the shared variables are copied and the changed ones start fresh."""
    import importlib.util

    source, run_dir, path = _run_with_weights(tmp_path, "cvae", {"num_classes": 3, "latent_dim": 2})
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec = importlib.util.spec_from_file_location("transfer_weights", os.path.join(root, "apps", "transfer_weights.py"))
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    out = str(tmp_path / "new.weights.h5")
    copied, fresh = app.transfer(run_dir, out, {"num_classes": 3, "latent_dim": 3}, weights=os.path.basename(path))
    assert copied and fresh and len(copied) + len(fresh) == len(source.weights)


def test_init_weights_of_other_options_are_one_error_before_training(tmp_path):
    """kvae train --init-weights with the weights of another model (a MAF prior's, which Keras loads in
    part without a word): one RunError line naming the file, before any training."""
    _, _, path = _run_with_weights(tmp_path, "vae", {}, {"prior": "maf", "hidden": (16,), "latent_dim": 2})
    with pytest.raises(RunError, match=f"{path} does not hold the weights of the model the train options describe"):
        runs.train(model="vae", dataset="digits", epochs=1, hidden=(16,), latent_dim=2, verbose=0,
                   init_weights=path, out=str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / "model.keras")
