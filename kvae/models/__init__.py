"""kvae models: the base contract and the models built on it."""
from .base import VariationalModel
from .registry import MODELS, get, register_model
from .vae import VAE, BetaVAE, ConditionalVAE
from .vlae import VLAE

__all__ = ["VariationalModel", "VAE", "BetaVAE", "ConditionalVAE", "VLAE", "MODELS", "get", "register_model"]
