"""kvae models: the base contract and the models built on it.

Their names (``--model vae``) are declared in :data:`kvae.registry.TABLE`; :func:`get` looks one up.
"""
from kvae.core.model import VariationalModel
from kvae.models.vae import VAE, BetaVAE, ConditionalVAE
from kvae.models.vlae import VLAE
from kvae.models.regularised import AE, MAE, RAE, BetaTCVAE, FactorVAE, InfoVAE
from kvae.models.iwae import CIWAE, IWAE, MIWAE, PIWAE
from kvae.models.wae import WAE
from kvae.models.annealed_capacity import AnnealedCapacityBetaVAE
from kvae.models.vamp import VampVAE
from kvae.models.linnf import LinNFVAE
from kvae.models.aae import AdversarialAE
from kvae.models.msssim import MSSSIMVAE
from kvae.models.hvae.model import HVAE
from kvae.models.rhvae.model import RHVAE
from kvae.models.vqvae.model import VQVAE
from kvae.models.vaegan import VAEGAN
from kvae.models.poincare.model import PoincareVAE
from kvae.models.svae.model import SVAE
from kvae.models.lvae.model import LadderVAE

__all__ = ["VariationalModel", "VAE", "BetaVAE", "ConditionalVAE", "VLAE", "InfoVAE", "FactorVAE", "BetaTCVAE", "MAE", "RAE", "AE", "IWAE", "MIWAE", "CIWAE", "PIWAE", "WAE", "AnnealedCapacityBetaVAE", "VampVAE", "LinNFVAE", "AdversarialAE", "MSSSIMVAE", "HVAE", "RHVAE", "VQVAE", "VAEGAN", "PoincareVAE", "SVAE", "LadderVAE", "get"]


def get(name):
    """The model class registered as ``name`` (``kvae train --model NAME``): ``kvae.registry.get("model", name)``."""
    from kvae import registry

    return registry.get("model", name)


def __getattr__(name):  # submodules as attributes (kvae.models.<module>), imported on first use
    from kvae._lazy import submodule

    return submodule(__name__, name)
