"""kvae: variational autoencoders as Keras 3 models with TensorFlow Probability distributions.

``import kvae`` exposes every submodule (``kvae.data``, ``kvae.evaluation``, ``kvae.callbacks``,
...; imported on first use) and the model classes (``kvae.VAE``, ...), and registers the model
classes with Keras so that ``keras.models.load_model`` reads kvae ``.keras`` files.
"""
import importlib as _importlib
import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

#: Submodules exposed as attributes of ``kvae``.
SUBMODULES = ("callbacks", "data", "density", "disentanglement", "divergences", "errors", "evaluation", "export",
              "factors", "flows", "layers", "likelihoods", "models", "networks", "objectives", "planar_radial", "plotting", "posteriors", "pretrained",
              "priors", "regularizers", "runs", "sample_quality", "schedules", "ssim", "explorer", "hamiltonian",
              "quantize", "code_prior", "poincare", "hyperspherical", "riemannian")
#: Model classes exposed as attributes of ``kvae`` (defined in :mod:`kvae.models`).
MODEL_CLASSES = ("VariationalModel", "VAE", "BetaVAE", "ConditionalVAE", "VLAE", "InfoVAE", "FactorVAE",
                 "BetaTCVAE", "MAE", "RAE", "AE", "IWAE", "MIWAE", "CIWAE", "PIWAE", "WAE",
                 "AnnealedCapacityBetaVAE", "VampVAE", "LinNFVAE", "AdversarialAE", "MSSSIMVAE", "HVAE", "RHVAE", "VQVAE", "VAEGAN", "PoincareVAE", "SVAE")

__all__ = [*MODEL_CLASSES, *SUBMODULES]


def __getattr__(name):
    if name in SUBMODULES:
        from ._quiet import import_tensorflow

        import_tensorflow()
        module = _importlib.import_module(f".{name}", __name__)
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
