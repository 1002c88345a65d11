r"""The posterior and prior of a ladder hierarchy, as part layers, and the hierarchy as a TFP distribution.

The codes of all groups are one vector z (each group flattened, top group first), so that every
single-latent contract (``encode(x)`` a distribution over z, ``sample``, the exported endpoints with
noise eps [N, D]) holds; :class:`HierarchicalNormal` is q(z|x) or p(z) over that vector:

    p(z) = p(z_L) prod_{l<L} p(z_l | z_{>l}),      q(z|x) = q(z_L|x) prod_{l<L} q(z_l | x, z_{>l}),

each factor a diagonal Gaussian computed by the model's top-down pass (``walk``).
"""
import keras
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import samplers

from kvae.parts.contracts import Posterior, Prior

tfd = tfp.distributions

MIN_SCALE = 1e-3


def positive(raw):
    """softplus(raw) + 1e-3: a scale kept away from 0."""
    return tf.nn.softplus(raw) + MIN_SCALE


class HierarchicalNormal(tfd.Distribution):
    """q(z|x) (``hat`` = the bottom-up Gaussians, [*batch, D] each) or p(z) (``hat=None``) of a ladder
    hierarchy over the flat code z [..., D]; sampling and ``log_prob`` run the model's top-down pass."""

    def __init__(self, walk, latent_dim, hat=None, name="HierarchicalNormal"):
        parameters = dict(locals())
        self._walk, self._dim, self._hat = walk, int(latent_dim), hat
        super().__init__(dtype=tf.float32, reparameterization_type=tfd.FULLY_REPARAMETERIZED, validate_args=False,
                         allow_nan_stats=True, parameters=parameters, name=name)

    def _batch_shape(self):
        return tf.TensorShape([]) if self._hat is None else self._hat[0].shape[:-1]

    def _batch_shape_tensor(self):
        return tf.constant([], tf.int32) if self._hat is None else tf.shape(self._hat[0])[:-1]

    def _event_shape(self):
        return tf.TensorShape([self._dim])

    def _event_shape_tensor(self):
        return tf.constant([self._dim], tf.int32)

    def _flat_hat(self, lead):
        if self._hat is None:
            return None
        shape = tf.concat([lead, [self._dim]], 0)
        return tuple(tf.reshape(tf.broadcast_to(t, shape), [-1, self._dim]) for t in self._hat)

    def from_noise(self, eps):
        """The draw of z for standard-normal noise eps [..., *batch, D] (ancestral, top group first)."""
        eps = tf.convert_to_tensor(eps, tf.float32)
        groups, _ = self._walk(hat=self._flat_hat(tf.shape(eps)[:-1]), eps=tf.reshape(eps, [-1, self._dim]))
        return tf.reshape(tf.concat([tf.reshape(g["z"], [tf.shape(g["z"])[0], -1]) for g in groups], -1),
                          tf.shape(eps))

    def _sample_n(self, n, seed=None):
        shape = tf.concat([[n], self._batch_shape_tensor(), [self._dim]], 0)
        return self.from_noise(samplers.normal(shape, seed=samplers.sanitize_seed(seed)))

    def _log_prob(self, z):
        z = tf.convert_to_tensor(z, tf.float32)
        groups, _ = self._walk(hat=self._flat_hat(tf.shape(z)[:-1]), z=tf.reshape(z, [-1, self._dim]))
        total = 0.0
        for g in groups:
            loc, scale = g["q"] if self._hat is not None else g["p"]
            total += tf.reduce_sum(tfd.Normal(loc, scale).log_prob(g["z"]), axis=[1, 2, 3])
        return tf.reshape(total, tf.shape(z)[:-1])


@keras.saving.register_keras_serializable(package="kvae")
class LadderPosterior(Posterior):
    """The bottom-up halves of q: per group a 3x3 convolution of the bottom-up features d_l into
    (mu_hat, sigma_hat), flattened and concatenated top group first (the exported ``encode``
    outputs); :meth:`distribution` is the hierarchy's q(z|x) (:class:`HierarchicalNormal`), merged
    with the top-down prior by the model (precision-weighted, or residual)."""

    param_names = ("loc_hat", "scale_hat")

    def __init__(self, latent_dim, groups=3, latent_channels=8, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.groups, self.latent_channels = int(latent_dim), int(groups), int(latent_channels)
        self.heads = [keras.layers.Conv2D(2 * self.latent_channels, 3, padding="same", name=f"head{i}")
                      for i in range(self.groups)]
        self.walk = None  # the model's top-down pass, set by the model

    def build(self, input_shape):
        for head, shape in zip(self.heads, input_shape):
            head.build(shape)
        self.built = True

    def call(self, features, training=False):
        locs, scales = [], []
        for head, d in reversed(list(zip(self.heads, features))):  # top (lowest resolution) first
            mu, raw = tf.split(tf.cast(head(d), tf.float32), 2, axis=-1)
            locs.append(tf.reshape(mu, [tf.shape(mu)[0], -1]))
            scales.append(tf.reshape(positive(raw), [tf.shape(raw)[0], -1]))
        return tf.concat(locs, -1), tf.concat(scales, -1)

    def distribution(self, params):
        return HierarchicalNormal(self.walk, self.latent_dim, hat=tuple(params), name="q")

    def reparameterize(self, q, eps):
        return q.from_noise(eps)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "groups": self.groups,
                "latent_channels": self.latent_channels}


@keras.saving.register_keras_serializable(package="kvae")
class LadderPrior(Prior):
    """p(z): a learned Gaussian for the top group (mean and scale per position and channel), the
    other groups conditional on those above through the model's top-down pass."""

    def __init__(self, latent_dim, top_shape=(4, 4, 8), **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.top_shape = int(latent_dim), [int(s) for s in top_shape]
        self.walk = None

    def build(self, input_shape=None):
        self.top_loc = self.add_weight(shape=self.top_shape, initializer="zeros", name="top_loc")
        # softplus(0.5413) + 1e-3 = 1.0: the top prior starts at N(0, I)
        self.top_raw_scale = self.add_weight(shape=self.top_shape, initializer=keras.initializers.Constant(0.5413),
                                             name="top_raw_scale")
        self.built = True

    def top(self, n):
        """(mu, sigma) of p(z_L), broadcast to a batch of n."""
        shape = tf.concat([[n], self.top_shape], 0)
        return (tf.broadcast_to(tf.convert_to_tensor(self.top_loc), shape),
                tf.broadcast_to(positive(tf.convert_to_tensor(self.top_raw_scale)), shape))

    def distribution(self):
        return HierarchicalNormal(self.walk, self.latent_dim, name="p")

    def from_noise(self, eps, component_uniform=None):
        return self.distribution().from_noise(eps)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "top_shape": self.top_shape}
