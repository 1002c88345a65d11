"""Adversarial autoencoder (Makhzani et al. 2016): a deterministic encoder z = E(x) whose aggregate
code distribution q(z) is matched to the prior by a discriminator on z (prior draws labelled 1, codes
labelled 0, its own Adam optimizer stepped in the same ``train_step`` after the autoencoder's update).
Loss of the autoencoder:  -log p(x|z) + weight * -log D(z)  (the non-saturating generator loss,
:class:`kvae.parts.regularizers.AdversarialDivergence`).  Makhzani et al. alternate a reconstruction and a
regularisation phase per batch; kvae takes both gradients in one update of the autoencoder."""
import keras
import tensorflow as tf

from kvae.parts.posteriors import DeterministicPosterior
from kvae.parts.regularizers import AdversarialDivergence
from kvae.core.model import VariationalModel


@keras.saving.register_keras_serializable(package="kvae")
class AdversarialAE(VariationalModel):
    """Adversarial autoencoder (Makhzani et al. 2016).

    Args:
      latent_dim: dimension of z (8 for MNIST in the paper).
      adversarial_weight: weight of the generator loss -log D(z).
      discriminator_hidden: the discriminator's hidden sizes (the paper: two layers of 1000).
      discriminator_lr: the discriminator's Adam learning rate.
    """

    fixed_options = ("beta", "posterior", "analytic_kl", "free_bits_per_dim", "free_bits_total", "kl_warmup_steps",
                     "objective")

    def __init__(self, input_shape, latent_dim=8, adversarial_weight=1.0, discriminator_hidden=(1000, 1000),
                 discriminator_lr=1e-4, regularizers=(), **kwargs):
        if not regularizers:
            regularizers = [AdversarialDivergence(float(adversarial_weight), hidden=discriminator_hidden,
                                                  lr=discriminator_lr)]
        kwargs.setdefault("posterior", DeterministicPosterior(latent_dim, name="posterior"))
        kwargs["beta"] = 0.0
        super().__init__(input_shape, latent_dim=latent_dim, regularizers=regularizers, **kwargs)
        self._init_args.update(dict(adversarial_weight=float(adversarial_weight),
                                    discriminator_hidden=[int(h) for h in discriminator_hidden],
                                    discriminator_lr=float(discriminator_lr)))

    def kl_divergence(self, q, z=None, prior=None):
        """No KL: the encoder is deterministic (the discriminator matches q(z) to the prior)."""
        return tf.zeros(tf.shape(q.distribution.loc)[:-1])
