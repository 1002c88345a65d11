r"""Ex-post density estimation: a density over z fitted to the posterior means of the training data
after training (Ghosh et al. 2020's ex-post GMM; pythae's samplers), kept *inside* the model as
non-trainable weights, so it saves, loads and exports with it.  ``model.sample(n, source="density")``
draws from it, while ``source="prior"`` keeps the prior for comparison.

Kinds (the model's ``density`` option, :func:`get`):

* ``"gmm"``: p(z) = sum_k pi_k N(z; mu_k, Sigma_k), scikit-learn's ``GaussianMixture`` (full
  covariances), :class:`GaussianMixtureDensity`;
* ``"maf"`` / ``"iaf"``: a masked (Papamakarios et al. 2017) or inverse (Kingma et al. 2016)
  autoregressive flow over the standardised codes, fitted by maximum likelihood,
  :class:`FlowDensity` (pythae's MAF and IAF samplers);
* ``"two-stage"``: a second VAE on the codes (Dai & Wipf 2019), :class:`TwoStageDensity`.

Densities fitted by gradient descent (and the VQ-VAE's code prior) share :func:`held_out_split` (90 % to
fit, 10 % held out) and :func:`fit_adam` (the Adam loop).

Contract: ``fit(z, seed)``, ``is_fitted``, ``log_prob(z)`` (exact, or for the two-stage VAE an
importance-sampled bound), ``from_noise(eps, component_uniform)`` (a draw from explicit noise, for the exported
``sample_density`` endpoint) and ``needs_component_noise`` (whether ``component_uniform`` is used).
"""
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from kvae import registry
from kvae.errors import ConfigError, DataError
from kvae.parts.contracts import Density

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="kvae")
class GaussianMixtureDensity(Density):
    """A K-component (``num_components``) full-covariance Gaussian mixture over z, as non-trainable
    weights.  kvae 0.1 called the argument ``n_components``: configs with that key still load, and
    ``n_components`` stays readable."""

    kind = "gmm"
    needs_component_noise = True

    def __init__(self, latent_dim, num_components=10, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.num_components = int(latent_dim), int(num_components)

    @property
    def n_components(self):
        """``num_components`` under its kvae 0.1 name."""
        return self.num_components

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "n_components" in config:  # written by kvae 0.1
            config["num_components"] = config.pop("n_components")
        return super().from_config(config)

    def build(self, input_shape=None):
        k, d = self.num_components, self.latent_dim
        self.logits = self.add_weight(shape=(k,), initializer="zeros", trainable=False, name="logits")
        self.means = self.add_weight(shape=(k, d), initializer="zeros", trainable=False, name="means")
        eye = np.tile(np.eye(d, dtype=np.float32)[None], (k, 1, 1))
        self.scale_tril = self.add_weight(shape=(k, d, d), initializer=keras.initializers.Constant(eye),
                                          trainable=False, name="scale_tril")
        self.fitted = self.add_weight(shape=(), initializer="zeros", trainable=False, name="fitted")
        self.built = True

    @property
    def is_fitted(self):
        return bool(self.fitted.numpy() > 0)

    def fit(self, z, seed=0):
        """Fit to codes z [N, latent_dim] with scikit-learn and store the result in the weights."""
        from sklearn.mixture import GaussianMixture

        z = np.asarray(z, np.float64)
        k = min(self.num_components, len(z))
        gmm = GaussianMixture(k, covariance_type="full", random_state=seed, reg_covar=1e-5).fit(z)
        weights = np.full(self.num_components, 1e-12)
        weights[:k] = gmm.weights_
        means = np.zeros((self.num_components, self.latent_dim))
        means[:k] = gmm.means_
        tril = np.tile(np.eye(self.latent_dim)[None], (self.num_components, 1, 1))
        tril[:k] = np.linalg.cholesky(gmm.covariances_)
        self.logits.assign(np.log(weights).astype(np.float32))
        self.means.assign(means.astype(np.float32))
        self.scale_tril.assign(tril.astype(np.float32))
        self.fitted.assign(1.0)
        return gmm

    def distribution(self):
        return tfd.MixtureSameFamily(tfd.Categorical(logits=self.logits),
                                     tfd.MultivariateNormalTriL(self.means, self.scale_tril))

    def from_noise(self, eps, component_uniform):
        """A draw of the mixture from explicit noise: component k = #{j : u > cdf_j} for u ~ U(0, 1),
        then z = mu_k + L_k eps with eps ~ N(0, I) (deterministic given its inputs; exportable)."""
        eps = tf.convert_to_tensor(eps, tf.float32)
        cdf = tf.cumsum(tf.nn.softmax(self.logits))
        u = tf.convert_to_tensor(component_uniform, tf.float32)
        k = tf.reduce_sum(tf.cast(u[:, None] > cdf[None, :], tf.int32), axis=-1)
        k = tf.minimum(k, self.num_components - 1)
        means = tf.gather(self.means, k)
        tril = tf.gather(self.scale_tril, k)
        return means + tf.linalg.matvec(tril, eps)

    def log_prob(self, z):
        """log p(z) [N] of codes z [N, latent_dim]."""
        return self.distribution().log_prob(tf.convert_to_tensor(z, tf.float32))

    def call(self, z):
        return self.distribution().log_prob(z)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "num_components": self.num_components}


def held_out_split(data, seed=0):
    """``(train, heldout)``: the rows of ``data`` in a permutation seeded by ``seed``, the first tenth (at
    least one row) held out: the split every auxiliary density is fitted and scored on."""
    order = np.random.RandomState(seed).permutation(len(data))
    held = max(1, len(data) // 10)
    return data[order[held:]], data[order[:held]]


def fit_adam(layer, train, loss, seed=0, epochs=1, batch_size=256, lr=1e-3, verbose=False,
             progress="epoch {epoch}/{epochs}: loss {loss:.3f}", set_trainable=None):
    """Fit an auxiliary density ``layer`` (a layer the model's own optimizer never trains) by Adam with
    learning rate ``lr``: ``epochs`` passes over ``train`` in batches of ``batch_size``, shuffled with
    ``seed``, each step minimising the scalar ``loss(batch, step_seed)`` (``step_seed``: the int32 pair
    (seed, step number), for losses that draw noise).  The layer's weights are trainable only during
    the fit (``set_trainable(True/False)``; default: ``layer.trainable``).  With ``verbose`` it prints
    ``progress`` (a format string of ``epoch``, ``epochs`` and ``loss``, the epoch's mean) per epoch."""
    if set_trainable is None:
        def set_trainable(value):
            layer.trainable = value

    set_trainable(True)
    try:
        variables = layer.trainable_variables
        optimizer = keras.optimizers.Adam(lr)

        @tf.function
        def step(batch, s):
            with tf.GradientTape() as tape:
                value = loss(batch, s)
            optimizer.apply_gradients(zip(tape.gradient(value, variables), variables))
            return value

        data = tf.data.Dataset.from_tensor_slices(train).shuffle(len(train), seed=seed).batch(batch_size)
        count = 0
        for epoch in range(epochs):
            losses = []
            for batch in data:
                losses.append(float(step(batch, tf.constant([seed, count], tf.int32))))
                count += 1
            if verbose:
                print(progress.format(epoch=epoch + 1, epochs=epochs, loss=np.mean(losses)), flush=True)
    finally:
        set_trainable(False)


class TrainedDensity(Density):
    """Shared machinery of the densities fitted by gradient descent on standardised codes
    u = (z - m) / s: the non-trainable ``shift`` m, ``scale`` s and ``fitted`` weights, the 90/10
    split (:func:`held_out_split`), the Adam loop over ``epochs`` of ``batch_size`` codes
    (:func:`fit_adam`), and trainable parts that train only inside :meth:`fit` (the model's optimizer
    never sees them).  Subclasses define
    ``_parts()`` (their sublayers), ``_extra_weights()``, ``_loss(u, seed)`` and ``log_prob(z)``."""

    needs_component_noise = False

    def __init__(self, latent_dim, epochs=50, batch_size=256, lr=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.epochs, self.batch_size, self.lr = int(epochs), int(batch_size), float(lr)

    def _parts(self):
        return []

    def _extra_weights(self):
        pass

    def build(self, input_shape=None):
        d = self.latent_dim
        for part in self._parts():
            if not part.built:
                part.build(None if not isinstance(part, keras.Sequential) else (None, d))
        self._extra_weights()
        self.shift = self.add_weight(shape=(d,), initializer="zeros", trainable=False, name="shift")
        self.scale = self.add_weight(shape=(d,), initializer="ones", trainable=False, name="scale")
        self.fitted = self.add_weight(shape=(), initializer="zeros", trainable=False, name="fitted")
        self.built = True
        self._set_trainable(False)

    def _set_trainable(self, value):
        """Set on the nested parts too: a layer deserialised with ``trainable=False`` does not pass it
        to the parts it creates afterwards."""
        self.trainable = value
        for part in self._parts():
            part.trainable = value

    @property
    def is_fitted(self):
        return bool(self.fitted.numpy() > 0)

    def _standardise(self, z):
        return (tf.convert_to_tensor(z, tf.float32) - self.shift) / self.scale

    def fit(self, z, seed=0, verbose=False):
        """Minimise ``_loss`` on 90% of the codes z [N, latent_dim]; returns {"train_log_prob",
        "heldout_log_prob"} (mean log p(z) per dimension on the training codes and the other 10%)."""
        z = np.asarray(z, np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise DataError(f"codes must have shape [N, {self.latent_dim}], got {list(z.shape)}")
        if len(z) < 10:
            raise DataError(f"fitting {type(self).__name__} needs at least 10 codes, got {len(z)}")
        train, heldout = held_out_split(z, seed)
        self.shift.assign(train.mean(axis=0))
        self.scale.assign(np.maximum(train.std(axis=0), 1e-3))
        fit_adam(self, train, lambda batch, s: tf.reduce_mean(self._loss(self._standardise(batch), s)), seed=seed,
                 epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, verbose=verbose,
                 progress=f"{type(self).__name__} epoch {{epoch}}/{{epochs}}: loss {{loss:.3f}}",
                 set_trainable=self._set_trainable)
        self.fitted.assign(1.0)

        def mean_log_prob(codes):
            return float(np.mean(self.log_prob(codes).numpy()) / self.latent_dim)

        return {"train_log_prob": mean_log_prob(train[:2000]), "heldout_log_prob": mean_log_prob(heldout)}

    def call(self, z):
        return self.log_prob(z)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "epochs": self.epochs,
                "batch_size": self.batch_size, "lr": self.lr}


def _standard_normal(d):
    return tfd.Independent(tfd.Normal(tf.zeros([d]), 1.0), reinterpreted_batch_ndims=1)


@keras.saving.register_keras_serializable(package="kvae")
class FlowDensity(TrainedDensity):
    r"""An autoregressive flow over standardised codes: z = m + s * f(eps), eps ~ N(0, I), with m, s
    the codes' mean and standard deviation and f ``num_steps`` MADE-driven affine steps (``kind``
    ``"maf"``: density in one pass per step, sampling sequential; ``"iaf"``: the reverse), so
    log p(z) = log N(f^{-1}((z - m)/s)) + log|det d f^{-1}/du| - sum_d log s_d, fitted by maximum
    likelihood (:class:`TrainedDensity`: Adam, ``epochs``, ``batch_size``, ``lr``).
    """

    def __init__(self, latent_dim, kind="maf", num_steps=4, hidden_units=(256, 256), **kwargs):
        super().__init__(latent_dim, **kwargs)
        if kind not in ("maf", "iaf"):
            raise ConfigError(f"kind must be 'maf' or 'iaf', got {kind!r}")
        self.kind, self.num_steps = kind, int(num_steps)
        self.hidden_units = [int(h) for h in hidden_units]
        from kvae.parts.priors import FlowPrior

        self.flow = FlowPrior(self.latent_dim, num_steps=self.num_steps, hidden_units=self.hidden_units, kind=kind,
                              name="flow")

    def _parts(self):
        return [self.flow]

    def bijector(self):
        import tensorflow_probability as tfp

        tfb = tfp.bijectors
        return tfb.Chain([tfb.Shift(tf.convert_to_tensor(self.shift)), tfb.Scale(tf.convert_to_tensor(self.scale)),
                          self.flow.bijector()])

    def distribution(self):
        return tfd.TransformedDistribution(_standard_normal(self.latent_dim), self.bijector())

    def from_noise(self, eps, component_uniform=None):
        """z = m + s * f(eps) from standard-normal noise eps [N, latent_dim]."""
        return self.bijector().forward(tf.convert_to_tensor(eps, tf.float32))

    def _loss(self, u, seed):
        return -self.flow.distribution().log_prob(u)  # the constant sum log s does not move the optimum

    def log_prob(self, z):
        """log p(z) [N] of codes z [N, latent_dim]."""
        return self.distribution().log_prob(tf.convert_to_tensor(z, tf.float32))

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "num_steps": self.num_steps,
                "hidden_units": self.hidden_units}


@keras.saving.register_keras_serializable(package="kvae")
class TwoStageDensity(TrainedDensity):
    r"""The two-stage VAE's second stage (Dai & Wipf 2019, "Diagnosing and enhancing VAE models"): a
    VAE fitted to the standardised codes u = (z - m) / s of the first model, with a latent v of the
    same dimension, q(v|u) = N(mu(u), diag sigma(u)^2), p(v) = N(0, I) and p(u|v) = N(g(v), gamma I)
    with one learned gamma (the paper's; it shrinks as the second stage fits the codes).  Samples
    are z = m + s g(v), v ~ N(0, I) (the decoder mean, as the paper samples); log p(z) is the
    importance-sampled bound log (1/k) sum_i p(u, v_i) / q(v_i|u) - sum_d log s_d (``log_prob``).

    Trained by its ELBO (:class:`TrainedDensity`: Adam, ``epochs``, ``batch_size``, ``lr``); its MLPs
    have ``hidden_units`` (the paper: 3 x 1024 with a skip connection; here 2 x 256 by default).
    """

    kind = "two-stage"

    def __init__(self, latent_dim, hidden_units=(256, 256), **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.hidden_units = [int(h) for h in hidden_units]
        d = self.latent_dim

        def mlp(out, name):
            return keras.Sequential([keras.Input((d,))] + [keras.layers.Dense(h, activation="relu")
                                                           for h in self.hidden_units]
                                    + [keras.layers.Dense(out)], name=name)

        self.encoder, self.decoder = mlp(2 * d, "second_encoder"), mlp(d, "second_decoder")

    def _parts(self):
        return [self.encoder, self.decoder]

    def _extra_weights(self):
        self.log_gamma = self.add_weight(shape=(), initializer="zeros", name="log_gamma")

    def _posterior(self, u):
        params = self.encoder(u)
        loc, raw = params[..., :self.latent_dim], params[..., self.latent_dim:]
        return tfd.Independent(tfd.Normal(loc, tf.nn.softplus(raw) + 1e-4), reinterpreted_batch_ndims=1)

    def _decode(self, v):
        """g(v) for v [..., latent_dim] (any leading dimensions)."""
        flat = self.decoder(tf.reshape(v, [-1, self.latent_dim]))
        return tf.reshape(flat, tf.shape(v))

    def _log_weights(self, u, eps):
        """log p(u, v) - log q(v|u) at v = mu(u) + sigma(u) eps, eps [..., N, latent_dim]."""
        q = self._posterior(u)
        v = q.mean() + q.stddev() * eps
        scale = tf.exp(0.5 * tf.convert_to_tensor(self.log_gamma)) * tf.ones([self.latent_dim])
        likelihood = tfd.Independent(tfd.Normal(self._decode(v), scale), reinterpreted_batch_ndims=1)
        return likelihood.log_prob(u) + _standard_normal(self.latent_dim).log_prob(v) - q.log_prob(v)

    def _loss(self, u, seed):
        return -self._log_weights(u, tf.random.stateless_normal(tf.shape(u), seed))  # the negative ELBO

    def log_prob(self, z, k=100, seed=0):
        """Importance-sampled log p(z) [N] with k draws of v ~ q(v|u) per code (a lower bound)."""
        u = self._standardise(z)
        log_w = self._log_weights(u, tf.random.stateless_normal(tf.concat([[k], tf.shape(u)], 0), [seed, 17]))
        return (tf.reduce_logsumexp(log_w, axis=0) - tf.math.log(float(k))
                - tf.reduce_sum(tf.math.log(tf.convert_to_tensor(self.scale))))

    def from_noise(self, eps, component_uniform=None):
        """z = m + s g(eps) for standard-normal eps [N, latent_dim] (the second decoder's mean)."""
        return self.shift + self.scale * self._decode(tf.convert_to_tensor(eps, tf.float32))

    def fit(self, z, seed=0, verbose=False):
        """As :meth:`TrainedDensity.fit` (log p(z) by the bound with k = 100), plus the learned ``gamma``."""
        info = super().fit(z, seed=seed, verbose=verbose)
        return {**info, "gamma": float(np.exp(self.log_gamma.numpy()))}

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units}


def maf_density(latent_dim, components=None, name="density"):
    """``density="maf"``: a masked autoregressive flow (``components`` is not used)."""
    return FlowDensity(latent_dim, kind="maf", name=name)


def iaf_density(latent_dim, components=None, name="density"):
    """``density="iaf"``: an inverse autoregressive flow (``components`` is not used)."""
    return FlowDensity(latent_dim, kind="iaf", name=name)


def two_stage_density(latent_dim, components=None, name="density"):
    """``density="two-stage"``: a second-stage VAE (``components`` is not used)."""
    return TwoStageDensity(latent_dim, name=name)


#: the built-in ex-post density kinds (the model's ``density`` option): the registry table's, in its order
#: the densities ``fit_density`` can fit (the registry's built-in names but "none")
KINDS = tuple(k for k in registry.TABLE["density"] if k != "none")


def get(kind, latent_dim, components=10, name="density"):
    """The density layer for a kind name (``factory(latent_dim, components, name=name)`` of the registry's
    "density" entry) or a density layer, returned as is."""
    if isinstance(kind, keras.layers.Layer):
        return kind
    from kvae.errors import ConfigError

    try:
        factory = registry.get("density", kind)
    except ConfigError:
        raise ConfigError(f"density must be one of {', '.join(registry.names('density'))} or a density layer, "
                          f"got {kind!r}") from None
    return factory(latent_dim, components, name=name)
