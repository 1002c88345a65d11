"""Files written by kvae 0.1.0 keep loading, with the same outputs.

``tests/fixtures/v0_1`` holds what the release tagged ``pre-move`` wrote and computed (see
``tests/fixtures/make_v0_1_fixtures.py``, which must NOT be re-run by a later version: the point of
these files is that they were written by 0.1.0):

* ``<TestClassName>.keras``: every battery model of ``tests/models/test_models.py``, fitted one epoch and
  saved with its optimizer state (a few large ResNet models: fitted weights without the optimizer
  state, see ``skipped`` in ``index.json``), and ``<TestClassName>.npz``: fixed inputs and the
  outputs of the model's deterministic endpoints on them;
* ``pretrained_<name>.npz``: the same for the pretrained models shipped in the package, which load
  from the package itself (``kvae.pretrained.load``).  A package that a later version replaced under
  the same name ships on under the name in ``RENAMED``, with the very files 0.1.0 recorded (their
  sha256 is checked against the fixture's).

Each fixture loads (``keras.models.load_model`` after ``import kvae``), is the same model class, and
every recorded endpoint gives the recorded outputs within 1e-6.  Nothing outside the repository is
read (no MNIST).
"""
import hashlib
import json
import os

import numpy as np
import pytest

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "v0_1")
with open(os.path.join(HERE, "index.json")) as _f:
    INDEX = json.load(_f)
FIXTURES = INDEX["fixtures"]
# 0.1.0's pretrained VLAE (MLP encoder, 34 epochs) ships on under this name since the retrained VLAE took its name
RENAMED = {"vlae-binarized-mnist": "vlae-mlp-binarized-mnist"}


def _load(entry):
    import keras

    import kvae  # noqa: F401  (registers kvae's serialisable classes)

    if entry["kind"] == "pretrained":
        name = RENAMED.get(entry["pretrained_name"], entry["pretrained_name"])
        assert kvae.pretrained.manifest(name)["sha256"] == entry["package_files_sha256"], name
        return kvae.pretrained.load(name)
    return keras.models.load_model(os.path.join(HERE, entry["file"]))


def _run(model, spec, arrays):
    """One endpoint's outputs: ``getattr(model, method)(**{keyword: stored input})``; a list of input
    names is passed as a tuple (``model((x, labels))``)."""
    kwargs = {}
    for keyword, key in spec["args"].items():
        kwargs[keyword] = tuple(arrays[k] for k in key) if isinstance(key, list) else arrays[key]
    out = getattr(model, spec["method"])(**kwargs)
    return [np.asarray(o) for o in out] if isinstance(out, (tuple, list)) else [np.asarray(out)]


def assert_close(got, want, what):
    """|got - want| <= 1e-6 elementwise where |want| <= 1, else <= 1e-6 * |want|.

    A plain atol of 1e-6 is used wherever it can hold in float32; the relative part exists only for
    large values (log-probs of 45..190 nats, the pretrained decoders' logits up to ~100), whose float32
    spacing (7.6e-6 at 100) exceeds 1e-6 by itself, so that summing the same terms in another order
    would fail a pure 1e-6 bound.  Here: atol = 1e-6 * max(1, |want|)."""
    assert got.shape == want.shape, f"{what}: shape {got.shape}, recorded {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, recorded {want.dtype}"
    if np.abs(want).max(initial=0.0) <= 1.0:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=what)
        return
    tol = 1e-6 * np.maximum(1.0, np.abs(want))
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bad = ~(diff <= tol)  # NaN counts as bad
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {bad.size} values differ by more than "
                           f"1e-6 * max(1, |recorded|); largest |diff| {float(np.nanmax(diff)):.3g} "
                           f"(at recorded {float(want.flat[int(np.nanargmax(diff - tol))]):.6g})")


@pytest.mark.parametrize("entry", FIXTURES, ids=[e["name"] for e in FIXTURES])
def test_file_written_by_v0_1_loads_with_equal_outputs(entry):
    if entry["kind"] == "keras":
        with open(os.path.join(HERE, entry["file"]), "rb") as f:  # the file is still the one 0.1.0 wrote
            assert hashlib.sha256(f.read()).hexdigest() == entry["keras_sha256"], entry["file"]
    model = _load(entry)
    assert type(model).__name__ == entry["model_class"]
    if entry.get("optimizer_iterations") is not None:  # the optimizer state came back with the weights
        assert model.optimizer is not None
        assert int(model.optimizer.iterations.numpy()) == entry["optimizer_iterations"]
    with np.load(os.path.join(HERE, entry["data"])) as stored:
        arrays = {k: stored[k] for k in stored.files}
    assert entry["endpoints"]
    for name, spec in entry["endpoints"].items():
        outs = _run(model, spec, arrays)
        assert len(outs) == len(spec["outputs"]), (name, len(outs), spec["outputs"])
        for key, got in zip(spec["outputs"], outs):
            assert_close(got, arrays[key], f"{entry['name']}: {name} -> {key}")


def test_index_accounts_for_every_battery_class_of_v0_1():
    """Each of the battery classes of 0.1.0 has a .keras fixture or a recorded reason why not."""
    names = INDEX["battery_classes"]
    stored = [e["name"] for e in FIXTURES if e["kind"] == "keras"]
    not_stored = [e["name"] for e in INDEX["skipped"] if e["stored"] == "nothing"]
    assert sorted(stored + not_stored) == sorted(names)
    assert all(e["reason"] for e in INDEX["skipped"])
    for e in FIXTURES:
        if e["kind"] == "keras":
            assert os.path.isfile(os.path.join(HERE, e["file"])), e["file"]
        assert os.path.isfile(os.path.join(HERE, e["data"])), e["data"]
