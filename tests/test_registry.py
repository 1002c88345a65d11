"""One registry of names (kvae.registry): the table is the only source of names, listing them and
the command line's help import no TensorFlow, every entry resolves, and users add their own."""
import copy
import json
import os
import subprocess
import sys

import keras
import pytest

import kvae
from kvae import registry
from kvae.core.model import VariationalModel
from kvae.errors import ConfigError
from kvae.options import model_options

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by a test are undone after it."""
    monkeypatch.setattr(registry, "_entries", copy.copy(registry._entries))
    for kind in registry.KINDS:
        registry._entries[kind] = dict(registry._entries[kind])


def _keras_registered_models():
    """Model classes registered with Keras under package "kvae" (what load_model reads)."""
    import kvae.models  # noqa: F401  (imports every model module)

    found = set()
    for key, obj in keras.saving.get_custom_objects().items():
        if key.startswith("kvae>") and isinstance(obj, type) and issubclass(obj, VariationalModel):
            found.add(obj)
    return found - {VariationalModel}


def test_the_table_names_every_keras_registered_model_and_only_those():
    table = {registry.get("model", name) for name in registry.names("model")}
    assert len(table) == len(registry.names("model"))  # one name per class
    assert table == _keras_registered_models()
    for name in registry.names("model"):
        cls = registry.get("model", name)
        assert keras.saving.get_registered_name(cls) == f"kvae>{cls.__name__}", name
        assert cls is getattr(kvae, cls.__name__) and kvae.models.get(name) is cls


def test_every_entry_of_every_kind_resolves():
    from kvae.parts.objectives import Objective
    from kvae.parts.regularizers import Regularizer

    assert set(registry.KINDS) == {"model", "posterior", "prior", "likelihood", "network", "objective",
                                   "regularizer", "density", "dataset", "hook"}
    for kind in registry.KINDS:
        assert registry.names(kind), kind
        for name in registry.names(kind):
            obj = registry.get(kind, name)
            if kind == "network":
                assert len(obj) == 2 and all(callable(f) for f in obj), name
            else:
                assert callable(obj), (kind, name)
            if kind == "objective":
                assert issubclass(obj, Objective), name
            if kind == "regularizer":
                assert issubclass(obj, Regularizer), name
    for kind, entries in registry.TABLE.items():
        for target in entries.values():
            assert isinstance(target, str) and ":" in target  # declared lazily, never as objects


def test_parts_build_from_names_of_the_registry():
    from kvae.parts import densities, likelihoods, networks, objectives, posteriors, priors

    for name in registry.names("posterior"):
        assert posteriors.get(name, 3).name == "posterior"
    for name in registry.names("prior"):
        assert priors.get(name, 3).name == "prior"
    assert likelihoods.get("gaussian", (8, 8, 1)).name == "likelihood"
    assert densities.get("two-stage", 3).name == "density"
    assert type(objectives.get("rhvae")).__name__ == "RiemannianHamiltonianBound"
    enc, dec = networks.build("conv4", (8, 8, 1), 3, (16,))
    assert enc.name == "encoder_network" and dec.name == "decoder_network"
    layer = kvae.parts.posteriors.GaussianPosterior(3)
    assert posteriors.get(layer, 3) is layer  # a layer passes through
    restored = posteriors.get(keras.saving.serialize_keras_object(layer), 3)  # a config dict is deserialised
    assert type(restored) is type(layer) and restored.latent_dim == 3


@pytest.mark.parametrize("call, words", [
    (lambda: registry.get("model", "vea"), ["unknown model 'vea'", "vae, vae-gan"]),
    (lambda: registry.get("colour", "red"), ["unknown kind of name 'colour'", "posterior"]),
    (lambda: kvae.parts.posteriors.get("flow", 2), ["unknown posterior 'flow'", "gaussian, iaf", "or pass a layer"]),
    (lambda: kvae.parts.likelihoods.get(3, (2,)), ["unknown decoder likelihood 3", "bernoulli"]),
    (lambda: kvae.parts.objectives.get("iwea"), ["unknown objective 'iwea'", "choose elbo, ciwae, hvae"]),
    (lambda: kvae.parts.densities.get("kde", 2), ["density must be one of gmm, iaf, maf, none, two-stage", "'kde'"]),
    (lambda: kvae.parts.networks.build("vgg", (8, 8, 1), 2, ()), ["unknown network 'vgg'", "conv, conv4, mlp"]),
    (lambda: kvae.models.get("nope"), ["unknown model 'nope'"]),
])
def test_unknown_names_raise_config_errors_naming_the_valid_ones(call, words):
    with pytest.raises(ConfigError) as err:
        call()
    for word in words:
        assert word in str(err.value)


def test_users_register_objects_and_lazy_strings(scratch_registry):
    class MyPrior(kvae.parts.priors.StandardNormalPrior):
        pass

    registry.register("prior", "mine", MyPrior)
    registry.register("posterior", "point", "kvae.parts.posteriors:DeterministicPosterior")
    assert "mine" in registry.names("prior") and registry.entry("posterior", "point").endswith(":DeterministicPosterior")
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), prior="mine", posterior="point", seed=0)
    assert type(model.prior) is MyPrior and type(model.posterior).__name__ == "DeterministicPosterior"
    kvae.parts.likelihoods.register("bern", kvae.parts.likelihoods.BernoulliLikelihood)  # the modules' shortcut
    assert registry.get("likelihood", "bern") is kvae.parts.likelihoods.BernoulliLikelihood
    with pytest.raises(ConfigError, match="'module.path:attribute'"):
        registry.register("prior", "bad", "not a target")
    with pytest.raises(ConfigError, match="unknown kind of name 'priors'"):
        registry.register("priors", "x", MyPrior)


def test_objective_names_need_no_import_side_effect():
    """objective="hvae" resolves from the table, before its module was ever imported."""
    code = ("import sys\n"
            "from kvae.parts import objectives\n"
            "assert 'kvae.models.hvae.hamiltonian' not in sys.modules\n"
            "print(type(objectives.get('hvae')).__name__)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env=dict(os.environ, KVAE_LAZY_IMPORT="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["HamiltonianBound"]


_NO_TENSORFLOW = r"""
import contextlib, io, json, sys
import kvae_cli
from kvae import registry
from kvae.options import model_options

out = {"names": {kind: registry.names(kind) for kind in registry.KINDS}, "options": {}, "help": {}}
for name in registry.names("model"):
    out["options"][name] = [[o.name, o.default, o.kind, o.help, o.owner] for o in model_options(name)]
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        status = kvae_cli.main(["train", "--model", name, "--help"])
    out["help"][name] = [status, text.getvalue()]
out["loaded"] = sorted(m for m in ("tensorflow", "keras", "tensorflow_probability", "numpy") if m in sys.modules)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def without_tensorflow():
    """Names, options and `kvae train --model NAME --help` of every model, from a process that must not
    load TensorFlow (as the `kvae` command runs: KVAE_LAZY_IMPORT)."""
    env = dict(os.environ, KVAE_LAZY_IMPORT="1")
    result = subprocess.run([sys.executable, "-c", _NO_TENSORFLOW], capture_output=True, text=True, timeout=300,
                            cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_names_and_model_help_load_no_tensorflow(without_tensorflow):
    assert without_tensorflow["loaded"] == []
    assert without_tensorflow["names"] == {kind: sorted(registry.TABLE[kind]) for kind in registry.KINDS}  # built-ins (other tests register more)


def test_options_read_from_source_are_the_constructor_options(without_tensorflow):
    for name in registry.names("model"):
        live = [[o.name, o.default, o.kind, o.help, o.owner] for o in model_options(registry.get("model", name))]
        assert without_tensorflow["options"][name] == json.loads(json.dumps(live)), name


def test_model_help_lists_every_option_of_every_model(without_tensorflow):
    for name in registry.names("model"):
        status, text = without_tensorflow["help"][name]
        assert status == 0 and f"options of --model {name}" in text, name
        for opt in model_options(registry.get("model", name)):
            assert opt.flag in text, (name, opt.flag)


def test_static_value_reads_a_class_constant_without_importing():
    from kvae.nn.pixelcnn import PixelCNNNetwork
    from kvae.options import _SourceReader

    reader = _SourceReader()
    src, cls = reader.find_class("kvae.nn.pixelcnn", "PixelCNNNetwork")
    assert reader.class_constant(src, cls, "CONDITIONINGS") == PixelCNNNetwork.CONDITIONINGS
