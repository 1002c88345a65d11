"""VQ-VAE (van den Oord et al. 2017): vector quantisation and a PixelCNN prior over codes."""
from kvae.models.vqvae.model import VQVAE  # noqa: F401
