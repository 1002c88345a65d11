r"""Training objectives that replace the one-sample ELBO term -log p(x|z) + beta KL.

Contract: an objective is a Keras layer (no weights) whose ``per_example_loss(model, terms)``
returns the negative bound per example ([B]); an objective with ``splits_gradients = True`` also
has ``encoder_loss(model, terms)``, a second per-example loss whose gradient replaces the first
one's for the inference network (encoder network and posterior head), as in PIWAE.  Any model takes one as ``objective=`` (regularisers are
still added); the importance weights of k reparameterised samples are computed in one batched pass

    log w_s = log p(x | z_s) + log p(z_s) - log q(z_s | x),   z_s = reparameterize(q, eps_s),

with eps [S, B, D] from :meth:`~kvae.core.model.VariationalModel.standard_noise` (the same
noise for an example on 1 or N replicas).

* :class:`IWAEBound` (Burda et al. 2016): -(logsumexp_s log w_s - log K), K samples.
* :class:`MIWAEBound` (Rainforth et al. 2018): M independent IWAE_K bounds averaged, M K samples.
* :class:`CIWAEBound` (Rainforth et al. 2018): beta ELBO + (1 - beta) IWAE_K on the same K samples,
  the ELBO being the mean of the K log-weights.
* :class:`PIWAEBound` (Rainforth et al. 2018): the generative network (decoder, likelihood, prior) is
  trained on IWAE_{MK}, the inference network on MIWAE_{M,K}, from the same M K samples.
* :class:`VAEGANObjective` (Larsen et al. 2016): reconstruction in a discriminator's feature space,
  the encoder on KL + that, the decoder on gamma times that plus the GAN loss.
"""
import keras
import tensorflow as tf

from kvae.errors import ConfigError


def iwae_bound(log_w, num_groups=1):
    """Mean over M groups of logsumexp_k(log w) - log K, for log-weights [M K, B] -> [B]."""
    s = tf.shape(log_w)[0]
    grouped = tf.reshape(log_w, tf.concat([[num_groups, s // num_groups], tf.shape(log_w)[1:]], 0))
    k = tf.cast(tf.shape(grouped)[1], log_w.dtype)
    return tf.reduce_mean(tf.reduce_logsumexp(grouped, axis=1) - tf.math.log(k), axis=0)


class Objective(keras.layers.Layer):
    """Base class: ``num_samples`` K per group, ``num_groups`` M."""

    #: whether :meth:`encoder_loss` gives the inference network a loss of its own (PIWAE)
    splits_gradients = False

    def __init__(self, num_samples=5, num_groups=1, **kwargs):
        super().__init__(**kwargs)
        if int(num_samples) < 1 or int(num_groups) < 1:
            raise ConfigError(f"{type(self).__name__} needs num_samples >= 1 and num_groups >= 1, "
                              f"got {num_samples} and {num_groups}")
        self.num_samples, self.num_groups = int(num_samples), int(num_groups)

    def build(self, input_shape=None):
        self.built = True

    def check(self, model):
        if not model.has_density:
            raise ConfigError(f"{type(self).__name__} needs a posterior with a density (importance weights); "
                              f"{type(model.posterior).__name__} has none")
        if not model.has_likelihood:
            raise ConfigError(f"{type(self).__name__} needs a normalised p(x|z) (importance weights); "
                              f"{type(model.likelihood).__name__} is a reconstruction score")

    def log_weights(self, model, terms):
        """log w [M K, B] for the batch in ``terms`` (its posteriors, x, y, seed and training flag)."""
        s = self.num_samples * self.num_groups
        seed = terms["seed"]
        if seed is not None:
            seed = tf.cast(tf.random.experimental.stateless_fold_in(seed, 2711), tf.int32)
        batch = tf.shape(terms["x"])[0]
        if seed is None:
            eps = tf.random.normal([s, batch, model.latent_dim])
        else:
            eps = model.standard_noise(batch, seed, samples=s)
        return model.log_weights_from_noise(terms["x"], terms["y"], eps=eps, training=terms["training"],
                                            groups=terms["groups"])

    def encoder_loss(self, model, terms):
        """The inference network's per-example loss when :attr:`splits_gradients`, else None."""
        return None

    def get_config(self):
        return {**super().get_config(), "num_samples": self.num_samples, "num_groups": self.num_groups}


@keras.saving.register_keras_serializable(package="kvae")
class IWAEBound(Objective):
    """Importance-weighted bound with K samples (Burda et al. 2016)."""

    def __init__(self, num_samples=5, name="iwae", **kwargs):
        kwargs.pop("num_groups", None)
        super().__init__(num_samples=num_samples, num_groups=1, name=name, **kwargs)

    def per_example_loss(self, model, terms):
        return -iwae_bound(self.log_weights(model, terms))


@keras.saving.register_keras_serializable(package="kvae")
class MIWAEBound(Objective):
    """M IWAE_K bounds averaged (Rainforth et al. 2018)."""

    def __init__(self, num_samples=8, num_groups=8, name="miwae", **kwargs):
        super().__init__(num_samples=num_samples, num_groups=num_groups, name=name, **kwargs)

    def per_example_loss(self, model, terms):
        return -iwae_bound(self.log_weights(model, terms), self.num_groups)


@keras.saving.register_keras_serializable(package="kvae")
class CIWAEBound(Objective):
    """beta * ELBO + (1 - beta) * IWAE_K on the same K samples (Rainforth et al. 2018)."""

    def __init__(self, num_samples=5, elbo_weight=0.5, name="ciwae", **kwargs):
        kwargs.pop("num_groups", None)
        super().__init__(num_samples=num_samples, num_groups=1, name=name, **kwargs)
        if not 0.0 <= float(elbo_weight) <= 1.0:
            raise ConfigError(f"CIWAE's elbo_weight must be in [0, 1], got {elbo_weight}")
        self.elbo_weight = float(elbo_weight)

    def per_example_loss(self, model, terms):
        log_w = self.log_weights(model, terms)
        elbo = tf.reduce_mean(log_w, axis=0)
        return -(self.elbo_weight * elbo + (1.0 - self.elbo_weight) * iwae_bound(log_w))

    def get_config(self):
        return {**super().get_config(), "elbo_weight": self.elbo_weight}


@keras.saving.register_keras_serializable(package="kvae")
class PIWAEBound(Objective):
    """Generative network on IWAE_{MK}, inference network on MIWAE_{M,K} (Rainforth et al. 2018).
    Both bounds come from the same log-weights, computed once in :meth:`per_example_loss`."""

    splits_gradients = True

    def __init__(self, num_samples=8, num_groups=8, name="piwae", **kwargs):
        super().__init__(num_samples=num_samples, num_groups=num_groups, name=name, **kwargs)

    def per_example_loss(self, model, terms):
        log_w = self.log_weights(model, terms)
        terms.encoder_loss = -iwae_bound(log_w, self.num_groups)
        return -iwae_bound(log_w)

    def encoder_loss(self, model, terms):
        return terms.encoder_loss


@keras.saving.register_keras_serializable(package="kvae")
class VAEGANObjective(Objective):
    r"""VAE-GAN (Larsen et al. 2016): reconstruction measured in a discriminator's feature space,
    L_llike = 1/2 ||Dis_l(x) - Dis_l(x~)||^2 (-log N(Dis_l(x); Dis_l(x~), I) up to a constant),
    x~ = E[x|z] for z ~ q(z|x).  As the paper's three updates:

    * encoder and posterior: KL(q(z|x) || p(z)) + L_llike   (:meth:`encoder_loss`);
    * decoder: gamma * L_llike + the discriminator's GAN penalty (a regulariser, added by the model);
    * discriminator: its own optimizer (:class:`kvae.parts.regularizers.ImageDiscriminator`).

    The model needs an :class:`~kvae.parts.regularizers.ImageDiscriminator` among its regularisers
    (:class:`kvae.VAEGAN` adds one)."""

    splits_gradients = True

    def __init__(self, gamma=1.0, name="vae_gan", **kwargs):
        kwargs.pop("num_samples", None)
        kwargs.pop("num_groups", None)
        super().__init__(num_samples=1, num_groups=1, name=name, **kwargs)
        self.gamma = float(gamma)

    def check(self, model):
        from kvae.parts.regularizers import ImageDiscriminator

        if not any(isinstance(r, ImageDiscriminator) for r in model.regularizer_layers):
            raise ConfigError("the VAE-GAN objective needs an ImageDiscriminator regulariser (kvae.VAEGAN adds one)")

    @staticmethod
    def discriminator(model):
        from kvae.parts.regularizers import ImageDiscriminator

        return next(r for r in model.regularizer_layers if isinstance(r, ImageDiscriminator))

    def feature_loss(self, model, terms):
        """L_llike per example [B]."""
        dis = self.discriminator(model)
        diff = dis.features(terms["x"]) - dis.features(terms["px"].mean())
        return 0.5 * tf.reduce_sum(diff ** 2, axis=-1)

    def per_example_loss(self, model, terms):
        feature = self.feature_loss(model, terms)
        terms.encoder_loss = terms["kl"] + feature
        return self.gamma * feature

    def encoder_loss(self, model, terms):
        return terms.encoder_loss

    def get_config(self):
        config = super().get_config()
        config.pop("num_samples", None)
        config.pop("num_groups", None)
        return {**config, "gamma": self.gamma}


def get(identifier):
    """None for "elbo"/None, else an objective from a name (:func:`kvae.registry.names` ``("objective")``),
    a config dict or a layer."""
    if identifier is None or identifier == "elbo":
        return None
    if isinstance(identifier, Objective):
        return identifier
    if isinstance(identifier, str):
        from kvae import registry

        try:
            factory = registry.get("objective", identifier)
        except ConfigError:
            raise ConfigError(f"unknown objective {identifier!r}; choose elbo, "
                              f"{', '.join(registry.names('objective'))} or pass an objective layer") from None
        return factory()
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    raise ConfigError(f"objective must be a name or an Objective layer, got {type(identifier).__name__}")


__all__ = ["Objective", "IWAEBound", "MIWAEBound", "CIWAEBound", "PIWAEBound", "VAEGANObjective", "iwae_bound", "get"]
