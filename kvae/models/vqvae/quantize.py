r"""Vector quantisation (van den Oord et al. 2017, "Neural Discrete Representation Learning").

* :class:`VectorQuantizer`: a codebook e_1..e_K in R^D.  A code vector z_e [..., D] maps to its
  nearest entry, k = argmin_j ||z_e - e_j||^2, z_q = e_k; the decoder receives
  z_e + stop_gradient(z_q - z_e) (straight-through: the value is z_q, the gradient w.r.t. z_e the
  identity).  The codebook learns either by the loss ||sg(z_e) - e_k||^2 (``update="loss"``) or by
  exponential moving averages (``update="ema"``, the paper's Appendix A.1), per entry i:
      N_i <- gamma N_i + (1 - gamma) n_i,   m_i <- gamma m_i + (1 - gamma) sum_{j: k_j = i} z_e,j,
      e_i = m_i / N~_i,   N~_i = (N_i + eps) / (sum_l N_l + K eps) * sum_l N_l  (Laplace smoothing),
  with n_i the number of batch vectors assigned to i.  N and m start at 0 (so an entry's first
  update sets it to the mean of its vectors, as in the paper); an entry no vector has chosen yet
  (N_i = 0) keeps its initial vector instead of the 0 / 0 of the formula.
  Under ``tf.distribute`` n_i and the sums are all-reduced over the replicas first, so every
  replica applies the update of the global batch.
  With ``restart_threshold`` t > 0 (EMA only; Dhariwal et al. 2020's random restarts), after each
  step an entry whose moving count N_i is below t is dead: it restarts at a z_e vector drawn at
  random from the (global) batch, e_i = z_e,j, with N_i = t and m_i = t z_e,j.  (The draw
  :func:`restart_picks` is keyed by the step, the same on every replica.)  Entries the encoder
  stopped choosing then come back where the codes are, instead of staying unused.
* :class:`VectorQuantizedPosterior`: the posterior head of the VQ-VAE: z_e = Dense(h) as
  ``positions`` vectors of size D (latent_dim = positions * D), quantised; q(z|x) is the point mass
  at z_q (no density).
"""
import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kvae.errors import ConfigError
from kvae.parts.contracts import Posterior

tfd = tfp.distributions


def nearest(z_e, codebook):
    """Indices [...] of the nearest codebook rows (squared Euclidean distance) for z_e [..., D]."""
    flat = tf.reshape(z_e, [-1, tf.shape(codebook)[1]])
    d = (tf.reduce_sum(flat ** 2, axis=1, keepdims=True) - 2.0 * tf.matmul(flat, codebook, transpose_b=True)
         + tf.reduce_sum(codebook ** 2, axis=1)[None, :])
    return tf.reshape(tf.argmin(d, axis=1, output_type=tf.int32), tf.shape(z_e)[:-1])


def restart_picks(step, pool_size, num_embeddings):
    """Indices [K] into a pool of ``pool_size`` vectors: the restart candidates of update ``step``."""
    seed = tf.stack([tf.cast(step, tf.int32), tf.constant(7919, tf.int32)])
    return tf.random.stateless_uniform([num_embeddings], seed, maxval=pool_size, dtype=tf.int32)


def perplexity(codes, num_embeddings):
    """exp(entropy) of the codes' empirical distribution: K when every entry is used equally, 1 when one is."""
    counts = tf.math.bincount(tf.reshape(codes, [-1]), minlength=num_embeddings, maxlength=num_embeddings,
                              dtype=tf.float32)
    p = counts / tf.maximum(tf.reduce_sum(counts), 1.0)
    return tf.exp(-tf.reduce_sum(tf.math.xlogy(p, p)))


@keras.saving.register_keras_serializable(package="kvae")
class VectorQuantizer(keras.layers.Layer):
    """Codebook of ``num_embeddings`` vectors of size ``embedding_dim`` (see the module docstring).

    Args:
      update: ``"ema"`` (moving averages, ``decay`` gamma, smoothing ``epsilon``) or ``"loss"``
        (the codebook is trainable and :meth:`codebook_loss` moves it).
    """

    def __init__(self, num_embeddings=64, embedding_dim=8, update="ema", decay=0.99, epsilon=1e-5,
                 restart_threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        if update not in ("ema", "loss"):
            raise ConfigError(f"update must be 'ema' or 'loss', got {update!r}")
        if not 0.0 < float(decay) < 1.0:
            raise ConfigError(f"decay must be in (0, 1), got {decay}")
        if float(restart_threshold) < 0 or (float(restart_threshold) > 0 and update != "ema"):
            raise ConfigError(f"restart_threshold must be >= 0, and applies to update='ema' only; got "
                              f"{restart_threshold} with update={update!r}")
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.update, self.decay, self.epsilon = update, float(decay), float(epsilon)
        self.restart_threshold = float(restart_threshold)

    def build(self, input_shape=None):
        k, d = self.num_embeddings, self.embedding_dim
        init = keras.initializers.VarianceScaling(1.0, "fan_in", "uniform", seed=0)  # Sonnet's default
        ema = self.update == "ema"
        # moving averages are computed from all-reduced statistics, the same on every replica
        kept = {"aggregation": "only_first_replica"} if ema else {}
        self.codebook = self.add_weight(shape=(k, d), initializer=init, trainable=not ema, name="codebook", **kept)
        if ema:
            self.ema_count = self.add_weight(shape=(k,), initializer="zeros", trainable=False, name="ema_count", **kept)
            self.ema_sum = self.add_weight(shape=(k, d), initializer="zeros", trainable=False, name="ema_sum", **kept)
            if self.restart_threshold > 0:
                self.ema_steps = self.add_weight(shape=(), dtype="int32", initializer="zeros", trainable=False,
                                                 name="ema_steps", **kept)
        self.built = True

    def codes(self, z_e):
        """Indices of the nearest entries, z_e [..., D] -> int32 [...]."""
        return nearest(tf.cast(z_e, tf.float32), tf.convert_to_tensor(self.codebook))

    def lookup(self, codes):
        """Codebook vectors for int indices [...] -> [..., D]."""
        return tf.gather(tf.convert_to_tensor(self.codebook), tf.cast(codes, tf.int32))

    def call(self, z_e, training=False):
        """(straight-through z_q, codes) for z_e [..., D], z_q from the codebook as it was before this
        call; with ``training`` and ``update="ema"`` the codebook then takes the batch's moving-average step."""
        z_e = tf.cast(z_e, tf.float32)
        codes = self.codes(z_e)
        z_q = self.lookup(codes)  # the entries before this batch's update
        if training and self.update == "ema":
            with tf.control_dependencies([z_q]):
                self.ema_update(z_e, codes)
        return z_e + tf.stop_gradient(z_q - z_e), codes

    def ema_update(self, z_e, codes):
        """The moving-average step of the module docstring for one batch (all-reduced across replicas)."""
        flat = tf.reshape(tf.stop_gradient(z_e), [-1, self.embedding_dim])
        onehot = tf.one_hot(tf.reshape(codes, [-1]), self.num_embeddings, dtype=tf.float32)
        counts = tf.reduce_sum(onehot, axis=0)
        sums = tf.matmul(onehot, flat, transpose_a=True)
        ctx = tf.distribute.get_replica_context()
        distributed = ctx is not None and ctx.num_replicas_in_sync > 1
        if distributed:
            counts, sums = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [counts, sums])
        g = self.decay
        count = g * self.ema_count + (1.0 - g) * counts
        total = g * self.ema_sum + (1.0 - g) * sums
        n = tf.reduce_sum(count)
        smoothed = (count + self.epsilon) / (n + self.num_embeddings * self.epsilon) * n
        used = (count > 0)[:, None]  # never chosen yet: keep the initial vector
        codebook = tf.where(used, total / tf.maximum(smoothed, 1e-30)[:, None], self.codebook)
        if self.restart_threshold > 0:
            pool = ctx.all_gather(flat, axis=0) if distributed else flat
            fresh = tf.gather(pool, restart_picks(self.ema_steps, tf.shape(pool)[0], self.num_embeddings))
            dead = count < self.restart_threshold
            t = self.restart_threshold
            count = tf.where(dead, t, count)
            total = tf.where(dead[:, None], t * fresh, total)
            codebook = tf.where(dead[:, None], fresh, codebook)
            self.ema_steps.assign_add(1)
        # a batch with a non-finite code (a step the model then skips, skip_nonfinite_updates) leaves
        # the codebook as it was; the decision is the same on every replica (after the all-reduce)
        finite = tf.reduce_all(tf.math.is_finite(sums)) & tf.reduce_all(tf.math.is_finite(flat))
        if distributed:  # (tf.distribute reduces by SUM or MEAN only: count the replicas that saw one)
            finite = ctx.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32)) == 0
        self.ema_count.assign(tf.where(finite, count, self.ema_count))
        self.ema_sum.assign(tf.where(finite, total, self.ema_sum))
        self.codebook.assign(tf.where(finite, codebook, self.codebook))

    def codebook_loss(self, z_e, codes):
        """||sg(z_e) - e_k||^2 per example [B] (summed over every axis after the batch): moves the
        codebook when ``update="loss"``."""
        diff = tf.stop_gradient(tf.cast(z_e, tf.float32)) - self.lookup(codes)
        return tf.reduce_sum(tf.reshape(diff ** 2, [tf.shape(diff)[0], -1]), axis=1)

    def get_config(self):
        return {**super().get_config(), "num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                "update": self.update, "decay": self.decay, "epsilon": self.epsilon,
                "restart_threshold": self.restart_threshold}


@keras.saving.register_keras_serializable(package="kvae")
class VectorQuantizedPosterior(Posterior):
    """z_e = Dense(h) as ``positions`` code vectors of size D, quantised by a :class:`VectorQuantizer`.

    Parameters (the exported ``encode`` outputs): ``z`` (the quantised code, flat [B, positions * D]),
    ``z_e`` (the encoder's output before quantisation) and ``codes`` (the indices [B, positions] as
    float32).  q(z|x) is the point mass at z (``deterministic``: no density, no ELBO)."""

    factorized = False
    deterministic = True
    param_names = ("z", "z_e", "codes")

    def __init__(self, latent_dim, num_embeddings=64, embedding_dim=8, update="ema", decay=0.99,
                 restart_threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.embedding_dim = int(latent_dim), int(embedding_dim)
        if self.latent_dim % self.embedding_dim:
            raise ConfigError(f"latent_dim {latent_dim} is not a multiple of embedding_dim {embedding_dim}")
        self.positions = self.latent_dim // self.embedding_dim
        self.dense = keras.layers.Dense(self.latent_dim, name="code")
        self.quantizer = VectorQuantizer(num_embeddings, embedding_dim, update=update, decay=decay,
                                         restart_threshold=restart_threshold, name="quantizer")

    @property
    def num_embeddings(self):
        return self.quantizer.num_embeddings

    def build(self, input_shape):
        if not self.dense.built:
            self.dense.build(input_shape)
        if not self.quantizer.built:
            self.quantizer.build(None)
        self.built = True

    def call(self, h, training=False):
        z_e = tf.reshape(tf.cast(self.dense(h), tf.float32), [-1, self.positions, self.embedding_dim])
        z_q, codes = self.quantizer(z_e, training=training)
        flat = [-1, self.latent_dim]
        return tf.reshape(z_q, flat), tf.reshape(z_e, flat), tf.cast(codes, tf.float32)

    def distribution(self, params):
        return tfd.Independent(tfd.Deterministic(params[0]), reinterpreted_batch_ndims=1)

    def reparameterize(self, q, eps):
        """The quantised code itself (eps enters with weight 0 so exported graphs keep the same inputs)."""
        return q.distribution.loc + 0.0 * eps

    def codes_to_z(self, codes):
        """Flat codes z [N, latent_dim] for indices [N, positions]."""
        return tf.reshape(self.quantizer.lookup(codes), [-1, self.latent_dim])

    def get_config(self):
        q = self.quantizer
        return {**super().get_config(), "latent_dim": self.latent_dim, "num_embeddings": q.num_embeddings,
                "embedding_dim": self.embedding_dim, "update": q.update, "decay": q.decay,
                "restart_threshold": q.restart_threshold}


__all__ = ["VectorQuantizer", "VectorQuantizedPosterior", "nearest", "perplexity", "restart_picks"]
