"""Hyperspherical VAE (Davidson et al. 2018): z on the unit sphere S^{m-1}, a von Mises-Fisher
posterior, the uniform prior and the closed-form KL between them (:mod:`kvae.models.svae.hyperspherical`)."""
import keras

from kvae.models.svae.hyperspherical import SphericalUniformPrior, VonMisesFisherPosterior
from kvae.core.model import VariationalModel


@keras.saving.register_keras_serializable(package="kvae")
class SVAE(VariationalModel):
    """S-VAE (Davidson et al. 2018).

    Args:
      latent_dim: m, the sphere S^{m-1} lives in R^m (m >= 3; the paper's MNIST runs use 5 to 40).
    """

    fixed_options = ("posterior", "prior")

    def __init__(self, input_shape, latent_dim=10, **kwargs):
        kwargs.setdefault("posterior", VonMisesFisherPosterior(latent_dim, name="posterior"))
        kwargs.setdefault("prior", SphericalUniformPrior(latent_dim, name="prior"))
        super().__init__(input_shape, latent_dim=latent_dim, **kwargs)
