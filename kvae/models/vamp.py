"""The VAE with a VampPrior (Tomczak & Welling 2018): p(z) = (1/K) sum_k q(z|u_k) with learned
pseudo-inputs u_k (:class:`kvae.parts.priors.VampPrior`; any unconditional model takes the same prior)."""
import keras

from kvae.parts.priors import VampPrior
from kvae.core.model import VariationalModel


@keras.saving.register_keras_serializable(package="kvae")
class VampVAE(VariationalModel):
    """VAE with a VampPrior.

    Args:
      latent_dim: dimension of z (40 in the paper's MNIST experiments).
      num_components: number of pseudo-inputs K (500 in the paper).
    """

    fixed_options = ("prior",)

    def __init__(self, input_shape, latent_dim=40, num_components=500, prior=None, **kwargs):
        prior = prior if prior is not None else VampPrior(latent_dim, num_components=num_components, name="prior")
        super().__init__(input_shape, latent_dim=latent_dim, prior=prior, **kwargs)
        self._init_args["num_components"] = int(num_components)
