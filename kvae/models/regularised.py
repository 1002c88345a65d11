r"""The regularised family: InfoVAE, FactorVAE, MAE and RAE (plus the plain autoencoder).

Each is the base model with a choice of KL weight and :mod:`kvae.parts.regularizers`; the same
regularisers compose with any other model through ``regularizers=[...]``.
"""
import keras
import tensorflow as tf

from kvae.parts import networks
from kvae.errors import ConfigError
from kvae.parts.posteriors import DeterministicPosterior
from kvae.parts.regularizers import AdversarialDivergence, DecoderGradientPenalty, DecoderL2, LatentL2, MinibatchTotalCorrelation, MMDPenalty, MutualPosteriorDivergence, TotalCorrelation
from kvae.core.model import VariationalModel


@keras.saving.register_keras_serializable(package="kvae")
class InfoVAE(VariationalModel):
    r"""InfoVAE (Zhao, Song & Ermon): maximise
    E_q[log p(x|z)] - (1 - alpha) KL(q(z|x) || p(z)) - (alpha + lambda - 1) D(q(z) || p(z)),
    with D = MMD (``divergence="mmd"``, kernel "rbf"/"imq") or an adversarial divergence
    (``"adversarial"``).  alpha = 1 with MMD is the MMD-VAE.

    Args:
      alpha: InfoVAE's alpha; the KL weight is 1 - alpha (1: the MMD-VAE, no KL term).
      lambda_: InfoVAE's lambda; the divergence weight is alpha + lambda - 1.
      divergence: D(q(z) || p(z)): ``"mmd"`` or ``"adversarial"``.
      kernel: MMD kernel: ``"infovae"`` (the authors' exp(-mean_d (a_d - b_d)^2 / D)), ``"rbf"`` or ``"imq"``.
      bandwidths: kernel bandwidths (the MMD sums the kernels over them).
      beta: KL weight; None means 1 - alpha.
    """

    def __init__(self, input_shape, alpha=1.0, lambda_=1000.0, divergence="mmd", kernel="infovae",
                 bandwidths=(1.0,), beta=None, regularizers=(), **kwargs):
        weight = float(alpha) + float(lambda_) - 1.0
        if not regularizers:
            if divergence == "mmd":
                regularizers = [MMDPenalty(weight, kernel=kernel, bandwidths=bandwidths)]
            elif divergence == "adversarial":
                regularizers = [AdversarialDivergence(weight)]
            else:
                raise ConfigError(f"divergence must be 'mmd' or 'adversarial', got {divergence!r}")
        beta = 1.0 - float(alpha) if beta is None else beta
        super().__init__(input_shape, regularizers=regularizers, beta=beta, **kwargs)
        self._init_args.update(dict(alpha=float(alpha), lambda_=float(lambda_), divergence=divergence,
                                    kernel=kernel, bandwidths=[float(b) for b in bandwidths]))


@keras.saving.register_keras_serializable(package="kvae")
class FactorVAE(VariationalModel):
    """FactorVAE (Kim & Mnih 2018, Algorithm 1): VAE loss + gamma * TC(z), the total correlation
    estimated by a discriminator (own Adam optimizer, stepped in the same train_step) between the
    codes of half the batch and permuted codes of the other half (an independent batch).  The paper
    trains the VAE with Adam(1e-4, 0.9, 0.999): ``compile(optimizer=keras.optimizers.Adam(1e-4))``,
    or ``kvae train --model factorvae --lr 1e-4``.

    Args:
      gamma: weight of the total-correlation term.
      discriminator_hidden: hidden sizes of the TC discriminator (the paper: 6 x 1000, LeakyReLU 0.2).
      discriminator_lr: Adam learning rate of the discriminator (the paper: 1e-4).
      discriminator_beta_1: Adam beta_1 of the discriminator (the paper: 0.5).
      discriminator_beta_2: Adam beta_2 of the discriminator (the paper: 0.9).
    """

    def __init__(self, input_shape, gamma=6.0, discriminator_hidden=(1000,) * 6, discriminator_lr=1e-4,
                 discriminator_beta_1=0.5, discriminator_beta_2=0.9, regularizers=(), **kwargs):
        if not regularizers:
            regularizers = [TotalCorrelation(gamma, hidden=discriminator_hidden, lr=discriminator_lr,
                                             beta_1=discriminator_beta_1, beta_2=discriminator_beta_2)]
        super().__init__(input_shape, regularizers=regularizers, **kwargs)
        self._init_args.update(dict(gamma=float(gamma), discriminator_hidden=[int(h) for h in discriminator_hidden],
                                    discriminator_lr=float(discriminator_lr),
                                    discriminator_beta_1=float(discriminator_beta_1),
                                    discriminator_beta_2=float(discriminator_beta_2)))


@keras.saving.register_keras_serializable(package="kvae")
class BetaTCVAE(VariationalModel):
    """beta-TCVAE (Chen et al. 2018): VAE loss + (beta - 1) * TC(z) with the minibatch-weighted-sampling
    estimator (no discriminator); ``dataset_size`` is the N of the estimator.

    Args:
      beta_tc: beta of the total-correlation term (its weight is beta_tc - 1).
      dataset_size: N of the estimator, the training-set size (the command line sets it from the data).
    """

    def __init__(self, input_shape, beta_tc=6.0, dataset_size=50000, regularizers=(), **kwargs):
        if not regularizers:
            regularizers = [MinibatchTotalCorrelation(float(beta_tc) - 1.0, dataset_size=dataset_size)]
        super().__init__(input_shape, regularizers=regularizers, **kwargs)
        self._init_args.update(dict(beta_tc=float(beta_tc), dataset_size=int(dataset_size)))


@keras.saving.register_keras_serializable(package="kvae")
class MAE(VariationalModel):
    """VAE + MAE's mutual posterior-divergence regularisation (Ma, Zhou & Hovy 2019) and free bits.

    Args:
      eta: weight of the diversity term (mean pairwise divergence between posteriors).
      gamma: weight of the smoothness term (spread of the pairwise divergences).
      free_bits_total: floor in nats on the batch-mean total KL, max(lambda, E_batch KL): the form of
        the authors' code (``KL.mean().clamp(min=free_bits)``); per-dimension free bits are
        ``free_bits_per_dim``.
    """

    def __init__(self, input_shape, eta=1.0, gamma=0.5, free_bits_total=0.0, regularizers=(), **kwargs):
        if not regularizers:
            regularizers = [MutualPosteriorDivergence(eta, gamma)]
        super().__init__(input_shape, regularizers=regularizers, free_bits_total=free_bits_total, **kwargs)
        self._init_args.update(dict(eta=float(eta), gamma=float(gamma)))


@keras.saving.register_keras_serializable(package="kvae")
class RAE(VariationalModel):
    r"""Regularised autoencoder (Ghosh et al., ICLR 2020): deterministic encoder z = E(x),
    loss = -log p(x|z) + latent_weight * 1/2 ||z||^2 + reg_weight * L_REG with L_REG one of
    ``"l2"`` (decoder weights), ``"gp"`` (||dD(z)/dz||_F^2), ``"sn"`` (spectral normalisation of the
    decoder's layers, no loss term) or None (``latent_weight=0, regularization=None`` is the plain
    autoencoder).  Sample through the ex-post Gaussian mixture: ``fit_density`` then
    ``sample(n, source="density")``.

    Args:
      latent_dim: dimension of z.
      regularization: decoder regulariser: ``"l2"``, ``"gp"``, ``"sn"`` or ``"none"``.
      latent_weight: weight of 1/2 ||z||^2.
      reg_weight: weight of the decoder regulariser (``l2`` and ``gp``).
    """

    fixed_options = ("beta", "posterior", "analytic_kl", "free_bits_per_dim", "free_bits_total", "kl_warmup_steps")

    def __init__(self, input_shape, latent_dim=16, regularization="l2", latent_weight=1e-4, reg_weight=1e-6,
                 network="mlp", hidden=(500, 500), num_classes=None, decoder_network=None, regularizers=(),
                 **kwargs):
        if regularization not in ("l2", "gp", "sn", None, "none"):
            raise ConfigError(f"regularization must be l2, gp, sn or none, got {regularization!r}")
        regularization = None if regularization == "none" else regularization
        if not regularizers:
            regularizers = []
            if latent_weight:
                regularizers.append(LatentL2(latent_weight))
            if regularization == "l2":
                regularizers.append(DecoderL2(reg_weight))
            elif regularization == "gp":
                regularizers.append(DecoderGradientPenalty(reg_weight))
        if regularization == "sn" and decoder_network is None:
            k = 0 if num_classes is None else int(num_classes)
            _, plain = networks.build(network, tuple(input_shape), int(latent_dim) + k, hidden)
            weighted = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv2DTranspose)
            if isinstance(plain, keras.Sequential):
                decoder_network = keras.Sequential(
                    [keras.Input((int(latent_dim) + k,))]
                    + [keras.layers.SpectralNormalization(layer) if isinstance(layer, weighted)
                       else layer for layer in plain.layers], name="decoder_network")
            else:  # a functional network (the ResNet): the same graph with each weighted layer normalised
                decoder_network = keras.models.clone_model(
                    plain, clone_function=lambda layer: keras.layers.SpectralNormalization(
                        layer.__class__.from_config(layer.get_config()), name=layer.name + "_sn")
                    if isinstance(layer, weighted) else layer.__class__.from_config(layer.get_config()))
        if regularization == "sn":  # every decoder layer is normalised, the likelihood head's Dense included
            from kvae import registry

            decoder = kwargs.get("decoder", "bernoulli")
            if decoder in ("bernoulli", "gaussian"):
                kwargs["decoder"] = registry.get("likelihood", decoder)(tuple(input_shape), spectral_norm=True,
                                                                        name="likelihood")
            elif not getattr(decoder, "spectral_norm", False):  # a reloaded model passes its normalised head
                raise ConfigError("regularization='sn' needs decoder='bernoulli' or 'gaussian' (or a likelihood "
                                  "head built with spectral_norm=True)")
        kwargs.setdefault("posterior", DeterministicPosterior(latent_dim, name="posterior"))
        kwargs["beta"] = 0.0
        super().__init__(input_shape, latent_dim=latent_dim, network=network, hidden=hidden,
                         num_classes=num_classes, decoder_network=decoder_network, regularizers=regularizers,
                         **kwargs)
        self._init_args.update(dict(regularization=regularization, latent_weight=float(latent_weight),
                                    reg_weight=float(reg_weight)))

    def kl_divergence(self, q, z=None, prior=None):
        """No KL: the encoder is deterministic (its code is penalised by the regularisers)."""
        return tf.zeros(tf.shape(q.distribution.loc)[:-1])


@keras.saving.register_keras_serializable(package="kvae")
class AE(RAE):
    """Plain deterministic autoencoder: the unregularised baseline of the RAE paper."""

    fixed_options = ("regularization", "latent_weight", "reg_weight")

    def __init__(self, input_shape, **kwargs):
        kwargs.update(regularization=None, latent_weight=0.0)
        super().__init__(input_shape, **kwargs)
