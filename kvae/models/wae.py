"""Wasserstein autoencoder with the MMD penalty (Tolstikhin et al., ICLR 2018): a deterministic
encoder z = E(x) and the loss  -log p(x|z) + lambda MMD^2(q(z), p(z)),  the MMD between the batch's
codes and as many prior draws (the inverse multiquadratic kernel C / (C + ||a - b||^2), C = 2 D s^2,
summed over the bandwidths s; Tolstikhin et al. use the squared error as the cost, kvae the
likelihood's -log p(x|z): Bernoulli for binary data, as pythae's ``bce`` option)."""
import keras
import tensorflow as tf

from kvae.parts.posteriors import DeterministicPosterior
from kvae.parts.regularizers import MMDPenalty
from kvae.core.model import VariationalModel


@keras.saving.register_keras_serializable(package="kvae")
class WAE(VariationalModel):
    """WAE-MMD (Tolstikhin et al. 2018).

    Args:
      latent_dim: dimension of z (8 for MNIST in the paper).
      reg_weight: the MMD weight lambda (10 in the paper for MNIST).
      kernel: ``"imq"`` (the paper's) or ``"rbf"``.
      bandwidths: the kernel's bandwidths s (C = 2 D s^2), summed.
    """

    fixed_options = ("beta", "posterior", "analytic_kl", "free_bits_per_dim", "free_bits_total", "kl_warmup_steps",
                     "objective")

    def __init__(self, input_shape, latent_dim=8, reg_weight=10.0, kernel="imq", bandwidths=(1.0,), regularizers=(),
                 **kwargs):
        if not regularizers:
            regularizers = [MMDPenalty(float(reg_weight), kernel=kernel, bandwidths=bandwidths, name="mmd")]
        kwargs.setdefault("posterior", DeterministicPosterior(latent_dim, name="posterior"))
        kwargs["beta"] = 0.0
        super().__init__(input_shape, latent_dim=latent_dim, regularizers=regularizers, **kwargs)
        self._init_args.update(dict(reg_weight=float(reg_weight), kernel=kernel,
                                    bandwidths=[float(b) for b in bandwidths]))

    def kl_divergence(self, q, z=None, prior=None):
        """No KL: the encoder is deterministic (the MMD matches q(z) to the prior)."""
        return tf.zeros(tf.shape(q.distribution.loc)[:-1])
