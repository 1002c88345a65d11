"""VAE-GAN (Larsen et al. 2016, "Autoencoding beyond pixels using a learned similarity metric"):
a VAE whose reconstruction is measured in the feature space of a discriminator trained to tell data
from reconstructions and from samples (:class:`kvae.parts.objectives.VAEGANObjective` with a
:class:`kvae.parts.regularizers.ImageDiscriminator`).  Three losses, three updates in one ``train_step``:
the encoder follows KL + L_llike, the decoder gamma L_llike + the GAN loss, the discriminator its
own Adam on BCE over data, reconstructions and samples.  The decoder is still a normalised p(x|z)
(Bernoulli by default), so NLL and ELBO are reported, though nothing trains it by likelihood."""
import keras

from kvae.parts.objectives import VAEGANObjective
from kvae.parts.regularizers import ImageDiscriminator
from kvae.core.model import VariationalModel


@keras.saving.register_keras_serializable(package="kvae")
class VAEGAN(VariationalModel):
    """VAE-GAN (Larsen et al. 2016).

    Args:
      gamma: weight of the feature-space reconstruction L_llike in the decoder's loss.
      adversarial_weight: weight of the decoder's GAN loss softplus(-T(x~)) + softplus(-T(x_p)).
      discriminator_hidden: the image discriminator's hidden sizes.
      feature_layer: the hidden layer of the discriminator whose activations are Dis_l (-1: the last).
      discriminator_lr: the discriminator's Adam learning rate.
    """

    fixed_options = ("beta", "objective", "analytic_kl", "free_bits_per_dim", "free_bits_total", "kl_warmup_steps")

    def __init__(self, input_shape, latent_dim=16, gamma=1.0, adversarial_weight=1.0,
                 discriminator_hidden=(256, 256), feature_layer=-1, discriminator_lr=1e-4, regularizers=(),
                 objective=None, **kwargs):
        if not regularizers:
            regularizers = [ImageDiscriminator(float(adversarial_weight), hidden=discriminator_hidden,
                                               lr=discriminator_lr, feature_layer=feature_layer)]
        objective = objective if objective is not None else VAEGANObjective(gamma)
        super().__init__(input_shape, latent_dim=latent_dim, regularizers=regularizers, objective=objective, **kwargs)
        self._init_args.update(dict(gamma=float(gamma), adversarial_weight=float(adversarial_weight),
                                    discriminator_hidden=[int(h) for h in discriminator_hidden],
                                    feature_layer=int(feature_layer), discriminator_lr=float(discriminator_lr)))
