"""kvae: variational autoencoders as Keras 3 models with TensorFlow Probability distributions."""
import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from . import density, divergences, errors, flows, layers, likelihoods, networks, posteriors, priors, regularizers, schedules  # noqa: E402,E501
from .models import AE, MAE, RAE, VAE, VLAE, BetaTCVAE, BetaVAE, ConditionalVAE, FactorVAE, InfoVAE, VariationalModel  # noqa: E402,E501

__version__ = "0.1.0"
__all__ = ["VAE", "VLAE", "InfoVAE", "FactorVAE", "BetaTCVAE", "MAE", "RAE", "AE", "BetaVAE", "ConditionalVAE", "VariationalModel", "errors", "likelihoods", "networks",
           "posteriors", "priors", "regularizers", "schedules"]
