r"""Regularisers: terms added to any model's training loss.

Contract: a :class:`Regularizer` is a Keras layer (so its weights train and save with the
model); ``reg.penalty(terms)`` receives the dict of
:meth:`kvae.models.VariationalModel.compute_terms` (``x``, ``q``, ``z``, ``px``, ``kl``, ...) and
returns the penalty per example (shape [B]) or a scalar, in nats, already multiplied by its
weight.  Its mean is logged as a metric under the layer's name.  Two hooks let regularisers
with state of their own join in: ``build_for(model)`` creates weights once the model's parts
exist, and ``after_step(model, terms)`` runs after the model's optimizer step inside the same
``train_step`` (for example to step a discriminator with its own optimizer).
"""
import keras
import tensorflow as tf

from kvae.errors import ConfigError


class Regularizer(keras.layers.Layer):
    """Base class; subclasses implement ``penalty(terms)``."""

    def __init__(self, weight=1.0, **kwargs):
        super().__init__(**kwargs)
        self.weight = float(weight)

    def build_for(self, model):
        """Create weights that depend on the model (latent size, data shape). Default: none."""
        self.built = True

    def after_step(self, model, terms):
        """Called in ``train_step`` after the model's update. Default: nothing to do."""
        return None

    @property
    def own_variables(self):
        """Variables this regulariser trains itself (excluded from the model's optimizer)."""
        return []

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


@keras.saving.register_keras_serializable(package="kvae")
class LatentL2(Regularizer):
    r"""weight * 1/2 ||z||^2 on the sampled code (the RAE's latent penalty, Ghosh et al. 2020)."""

    def __init__(self, weight=1.0, name="latent_l2", **kwargs):
        super().__init__(weight=weight, name=name, **kwargs)

    def penalty(self, terms):
        z = tf.cast(terms["z"], tf.float32)
        return self.weight * 0.5 * tf.reduce_sum(tf.square(z), axis=-1)


def _fold(seed, salt):
    if seed is None:
        return None
    return tf.cast(tf.random.experimental.stateless_fold_in(seed, salt), tf.int32)


@keras.saving.register_keras_serializable(package="kvae")
class MMDPenalty(Regularizer):
    r"""weight * MMD^2(q(z), p(z)) between the batch's codes and as many prior draws (InfoVAE,
    Zhao et al.); ``kernel`` "rbf", "imq" or "infovae" (the reference code's), summed over
    ``bandwidths``; ``unbiased`` U-statistic or (False) the reference code's V-statistic."""

    def __init__(self, weight=1.0, kernel="rbf", bandwidths=(1.0,), unbiased=True, name="mmd", **kwargs):
        super().__init__(weight=weight, name=name, **kwargs)
        self.kernel, self.bandwidths = kernel, [float(b) for b in bandwidths]
        self.unbiased = bool(unbiased)

    def penalty(self, terms):
        from kvae.nn.divergences import mmd

        z = tf.cast(terms["z"], tf.float32)
        prior_z = terms["prior"].sample(tf.shape(z)[0], seed=_fold(terms["seed"], 11))
        return self.weight * mmd(z, prior_z, self.kernel, self.bandwidths, unbiased=self.unbiased)

    def get_config(self):
        return {**super().get_config(), "kernel": self.kernel, "bandwidths": self.bandwidths,
                "unbiased": self.unbiased}


def _discriminator(hidden, name):
    """MLP discriminator: Dense + LeakyReLU(0.2) per hidden layer, one logit out."""
    layers = []
    for h in hidden:
        layers += [keras.layers.Dense(int(h)), keras.layers.LeakyReLU(negative_slope=0.2)]
    return keras.Sequential(layers + [keras.layers.Dense(1)], name=name)


class _DiscriminatorPenalty(Regularizer):
    """A latent discriminator with its own Adam(lr, beta_1, beta_2) optimizer, stepped in the
    model's train_step."""

    def __init__(self, weight=1.0, hidden=(256, 256), lr=1e-4, beta_1=0.5, beta_2=0.999, **kwargs):
        super().__init__(weight=weight, **kwargs)
        self.hidden, self.lr = [int(h) for h in hidden], float(lr)
        self.beta_1, self.beta_2 = float(beta_1), float(beta_2)
        self.discriminator = _discriminator(self.hidden, name=f"{self.name}_discriminator")
        self.optimizer = keras.optimizers.Adam(self.lr, beta_1=self.beta_1, beta_2=self.beta_2)

    def build_for(self, model):
        if not self.discriminator.built:
            self.discriminator.build((None, model.latent_dim))
        self.optimizer.build(self.discriminator.trainable_variables)
        self.built = True

    @property
    def own_variables(self):
        return self.discriminator.trainable_variables

    def logits(self, z):
        return tf.cast(self.discriminator(z), tf.float32)[:, 0]

    def real_and_fake(self, terms):
        """(samples labelled 1, samples labelled 0) for the discriminator."""
        raise NotImplementedError  # abstract: subclasses say what they compare

    def after_step(self, model, terms):
        real, fake = self.real_and_fake(terms)
        real, fake = tf.stop_gradient(real), tf.stop_gradient(fake)
        with tf.GradientTape() as tape:
            bce = (tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.ones_like(real[:, 0]), logits=self.logits(real))
                   + tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.zeros_like(fake[:, 0]),
                                                             logits=self.logits(fake)))
            loss = tf.nn.compute_average_loss(bce)
        variables = self.discriminator.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "lr": self.lr, "beta_1": self.beta_1,
                "beta_2": self.beta_2}


@keras.saving.register_keras_serializable(package="kvae")
class AdversarialDivergence(_DiscriminatorPenalty):
    r"""Adversarial D(q(z) || p(z)) (InfoVAE's adversarial option): a discriminator learns to tell prior
    draws (label 1) from codes (label 0); the model pays weight * -log D(z) = weight * softplus(-T(z)),
    the non-saturating GAN loss.  What it minimises is not the Jensen-Shannon divergence: with the
    optimal discriminator D* = p / (p + q), E_q[-log D*(z)] = KL(q || p) - 2 JS(q, p) + log 4
    (Arjovsky & Bottou 2017), so the codes follow the gradient of KL(q(z) || p(z)) - 2 JS."""

    def __init__(self, weight=1.0, hidden=(256, 256), lr=1e-4, name="adversarial", **kwargs):
        super().__init__(weight=weight, hidden=hidden, lr=lr, name=name, **kwargs)

    def penalty(self, terms):
        return self.weight * tf.nn.softplus(-self.logits(terms["z"]))

    def real_and_fake(self, terms):
        z = tf.cast(terms["z"], tf.float32)
        return terms["prior"].sample(tf.shape(z)[0], seed=_fold(terms["seed"], 13)), z


@keras.saving.register_keras_serializable(package="kvae")
class ImageDiscriminator(_DiscriminatorPenalty):
    r"""VAE-GAN's discriminator on images (Larsen et al. 2016): an MLP T on flattened images with its
    own Adam, stepped in the model's ``train_step`` on the paper's three terms
    BCE(T(x), 1) + BCE(T(x~), 0) + BCE(T(x_p), 0), where x~ = E[x|z] is the reconstruction and
    x_p = E[x|z_p], z_p ~ p(z), a sample (computed with the decoder after the model's update).
    The decoder pays weight * [softplus(-T(x~)) + softplus(-T(x_p))] (the non-saturating GAN loss);
    the encoder does not (``encoder_term = False``: Larsen et al. update the encoder on KL + L_llike
    only).  :meth:`features` is Dis_l, the activations of hidden layer ``feature_layer``, in whose
    space the VAE-GAN objective measures reconstruction (:class:`kvae.parts.objectives.VAEGANObjective`)."""

    encoder_term = False

    def __init__(self, weight=1.0, hidden=(256, 256), lr=1e-4, beta_1=0.5, beta_2=0.999, feature_layer=-1,
                 name="gan", **kwargs):
        super().__init__(weight=weight, hidden=hidden, lr=lr, beta_1=beta_1, beta_2=beta_2, name=name, **kwargs)
        self.feature_layer = int(feature_layer)
        if not -len(self.hidden) <= self.feature_layer < len(self.hidden):
            raise ConfigError(f"feature_layer must index one of the {len(self.hidden)} hidden layers, "
                              f"got {feature_layer}")
        self._decode = None

    def build_for(self, model):
        size = 1
        for d in model.data_shape:
            size *= int(d)
        if not self.discriminator.built:
            self.discriminator.build((None, size))
        self.optimizer.build(self.discriminator.trainable_variables)
        self._decode = model.decode  # a bound method: not tracked as a sub-layer
        self.built = True

    @staticmethod
    def _flat(x):
        x = tf.cast(x, tf.float32)
        return tf.reshape(x, [tf.shape(x)[0], -1])

    def logits(self, x):
        return tf.cast(self.discriminator(self._flat(x)), tf.float32)[:, 0]

    def features(self, x):
        """Dis_l(x): the activations after hidden layer ``feature_layer`` (its LeakyReLU), [B, units]."""
        h = self._flat(x)
        last = 2 * (self.feature_layer % len(self.hidden)) + 1  # Dense, LeakyReLU per hidden layer
        for layer in self.discriminator.layers[:last + 1]:
            h = layer(h)
        return tf.cast(h, tf.float32)

    def generated(self, terms, training=False):
        """x_p = E[x|z_p] for z_p ~ p(z), one per example of the batch (seed folded from the step's)."""
        z = terms["prior"].sample(tf.shape(terms["x"])[0], seed=_fold(terms["seed"], 19))
        return self._decode(z, terms["y"], training=training).mean()

    def penalty(self, terms):
        fake = tf.concat([terms["px"].mean(), self.generated(terms, terms["training"])], axis=0)
        gen = tf.nn.softplus(-self.logits(fake))
        b = tf.shape(terms["x"])[0]
        return self.weight * (gen[:b] + gen[b:])

    def after_step(self, model, terms):
        real = tf.stop_gradient(tf.cast(terms["x"], tf.float32))
        fake = tf.stop_gradient(tf.concat([terms["px"].mean(), self.generated(terms)], axis=0))
        with tf.GradientTape() as tape:
            b = tf.shape(real)[0]
            bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.ones([b]), logits=self.logits(real))
            fake_bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.zeros([2 * b]), logits=self.logits(fake))
            loss = tf.nn.compute_average_loss(bce + fake_bce[:b] + fake_bce[b:])
        variables = self.discriminator.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)

    def get_config(self):
        return {**super().get_config(), "feature_layer": self.feature_layer}


def permute_dims(z, seed):
    """Shuffle each latent dimension independently across the batch (FactorVAE): the result has
    the same marginals as z and (approximately) independent dimensions."""
    z = tf.convert_to_tensor(z)
    order = tf.argsort(tf.random.stateless_uniform(tf.shape(z), seed), axis=0)
    return tf.transpose(tf.gather(tf.transpose(z), tf.transpose(order), batch_dims=1))


@keras.saving.register_keras_serializable(package="kvae")
class TotalCorrelation(_DiscriminatorPenalty):
    r"""FactorVAE's total-correlation penalty (Kim & Mnih 2018, Algorithm 1): TC(z) =
    KL(q(z) || prod_d q(z_d)) is estimated by the density-ratio trick, weight * T(z) with T the logit
    of a discriminator between codes (label 1) and dimension-wise permuted codes (label 0).

    As in Algorithm 1 the permuted codes come from an *independent* batch: the discriminator sees
    the codes of the first half of the (global) batch as joint samples and permute_dims of the codes
    of the second half (pythae splits the batch the same way).  Defaults are the paper's: 6 hidden
    layers of 1000 units with LeakyReLU(0.2), Adam(1e-4, beta_1=0.5, beta_2=0.9)."""

    def __init__(self, weight=6.0, hidden=(1000,) * 6, lr=1e-4, beta_1=0.5, beta_2=0.9, name="total_correlation",
                 **kwargs):
        super().__init__(weight=weight, hidden=hidden, lr=lr, beta_1=beta_1, beta_2=beta_2, name=name, **kwargs)

    def penalty(self, terms):
        return self.weight * self.logits(terms["z"])

    def real_and_fake(self, terms):
        """(codes of the first half of the batch, permute_dims of the codes of the second half).  Under
        tf.distribute the halves and the permutation are those of the *global* batch (all-gathered) and
        each replica keeps its share, so N replicas train the discriminator exactly as one device."""
        z = tf.cast(terms["z"], tf.float32)
        seed = _fold(terms["seed"] if terms["seed"] is not None else tf.constant([0, 0]), 17)
        ctx = tf.distribute.get_replica_context()
        b = tf.shape(z)[0]
        if ctx is None or ctx.num_replicas_in_sync == 1:
            everything, start = z, 0
        else:
            everything = ctx.all_gather(z, axis=0)
            start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * b
        half = tf.shape(everything)[0] // 2
        joint, other = everything[:half], permute_dims(everything[half:2 * half], seed)
        lo, n = start // 2, b // 2
        return joint[lo:lo + n], other[lo:lo + n]


def pairwise_gaussian_kl(loc, scale):
    """KL(q_i || q_j) per dimension for diagonal Gaussians: [B, B, D]."""
    li, lj = loc[:, None, :], loc[None, :, :]
    si, sj = scale[:, None, :], scale[None, :, :]
    return tf.math.log(sj / si) + (si**2 + (li - lj) ** 2) / (2.0 * sj**2) - 0.5


@keras.saving.register_keras_serializable(package="kvae")
class MutualPosteriorDivergence(Regularizer):
    r"""MAE (Ma, Zhou & Hovy 2019): diversity and smoothness of the posteriors within a batch,

        - eta * sum_d log sigmoid( mean_{i != j} KL(q(z_d|x_i) || q(z_d|x_j)) )
        + gamma * std_{i != j}( sum_d KL(q(z|x_i) || q(z|x_j)) ),

    for diagonal Gaussian posteriors (combine with ``free_bits_total`` on the model, as the paper does).  The
    standard deviation is the Bessel-corrected one over the B(B-1) ordered pairs, as in the reference code
    (``torch.std``)."""

    def __init__(self, eta=1.0, gamma=0.5, name="mae", **kwargs):
        kwargs.pop("weight", None)  # eta and gamma are the weights
        super().__init__(weight=1.0, name=name, **kwargs)
        self.eta, self.gamma = float(eta), float(gamma)

    def penalty(self, terms):
        normal = terms["q"].distribution
        kl = pairwise_gaussian_kl(tf.cast(normal.loc, tf.float32), tf.cast(normal.scale, tf.float32))
        b = tf.shape(kl)[0]
        off = 1.0 - tf.eye(b)
        pairs = tf.reduce_sum(off)
        mean_d = tf.reduce_sum(kl * off[:, :, None], axis=[0, 1]) / pairs
        diversity = -self.eta * tf.reduce_sum(tf.math.log_sigmoid(mean_d))
        total = tf.reduce_sum(kl, -1)
        mean_t = tf.reduce_sum(total * off) / pairs
        std_t = tf.sqrt(tf.reduce_sum(off * (total - mean_t) ** 2) / (pairs - 1.0) + 1e-12)
        return diversity + self.gamma * std_t

    def get_config(self):
        return {**super().get_config(), "eta": self.eta, "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="kvae")
class DecoderL2(Regularizer):
    """RAE-L2: weight * sum of squared decoder weights (kernels of the decoder network and head)."""

    def __init__(self, weight=1e-6, name="decoder_l2", **kwargs):
        super().__init__(weight=weight, name=name, **kwargs)
        self._kernels = lambda: []  # a function, so Keras does not track the decoder's variables twice

    def build_for(self, model):
        def kernels():
            return [v for v in model.decoder_network.trainable_weights + model.likelihood.trainable_weights
                    if "kernel" in v.path]

        self._kernels = kernels
        self.built = True

    def penalty(self, terms):
        return self.weight * tf.add_n([tf.reduce_sum(tf.square(k)) for k in self._kernels()])


@keras.saving.register_keras_serializable(package="kvae")
class DecoderGradientPenalty(Regularizer):
    r"""RAE-GP: weight * ||d mu(z) / dz||_F^2 per example, the squared Frobenius norm of the Jacobian of
    the decoder's first output (logits or mean) with respect to the code."""

    def __init__(self, weight=1e-6, name="gradient_penalty", **kwargs):
        super().__init__(weight=weight, name=name, **kwargs)

    def penalty(self, terms):
        z = tf.cast(terms["z"], tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(z)
            out = terms["decode_params"](z, terms["y"], training=terms.get("training", True))[0]
            out = tf.reshape(out, [tf.shape(out)[0], -1])
        jac = tape.batch_jacobian(out, z)
        return self.weight * tf.reduce_sum(tf.square(jac), axis=[1, 2])


@keras.saving.register_keras_serializable(package="kvae")
class MinibatchTotalCorrelation(Regularizer):
    r"""beta-TCVAE's total-correlation penalty (Chen et al. 2018) with the minibatch-weighted-sampling
    estimator, no discriminator:

        log q(z_i) ~ logsumexp_j log q(z_i | x_j) - log(B N),
        log prod_d q(z_id) ~ sum_d [logsumexp_j log q(z_id | x_j) - log(B N)],
        TC ~ mean_i [log q(z_i) - log prod_d q(z_id)],

    for factorised posteriors, B the batch size and N the data-set size; returns weight * TC
    (beta-TCVAE's beta - 1 when added to the plain ELBO)."""

    def __init__(self, weight=5.0, dataset_size=50000, name="minibatch_tc", **kwargs):
        super().__init__(weight=weight, name=name, **kwargs)
        self.dataset_size = int(dataset_size)

    def penalty(self, terms):
        normal = terms["q"].distribution
        z = tf.cast(terms["z"], tf.float32)
        log_q = normal.log_prob(z[:, None, :])  # [B (z_i), B (x_j), D]
        b = tf.cast(tf.shape(z)[0], tf.float32)
        log_bn = tf.math.log(b * float(self.dataset_size))
        log_qz = tf.reduce_logsumexp(tf.reduce_sum(log_q, -1), axis=1) - log_bn
        log_prod = tf.reduce_sum(tf.reduce_logsumexp(log_q, axis=1) - log_bn, axis=-1)
        return self.weight * tf.reduce_mean(log_qz - log_prod)

    def get_config(self):
        return {**super().get_config(), "dataset_size": self.dataset_size}
