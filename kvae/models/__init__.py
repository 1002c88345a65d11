"""kvae models: the base contract and the models built on it."""
from .base import VariationalModel
from .registry import MODELS, get, register_model
from .vae import VAE, BetaVAE, ConditionalVAE
from .vlae import VLAE
from .regularised import AE, MAE, RAE, BetaTCVAE, FactorVAE, InfoVAE
from .iwae import CIWAE, IWAE, MIWAE, PIWAE
from .wae import WAE
from .annealed_capacity import AnnealedCapacityBetaVAE
from .vamp import VampVAE
from .linnf import LinNFVAE
from .aae import AdversarialAE
from .msssim import MSSSIMVAE
from .hvae import HVAE
from .rhvae import RHVAE
from .vqvae import VQVAE
from .vaegan import VAEGAN
from .poincare import PoincareVAE
from .svae import SVAE

__all__ = ["VariationalModel", "VAE", "BetaVAE", "ConditionalVAE", "VLAE", "InfoVAE", "FactorVAE", "BetaTCVAE", "MAE", "RAE", "AE", "IWAE", "MIWAE", "CIWAE", "PIWAE", "WAE", "AnnealedCapacityBetaVAE", "VampVAE", "LinNFVAE", "AdversarialAE", "MSSSIMVAE", "HVAE", "RHVAE", "VQVAE", "VAEGAN", "PoincareVAE", "SVAE", "MODELS", "get", "register_model"]
