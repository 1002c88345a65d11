r"""Ex-post density estimation (Ghosh et al. 2020): a Gaussian mixture fitted to training codes after
training, kept *inside* the model as non-trainable weights (so it saves, loads and exports with it).

p_GMM(z) = sum_k pi_k N(z; mu_k, Sigma_k), fitted by scikit-learn's ``GaussianMixture`` (full
covariances) on posterior means; ``model.sample(n, source="density")`` draws from it, while
``source="prior"`` keeps the N(0, I) (or flow) prior for comparison.
"""
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="kvae")
class GaussianMixtureDensity(keras.layers.Layer):
    """A K-component full-covariance Gaussian mixture over z, as non-trainable weights."""

    def __init__(self, latent_dim, n_components=10, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.n_components = int(latent_dim), int(n_components)

    def build(self, input_shape=None):
        k, d = self.n_components, self.latent_dim
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
        k = min(self.n_components, len(z))
        gmm = GaussianMixture(k, covariance_type="full", random_state=seed, reg_covar=1e-5).fit(z)
        weights = np.full(self.n_components, 1e-12)
        weights[:k] = gmm.weights_
        means = np.zeros((self.n_components, self.latent_dim))
        means[:k] = gmm.means_
        tril = np.tile(np.eye(self.latent_dim)[None], (self.n_components, 1, 1))
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
        k = tf.minimum(k, self.n_components - 1)
        means = tf.gather(self.means, k)
        tril = tf.gather(self.scale_tril, k)
        return means + tf.linalg.matvec(tril, eps)

    def call(self, z):
        return self.distribution().log_prob(z)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "n_components": self.n_components}
