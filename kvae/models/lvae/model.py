r"""Ladder VAE (Sønderby et al. 2016) with a top-down ResNet path over spatial latent groups.

Generative model, groups l = L (top, lowest resolution) ... 1:

    p(z_L) = N(mu_L, sigma_L^2) (learned),  p(z_l | z_{>l}) = N(mu_p(h_l), sigma_p(h_l)^2),
    h_{l-1} = up(blocks(h_l + Conv(z_l))),  p(x | z) = Bernoulli(logits(h_0)),

or, with ``pixelcnn_layers > 0``, a local PixelCNN conditioned on a map of h_0 (as VLAE's decoder).

Inference shares the top-down path: a deterministic bottom-up pass gives N(mu_hat_l, sigma_hat_l^2)
per group and q(z_l | x, z_{>l}) merges it with the prior of that group, by precisions
(``merge="precision"``, the paper's eq. 18-19; the top group's q is the bottom-up Gaussian alone) or as
a residual on the prior (``merge="residual"``, NVAE's residual normal, Vahdat & Kautz 2020).  The
objective is the ELBO with the KL of each group in closed form given the groups above,

    ELBO = E_q[log p(x|z)] - sum_l E_q[KL(q(z_l|x, z_{>l}) || p(z_l|z_{>l}))],

with optional free bits per group (max(lambda, E_batch KL_l), Kingma et al. 2016) and KL warm-up.
Gated residual blocks and spatial groups follow addtt/ladder-vae-pytorch (the 78.30-nat MNIST
anchor, docs/results.md).
"""
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from kvae.core.importance import log_importance_weights
from kvae.core.model import VariationalModel
from kvae.core.step import unless_skipped
from kvae.core.terms import LatentGroup
from kvae.errors import ConfigError
from kvae.models.lvae.gaussians import normal_kl, precision_weighted, residual
from kvae.models.lvae.networks import BottomUp, TopDown, resolutions
from kvae.models.lvae.parts import LadderPosterior, LadderPrior, positive
from kvae.parts.likelihoods import BernoulliLikelihood, PixelCNNLikelihood

tfd = tfp.distributions

MERGES = ("precision", "residual")


@keras.saving.register_keras_serializable(package="kvae")
class LadderVAE(VariationalModel):
    """Ladder VAE with a top-down ResNet path.

    Args:
      input_shape: an image shape (H, W, C).
      groups: stochastic layers L (spatial groups at H/2, H/4, ... ).
      channels: feature maps of the deterministic paths.
      latent_channels: channels of each latent group.
      blocks: gated residual blocks per group on each path.
      merge: "precision" (Sønderby et al. 2016) or "residual" (NVAE's residual normal).
      free_bits_per_group: floor in nats on each group's batch-mean KL (0 for none).
      density: the ex-post density over codes; "none" by default (the learned prior is the sampler,
        and a full-covariance mixture over the D codes would hold D^2 numbers per component).
      pixelcnn_layers: 0 for a factorised Bernoulli decoder; else the masked layers of a local PixelCNN
        decoder conditioned on the top-down features (the VLAE / PixelVAE combination, Chen et al. 2017,
        Gulrajani et al. 2017), with ``pixelcnn_kernel``, ``pixelcnn_filters`` and ``cond_channels``
        as :class:`~kvae.models.vlae.VLAE` has them.
      pixelcnn_kernel: kernel size of the masked convolutions.
      pixelcnn_filters: filters per PixelCNN layer.
      cond_channels: channels of the map from the top-down features that conditions the PixelCNN
        (concatenated to the image at its input, as VLAE does).
    """

    fixed_options = ("network", "hidden", "posterior", "prior", "decoder", "latent_dim", "num_classes")

    def __init__(self, input_shape=(28, 28, 1), groups=3, channels=64, latent_channels=8, blocks=2,
                 merge="precision", free_bits_per_group=0.0, density="none", pixelcnn_layers=0, pixelcnn_kernel=3,
                 pixelcnn_filters=12, cond_channels=4, **kwargs):
        input_shape = tuple(int(d) for d in input_shape)
        if len(input_shape) != 3:
            raise ConfigError(f"a ladder VAE needs image data (H, W, C), got shape {input_shape}")
        if merge not in MERGES:
            raise ConfigError(f"merge must be one of {', '.join(MERGES)}, got {merge!r}")
        if int(groups) < 1 or int(channels) < 1 or int(latent_channels) < 1 or int(blocks) < 0:
            raise ConfigError("groups, channels and latent_channels must be positive and blocks >= 0")
        if kwargs.get("num_classes") is not None:
            raise ConfigError("the ladder VAE is not conditional (num_classes must be None)")
        if int(pixelcnn_layers) < 0:
            raise ConfigError(f"pixelcnn_layers must be >= 0 (0: a Bernoulli decoder), got {pixelcnn_layers}")
        if float(free_bits_per_group) < 0:
            raise ConfigError(f"free_bits_per_group must be >= 0, got {free_bits_per_group}")
        for key in ("network", "hidden", "posterior", "prior", "decoder", "latent_dim", "encoder_network",
                    "decoder_network"):
            kwargs.pop(key, None)  # built here from the options above (also when loading a config)
        group_shapes = [(h, w, int(latent_channels)) for h, w in
                        zip(resolutions(input_shape[0], int(groups)), resolutions(input_shape[1], int(groups)))][::-1]
        latent_dim = int(sum(np.prod(s) for s in group_shapes))
        posterior = LadderPosterior(latent_dim, int(groups), int(latent_channels), name="posterior")
        prior = LadderPrior(latent_dim, top_shape=group_shapes[0], name="prior")
        if int(pixelcnn_layers):
            likelihood = PixelCNNLikelihood(input_shape, num_layers=int(pixelcnn_layers),
                                            kernel_size=int(pixelcnn_kernel), filters=int(pixelcnn_filters),
                                            cond_channels=int(cond_channels), conditioning="input", name="likelihood")
        else:
            likelihood = BernoulliLikelihood(input_shape, name="likelihood")
            likelihood.memory_factor = 4 * int(channels)  # features held per pixel and sample in log_prob
        bottom_up = BottomUp(int(groups), int(channels), int(blocks), name="bottom_up")
        top_down = TopDown(input_shape[:2], int(groups), int(channels), int(latent_channels), int(blocks),
                           name="top_down")
        super().__init__(input_shape, latent_dim=latent_dim, posterior=posterior, prior=prior, decoder=likelihood,
                         encoder_network=bottom_up, decoder_network=top_down,
                         density=density, **kwargs)
        self.group_shapes, self.merge = group_shapes, merge
        self.group_kl_trackers = [keras.metrics.Mean(name=f"kl_z{len(group_shapes) - i}") for i in range(len(group_shapes))]
        for part in (self.posterior, self.prior):  # a plain reference: Keras' attribute tracking left out
            object.__setattr__(part, "walk", self.walk)
        self.free_bits_per_group = float(free_bits_per_group)
        self._init_args.update(dict(groups=int(groups), channels=int(channels), latent_channels=int(latent_channels),
                                    blocks=int(blocks), merge=merge, free_bits_per_group=self.free_bits_per_group,
                                    pixelcnn_layers=int(pixelcnn_layers), pixelcnn_kernel=int(pixelcnn_kernel),
                                    pixelcnn_filters=int(pixelcnn_filters), cond_channels=int(cond_channels)))

    #: constructor arguments of the base that this model builds itself (left out of its config)
    BUILT_HERE = ("posterior", "prior", "decoder", "encoder_network", "decoder_network", "latent_dim", "network",
                  "hidden")

    def get_config(self):
        # (not popped from _init_args: it is a tracked dict, and popping a layer from it untracks the layer)
        return {k: v for k, v in super().get_config().items() if k not in self.BUILT_HERE}

    @property
    def top_down(self):
        """The generative path (:class:`~kvae.models.lvae.networks.TopDown`), the decoder network."""
        return self.decoder_network

    # -- the top-down pass
    def _split(self, flat):
        """A flat code [N, D] as the groups' spatial tensors, top first."""
        sizes = [int(np.prod(s)) for s in self.group_shapes]
        return [tf.reshape(part, [-1, *shape]) for part, shape in zip(tf.split(flat, sizes, axis=-1), self.group_shapes)]

    def walk(self, hat=None, eps=None, z=None, given=None):
        """The top-down pass for a batch of N: per group (top first) a dict of prior ``p`` = (mu, sigma),
        posterior ``q`` (None without ``hat``, the bottom-up Gaussians [N, D] each) and draw ``z``; then
        the features at the image's resolution.  Codes are ``z`` [N, D] when given, else loc + scale * eps
        with eps [N, D] (of q when ``hat`` is given, else of p); ``given`` (a list of group tensors or
        None per group) fixes some groups and draws the others."""
        source = eps if z is None else z
        n = tf.shape(source)[0]
        fixed = self._split(z) if z is not None else (given or [None] * len(self.group_shapes))
        noise = self._split(eps) if eps is not None else [None] * len(self.group_shapes)
        hats = list(zip(self._split(hat[0]), self._split(hat[1]))) if hat is not None else None
        h, out = None, []
        for i in range(len(self.group_shapes)):
            if i == 0:
                p = self.prior.top(n)
            else:
                mu, raw = self.top_down.prior_params(i, h)
                p = (mu, positive(raw))
            q = None
            if hats is not None:
                mu_hat, sigma_hat = hats[i]
                if self.merge == "residual":
                    q = residual(mu_hat, sigma_hat, *p)
                else:
                    q = (mu_hat, sigma_hat) if i == 0 else precision_weighted(mu_hat, sigma_hat, *p)
            loc, scale = q if q is not None else p
            z_i = fixed[i] if fixed[i] is not None else loc + scale * noise[i]
            out.append({"p": p, "q": q, "z": z_i})
            h = self.top_down.absorb(i, h, z_i)
        return out, h

    # -- latent groups (what the core's ELBO, importance weights and diagnostics read)
    def _groups(self, walked, features, with_kl=True):
        groups = []
        for i, g in enumerate(walked):
            name = f"z{len(walked) - i}"
            q = tfd.Independent(tfd.Normal(*g["q"]), 3)
            p = tfd.Independent(tfd.Normal(*g["p"]), 3)
            kl = kl_dims = None
            if with_kl:
                elementwise = normal_kl(*g["q"], *g["p"])
                kl_dims = tf.reshape(elementwise, [tf.shape(elementwise)[0], -1])
                kl = tf.reduce_sum(kl_dims, axis=-1)
            groups.append(LatentGroup(name, q, g["z"], p, kl=kl, kl_per_dim=kl_dims,
                                      context=features if i == len(walked) - 1 else None))
        return tuple(groups)

    def latent_groups(self, x, y=None, training=False, seed=None):
        hat = self.encode_params(x, training=training)
        batch = tf.shape(hat[0])[0]
        eps = self.standard_noise(batch, seed) if seed is not None else tf.random.normal([batch, self.latent_dim])
        walked, features = self.walk(hat=hat, eps=eps)
        return self._groups(walked, features)

    def decode_groups(self, groups, y=None, training=False):
        features = groups[-1].context
        if features is None:
            flat = tf.concat([tf.reshape(g.z, [tf.shape(g.z)[0], -1]) for g in groups], -1)
            return self.decode(flat, training=training)
        return self.likelihood.distribution(self.likelihood(features, training=training))

    def importance_context(self, x, y=None):
        """The bottom-up Gaussians of x: the same for every importance draw of a batch."""
        return self.encode_params(tf.cast(x, tf.float32))

    @tf.autograph.experimental.do_not_convert  # static Python only; autograph once mixed up the methods it converted
    def log_weights_from_noise(self, x, y=None, eps=None, k=None, seed=None, training=False, groups=None,
                               context=None):
        """log w [k, B]: each of the k draws runs the whole top-down pass (q of a lower group depends
        on the draws above), all k B of them in one batch; the bottom-up pass once (``context``, that
        of :meth:`importance_context`, when given)."""
        x = tf.cast(x, tf.float32)
        hat = self.encode_params(x, training=training) if context is None else tuple(context)
        batch = tf.shape(x)[0]
        if eps is None:
            shape = [k, batch, self.latent_dim]
            eps = tf.random.normal(shape) if seed is None else tf.random.stateless_normal(shape, seed)
        eps = tf.convert_to_tensor(eps, tf.float32)
        k = tf.shape(eps)[0]
        flat_hat = tuple(tf.reshape(tf.broadcast_to(t, tf.shape(eps)), [-1, self.latent_dim]) for t in hat)
        walked, features = self.walk(hat=flat_hat, eps=tf.reshape(eps, [-1, self.latent_dim]))
        tiled = tf.reshape(tf.broadcast_to(x, tf.concat([[k], tf.shape(x)], 0)), tf.concat([[-1], tf.shape(x)[1:]], 0))
        px = self.likelihood.distribution(self.likelihood(features, training=training))
        log_w = log_importance_weights(px.log_prob(tiled), self._groups(walked, features, with_kl=False))
        return tf.reshape(log_w, [k, batch])

    def kl_penalty(self, terms):
        """Free bits per group: sum_l max(lambda, E_batch KL_l), no gradient to a group under the
        floor; else the base's penalties."""
        if self.free_bits_per_group <= 0:
            return super().kl_penalty(terms)
        lam = tf.constant(self.free_bits_per_group, tf.float32)
        total = 0.0
        for g in terms.groups:
            total += tf.where(tf.reduce_mean(g.kl) >= lam, g.kl, lam * tf.ones_like(g.kl))
        return total

    # -- metrics: each group's KL (TensorBoard shows them beside the base metrics)
    @property
    def metrics(self):
        if not hasattr(self, "group_kl_trackers"):
            return super().metrics
        return [*super().metrics, *self.group_kl_trackers]

    def _update_metrics(self, terms, per_example, reg_values, beta, sample_weight, skipped=None):
        for tracker, group in zip(self.group_kl_trackers, terms.groups):
            tracker.update_state(*unless_skipped(group.kl, sample_weight, skipped))
        return super()._update_metrics(terms, per_example, reg_values, beta, sample_weight, skipped)

    # -- hierarchical sampling
    def codes_from_layer(self, layer, rows, cols, seed=0):
        """The draws behind :meth:`sample_from_layer`: per group (top first) z [rows * cols, h, w, c],
        and the features at the image's resolution."""
        top = len(self.group_shapes)
        if not 1 <= int(layer) <= top:
            raise ConfigError(f"layer must be in 1..{top}, got {layer}")
        s1, s2 = tf.unstack(tf.random.experimental.stateless_split(tf.constant([seed, 0], tf.int32), 2))
        walked, _ = self.walk(eps=tf.random.stateless_normal([rows, self.latent_dim], s1))
        above = top - int(layer)  # groups fixed (top first)
        given = [tf.repeat(g["z"], cols, axis=0) if i < above else None for i, g in enumerate(walked)]
        walked, features = self.walk(eps=tf.random.stateless_normal([rows * cols, self.latent_dim], s2), given=given)
        return [g["z"] for g in walked], features

    def sample_from_layer(self, layer, rows, cols, seed=0):
        """Images [rows * cols, H, W, C] (E[x|z]): row r fixes the groups above ``layer`` (1 = bottom,
        L = top) at one prior draw; its ``cols`` images draw ``layer`` and the groups below anew
        (the hierarchical-representation figure of Sønderby et al. / Maaløe et al.); a PixelCNN
        decoder draws its pixels with uniform noise from ``seed``."""
        _, features = self.codes_from_layer(layer, rows, cols, seed)
        params = self.likelihood(features)
        if not getattr(self.likelihood, "needs_uniform", False):
            return self.likelihood.images(params)
        shape = tf.concat([tf.shape(features)[:1], tf.constant(self.likelihood.event_shape)], 0)
        return self.likelihood.images(params, tf.random.stateless_uniform(shape, [int(seed), 7]))
