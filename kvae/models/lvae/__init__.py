"""Ladder VAE (Sønderby et al. 2016) with a top-down ResNet path over spatial latent groups."""
from kvae.models.lvae.model import LadderVAE  # noqa: F401


def __getattr__(name):  # submodules as attributes, imported on first use
    from kvae._lazy import submodule

    return submodule(__name__, name)
