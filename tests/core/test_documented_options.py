"""Documented behaviour of the Python API that no other test reaches: a saved config's old
``free_bits`` key, and a conditional model's ``sample(n)`` cycling through the classes."""
import json
import zipfile

import keras
import numpy as np
import pytest

import kvae


def _evaluate(model, x):
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model.evaluate(x, batch_size=len(x), verbose=0, return_dict=True)


def test_the_old_free_bits_key_of_a_saved_config_loads_as_free_bits_per_dim(tmp_path, digits):
    x = digits["valid"].arrays()[0][:64]
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(16,), free_bits_per_dim=0.5, seed=0)
    model(x[:1])
    path = str(tmp_path / "new.keras")
    model.save(path)
    # the same file as a release before free bits had two forms wrote it: the key was `free_bits`
    old = str(tmp_path / "old.keras")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                inner = config["config"]
                assert inner.pop("free_bits_per_dim") == 0.5
                inner["free_bits"] = 0.5
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    loaded = keras.models.load_model(old)
    assert loaded.get_config()["free_bits_per_dim"] == 0.5 and "free_bits" not in loaded.get_config()
    # the floor acts: the loss is that of the original model, not of one without free bits
    none = kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(16,), seed=0)
    none(x[:1])
    none.set_weights(model.get_weights())
    want, got, without = _evaluate(model, x), _evaluate(loaded, x), _evaluate(none, x)
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-6)
    assert abs(without["loss"] - want["loss"]) > 1e-3  # the floor changes this loss


def test_conditional_sample_without_labels_cycles_through_the_classes():
    model = kvae.models.vae.ConditionalVAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), num_classes=3, seed=0)
    model((np.zeros((1, 8, 8, 1), "float32"), np.zeros((1,), "int32")))
    cycled = np.asarray(model.sample(7, seed=5))
    explicit = np.asarray(model.sample(7, labels=[0, 1, 2, 0, 1, 2, 0], seed=5))
    np.testing.assert_array_equal(cycled, explicit)
    zeros = np.asarray(model.sample(7, labels=0, seed=5))  # same z: rows of class 0 agree, the others do not
    for i in range(7):
        same = np.array_equal(cycled[i], zeros[i])
        assert same == (i % 3 == 0), i
