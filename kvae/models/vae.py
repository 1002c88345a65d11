"""VAE (Kingma & Welling 2013), beta-VAE (Higgins et al. 2017) and conditional VAE (Sohn et al. 2015).

All three are the base :class:`~kvae.core.model.VariationalModel` with a Gaussian posterior,
a standard-normal prior and a Bernoulli or Gaussian decoder; they differ only in defaults.
"""
import keras

from kvae.errors import ConfigError
from kvae.core.model import VariationalModel


@keras.saving.register_keras_serializable(package="kvae")
class VAE(VariationalModel):
    """Variational autoencoder: loss = -E_q[log p(x|z)] + KL(q(z|x) || N(0, I))."""


@keras.saving.register_keras_serializable(package="kvae")
class BetaVAE(VariationalModel):
    """beta-VAE: loss = -E_q[log p(x|z)] + beta * KL, beta > 1 for disentangling (Higgins et al.).

    ``beta`` is a number or a schedule of the optimizer step, e.g.
    ``kvae.parts.schedules.LinearWarmup(target=4.0, warmup_steps=5000)`` for a KL warm-up.

    Args:
      latent_dim: dimension of z (10, as in Higgins et al.'s dSprites experiments).
      beta: KL weight (4 by default; beta > 1 trades reconstruction for disentangling).
    """

    def __init__(self, input_shape, latent_dim=10, beta=4.0, **kwargs):
        super().__init__(input_shape, latent_dim=latent_dim, beta=beta, **kwargs)


@keras.saving.register_keras_serializable(package="kvae")
class ConditionalVAE(VariationalModel):
    """Conditional VAE: q(z|x, y), p(x|z, y), p(z) = N(0, I); ``fit`` takes ``(x, y)`` data and
    ``sample(n, labels=...)`` draws examples of chosen classes.

    Args:
      num_classes: number of classes of the label (from the data set on the command line).
    """

    def __init__(self, input_shape, num_classes=10, **kwargs):
        if num_classes is None or int(num_classes) < 2:
            raise ConfigError(f"ConditionalVAE needs num_classes >= 2, got {num_classes}")
        super().__init__(input_shape, num_classes=num_classes, **kwargs)
