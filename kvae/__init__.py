"""kvae: variational autoencoders as Keras 3 models with TensorFlow Probability distributions.

The package is a tree that draws the model (docs/architecture.md):

* :mod:`kvae.core` — the contract every model shares (:class:`kvae.VariationalModel`);
* :mod:`kvae.parts` — posteriors, priors, likelihoods, networks, objectives, regularisers, schedules,
  densities: what ``posterior=``, ``prior=``, ``decoder=`` ... accept;
* :mod:`kvae.nn` — layers and bijectors that know nothing of VAEs (MADE, PixelCNN, flows, SSIM);
* :mod:`kvae.models` — the zoo; :mod:`kvae.data`, :mod:`kvae.training`, :mod:`kvae.evaluation`,
  :mod:`kvae.export`, :mod:`kvae.pretrained`, :mod:`kvae.cli` — what is done with models;
* :mod:`kvae.registry` — every name (``--model vae``, ``posterior="iaf"``) in one lazy registry;
  :mod:`kvae.options` — a model's options, read from its constructor (both without TensorFlow).

``import kvae`` exposes the subpackages (imported on first use) and the model classes (``kvae.VAE``,
...), and registers the model classes with Keras so that ``keras.models.load_model`` reads kvae
``.keras`` files.  The module paths of kvae 0.1 (``kvae.posteriors``, ``kvae.runs``, ...) still import.
"""
import importlib as _importlib
import importlib.abc as _abc
import importlib.util as _util
import os as _os
import sys as _sys

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.2.0"

#: Subpackages and modules exposed as attributes of ``kvae``.
SUBMODULES = ("core", "parts", "nn", "models", "data", "training", "evaluation", "export", "pretrained", "cli",
              "errors", "registry", "options")
#: Model classes exposed as attributes of ``kvae`` (defined in :mod:`kvae.models`).
MODEL_CLASSES = ("VariationalModel", "VAE", "BetaVAE", "ConditionalVAE", "VLAE", "InfoVAE", "FactorVAE",
                 "BetaTCVAE", "MAE", "RAE", "AE", "IWAE", "MIWAE", "CIWAE", "PIWAE", "WAE",
                 "AnnealedCapacityBetaVAE", "VampVAE", "LinNFVAE", "AdversarialAE", "MSSSIMVAE", "HVAE", "RHVAE",
                 "VQVAE", "VAEGAN", "PoincareVAE", "SVAE", "LadderVAE")

#: Module paths of kvae 0.1 (the flat layout) and where that code lives now (CHANGELOG.md).
#: ``kvae.planar_radial`` goes to :mod:`kvae.parts.posteriors`, which has its posterior and also offers its
#: ``PlanarFlow`` and ``RadialFlow`` (defined in :mod:`kvae.nn.planar_radial`).
MOVED = {
    "kvae.callbacks": "kvae.training.callbacks", "kvae.runs": "kvae.training.runs",
    "kvae.code_prior": "kvae.models.vqvae.code_prior", "kvae.quantize": "kvae.models.vqvae.quantize",
    "kvae.factors": "kvae.data.factors", "kvae.density": "kvae.parts.densities",
    "kvae.disentanglement": "kvae.evaluation.disentanglement", "kvae.plotting": "kvae.evaluation.plotting",
    "kvae.sample_quality": "kvae.evaluation.sample_quality", "kvae.divergences": "kvae.nn.divergences",
    "kvae.flows": "kvae.nn.flows", "kvae.ssim": "kvae.nn.ssim", "kvae.planar_radial": "kvae.parts.posteriors",
    "kvae.layers": "kvae.nn", "kvae.layers.made": "kvae.nn.made", "kvae.layers.pixelcnn": "kvae.nn.pixelcnn",
    "kvae.explorer": "kvae.export.explorer", "kvae.hamiltonian": "kvae.models.hvae.hamiltonian",
    "kvae.riemannian": "kvae.models.rhvae.riemannian", "kvae.poincare": "kvae.models.poincare.geometry",
    "kvae.hyperspherical": "kvae.models.svae.hyperspherical", "kvae.likelihoods": "kvae.parts.likelihoods",
    "kvae.networks": "kvae.parts.networks", "kvae.objectives": "kvae.parts.objectives",
    "kvae.posteriors": "kvae.parts.posteriors", "kvae.priors": "kvae.parts.priors",
    "kvae.regularizers": "kvae.parts.regularizers", "kvae.schedules": "kvae.parts.schedules",
    "kvae.models.base": "kvae.core.model", "kvae.models.options": "kvae.options",
}

__all__ = [*MODEL_CLASSES, *SUBMODULES]


class _MovedModules(_abc.MetaPathFinder, _abc.Loader):
    """``import kvae.posteriors`` (a 0.1 path) gives the module it moved to (the same object)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return _util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = _importlib.import_module(MOVED[spec.name])
        self.spec = module.__spec__  # importlib overwrites it with the alias's; put it back below
        return module

    def exec_module(self, module):
        module.__spec__ = self.spec


if not any(isinstance(f, _MovedModules) for f in _sys.meta_path):
    _sys.meta_path.append(_MovedModules())


def __getattr__(name):
    old = f"{__name__}.{name}"
    if name in SUBMODULES or old in MOVED:
        if name not in ("errors", "registry", "options", "cli"):
            from ._quiet import import_tensorflow

            import_tensorflow()
        module = _importlib.import_module(MOVED.get(old, old))
        globals()[name] = module
        return module
    if name in MODEL_CLASSES:
        value = getattr(__getattr__("models"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kvae' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


# The command line (kvae_cli) sets KVAE_LAZY_IMPORT so that `kvae --help` does not load TensorFlow;
# everywhere else the model classes are registered with Keras at import.
if not _os.environ.get("KVAE_LAZY_IMPORT"):
    __getattr__("models")
