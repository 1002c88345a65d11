"""S-VAE (Davidson et al. 2018): von Mises-Fisher posteriors on the hypersphere."""
from kvae.models.svae.model import SVAE  # noqa: F401
