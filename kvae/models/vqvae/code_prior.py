r"""A PixelCNN prior over a VQ-VAE's code indices (van den Oord et al. 2017, Sec. 3.3 / 4).

The codes of an image form a grid k [H, W] of indices in 0..K-1.  The prior is autoregressive in
raster order,  p(k) = prod_i Categorical(k_i; softmax(l_i(k_<i))),  its logits l computed by a
:class:`kvae.nn.pixelcnn.PixelCNNNetwork` on the one-hot grid (masked convolutions).  The
network's last layer starts at zero, so before :meth:`PixelCNNCodePrior.fit` every logit is 0 and
the prior is the uniform one the VQ-VAE trains under: log p(k) = -H W log K.  It is fitted after the
autoencoder, on the codes of the training images (``model.fit_prior`` / ``kvae fit-prior``).

Sampling takes explicit noise, so the exported ``sample`` endpoint is deterministic given its
inputs (an ONNX ``Loop``): the prior's noise is the model's standard-normal eps [N, latent_dim],
whose first H W columns become uniforms u = Phi(eps) (Phi the normal CDF), and position i takes
the index k_i = #{j : F_i(j) < u_i} (inverse CDF of the categorical, F_i the cumulative
probabilities), in raster order.
"""
import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from kvae.errors import ConfigError, DataError
from kvae.nn.pixelcnn import PixelCNNNetwork
from kvae.parts.densities import fit_adam, held_out_split
from kvae.parts.contracts import Prior

tfd = tfp.distributions


def normal_cdf(x):
    """Phi(x) = (1 + erf(x / sqrt 2)) / 2 (ONNX has Erf)."""
    return 0.5 * (1.0 + tf.math.erf(tf.cast(x, tf.float32) / math.sqrt(2.0)))


def one_hot(codes, depth):
    """float32 one-hot of int codes [...] -> [..., depth], by comparison (exports to ONNX at any rank)."""
    return tf.cast(tf.equal(tf.cast(codes, tf.int32)[..., None], tf.range(depth, dtype=tf.int32)), tf.float32)


def inverse_cdf_index(logits, u):
    """k = #{j : F(j) < u} for categorical logits [..., K] and uniforms u [...] (clipped to K - 1)."""
    cdf = tf.cumsum(tf.nn.softmax(logits, axis=-1), axis=-1)
    k = tf.reduce_sum(tf.cast(cdf < u[..., None], tf.int32), axis=-1)
    return tf.minimum(k, tf.shape(logits)[-1] - 1)


@keras.saving.register_keras_serializable(package="kvae")
class PixelCNNCodePrior(Prior):
    """p(k) over index grids [H, W] with K values (see the module docstring).

    Args:
      grid: (H, W), the code grid; H W = the posterior's number of code positions.
      num_embeddings: K.
      num_layers: the PixelCNN's number of masked layers.
      kernel_size: the PixelCNN's kernel size.
      filters: the PixelCNN's number of filters.
      epochs: :meth:`fit`'s default number of epochs.
      batch_size: :meth:`fit`'s default batch size.
      lr: :meth:`fit`'s default learning rate (Adam).
    """

    needs_component_noise = False

    def __init__(self, grid=(4, 4), num_embeddings=64, num_layers=4, kernel_size=3, filters=32, epochs=20,
                 batch_size=100, lr=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.grid = tuple(int(g) for g in grid)
        self.num_embeddings = int(num_embeddings)
        self.num_layers, self.kernel_size, self.filters = int(num_layers), int(kernel_size), int(filters)
        self.epochs, self.batch_size, self.lr = int(epochs), int(batch_size), float(lr)
        self.network = PixelCNNNetwork(channels=self.num_embeddings, num_layers=self.num_layers,
                                       kernel_size=self.kernel_size, filters=self.filters,
                                       head_initializer="zeros", name="pixelcnn")
        self.network.trainable = self.trainable  # deserialised with trainable=False: so is the network
        self._codes_to_z = None

    @property
    def positions(self):
        return self.grid[0] * self.grid[1]

    def build(self, input_shape=None):
        h, w = self.grid
        if not self.network.built:
            self.network.build((None, h, w, self.num_embeddings), (None, h, w, 1))
        self.fitted = self.add_weight(shape=(), initializer="zeros", trainable=False, name="fitted")
        self.trainable = False  # only fit() trains it, never the autoencoder's optimizer
        self.built = True

    def bind(self, model):
        """Take the model's code-to-vector map (its quantiser's codebook); a bound method, not a sub-layer."""
        posterior = model.posterior
        if not hasattr(posterior, "codes_to_z"):
            raise ConfigError("the PixelCNN code prior needs a vector-quantised posterior")
        if posterior.positions != self.positions or posterior.num_embeddings != self.num_embeddings:
            raise ConfigError(f"the code prior's grid {self.grid} x {self.num_embeddings} values does not match the "
                              f"posterior's {posterior.positions} positions x {posterior.num_embeddings} entries")
        self._codes_to_z = posterior.codes_to_z

    @property
    def is_fitted(self):
        return bool(self.fitted.numpy() > 0)

    # -- density
    def logits(self, codes):
        """Logits [N, H, W, K] of every position given the codes before it, codes [N, H W] (int)."""
        h, w = self.grid
        onehot = one_hot(tf.reshape(codes, [-1, h, w]), self.num_embeddings)
        return self.network(onehot, tf.zeros_like(onehot[..., :1]))

    def log_prob_codes(self, codes):
        """log p(k) [N] for index maps [N, H W]."""
        logp = tf.nn.log_softmax(self.logits(codes), axis=-1)
        chosen = one_hot(tf.reshape(codes, tf.shape(logp)[:-1]), self.num_embeddings)
        return tf.reduce_sum(logp * chosen, axis=[1, 2, 3])

    def distribution(self):
        """The prior the autoencoder trains under, uniform over the K^(H W) index maps (a
        ``tfd.Distribution`` over codes, not over z); :meth:`log_prob_codes` is the fitted PixelCNN."""
        return tfd.Independent(tfd.Categorical(logits=tf.zeros([self.positions, self.num_embeddings])), 1)

    # -- sampling
    def sample_codes(self, uniform):
        """Index maps [N, H W] (int32) drawn in raster order with explicit uniforms [N, H W]."""
        h, w = self.grid
        uniform = tf.convert_to_tensor(uniform, tf.float32)
        n = tf.shape(uniform)[0]
        p, k = self.positions, self.num_embeddings

        def body(i, codes):
            logits = tf.reshape(self.logits(codes), [n, p, k])[:, i]
            new = inverse_cdf_index(logits, uniform[:, i])
            where = tf.cast(tf.equal(tf.range(p), i), tf.int32)[None, :]
            return i + 1, codes + where * new[:, None]

        _, codes = tf.while_loop(lambda i, c: i < p, body, [tf.constant(0), tf.zeros([n, p], tf.int32)])
        return codes

    def from_noise(self, eps):
        """Flat codes z [N, latent_dim] for standard-normal noise eps [N, latent_dim]: the index map drawn
        with uniforms Phi(eps[:, :H W]), looked up in the bound model's codebook."""
        if self._codes_to_z is None:
            raise ConfigError("the code prior is not bound to a model (model.prior.bind(model))")
        codes = self.sample_codes(normal_cdf(tf.convert_to_tensor(eps, tf.float32)[:, :self.positions]))
        return self._codes_to_z(codes)

    # -- fitting
    def fit(self, codes, seed=0, epochs=None, batch_size=None, lr=None, verbose=False):
        """Maximum likelihood on index maps [N, H W] (Adam) on 90 %, the rest held out; returns the mean
        -log p(k) in nats per map on both ({"train_nll", "heldout_nll", "uniform_nll"})."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.positions:
            raise DataError(f"codes must have shape [N, {self.positions}], got {list(codes.shape)}")
        if len(codes) < 10:
            raise DataError(f"fitting the code prior needs at least 10 index maps, got {len(codes)}")
        if codes.min() < 0 or codes.max() >= self.num_embeddings:
            raise DataError(f"codes must be in 0..{self.num_embeddings - 1}, got {codes.min()}..{codes.max()}")
        codes = codes.astype(np.int32)
        epochs = self.epochs if epochs is None else int(epochs)
        batch_size = self.batch_size if batch_size is None else int(batch_size)
        train, heldout = held_out_split(codes, seed)
        fit_adam(self, train, lambda batch, s: -tf.reduce_mean(self.log_prob_codes(batch)), seed=seed, epochs=epochs,
                 batch_size=batch_size, lr=self.lr if lr is None else float(lr), verbose=verbose,
                 progress="code prior epoch {epoch}/{epochs}: -log p(k) {loss:.3f} nats")
        self.fitted.assign(1.0)

        def nll(maps):
            return float(-np.mean(np.concatenate([self.log_prob_codes(maps[i:i + 1000]).numpy()
                                                  for i in range(0, len(maps), 1000)])))

        return {"train_nll": nll(train[:5000]), "heldout_nll": nll(heldout),
                "uniform_nll": float(self.positions * np.log(self.num_embeddings))}

    def get_config(self):
        return {**super().get_config(), "grid": list(self.grid), "num_embeddings": self.num_embeddings,
                "num_layers": self.num_layers, "kernel_size": self.kernel_size, "filters": self.filters,
                "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}


class CodeDistribution:
    """p(z) of a VQ-VAE as a distribution over the flat code z [latent_dim]: z = (e_k1, ..., e_kP) with
    the index map k ~ the code prior, so log p(z) = log p(k(z)) (k(z): the nearest entries, i.e. z's own
    indices when z is on the codebook) and ``sample(n, seed)`` draws k and looks it up.  It has no
    density on R^latent_dim (a distribution over K^P points); it offers ``log_prob``, ``sample`` and
    ``event_shape``, what the model's methods ask of a prior."""

    def __init__(self, prior, posterior):
        self.prior, self.posterior = prior, posterior
        self.event_shape = tf.TensorShape([posterior.latent_dim])

    def log_prob(self, z):
        z = tf.convert_to_tensor(z, tf.float32)
        lead = tf.shape(z)[:-1]
        codes = self.posterior.quantizer.codes(tf.reshape(z, [-1, self.posterior.positions,
                                                              self.posterior.embedding_dim]))
        return tf.reshape(self.prior.log_prob_codes(codes), lead)

    def sample(self, n, seed=None):
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32) if seed is None else seed
        return self.prior.from_noise(tf.random.stateless_normal([int(n), self.posterior.latent_dim], seed))
