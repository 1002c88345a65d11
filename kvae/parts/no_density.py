"""``density="none"``: no ex-post density, for models whose learned prior is the sampler."""
import keras

from kvae.errors import ConfigError
from kvae.parts.contracts import Density


@keras.saving.register_keras_serializable(package="kvae")
class NoDensity(Density):
    """No ex-post density (``density="none"``): for models whose learned prior is the sampler (the
    ladder VAE, whose D codes would make a full-covariance mixture hold D^2 numbers per component)."""

    kind = "none"

    def __init__(self, latent_dim, num_components=0, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)

    def build(self, input_shape=None):
        self.built = True

    @property
    def is_fitted(self):
        return False

    def fit(self, codes, seed=0):
        raise ConfigError("this model has no ex-post density (density='none'): sample from its prior, or "
                          "build it with another density")

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}
