"""Riemannian Hamiltonian VAE (Chadebec et al. 2020; pythae's RHVAE) and its manifold sampler: the
base model with the bound of :mod:`kvae.models.rhvae.riemannian` as its objective (any other model takes
``objective="rhvae"`` or a :class:`kvae.models.rhvae.riemannian.RiemannianHamiltonianBound` layer)."""
import keras
import numpy as np
import tensorflow as tf

from kvae.core.inputs import split_xy
from kvae.errors import ConfigError
from kvae.models.rhvae.riemannian import RiemannianHamiltonianBound, _log_det, hmc
from kvae.models.iwae import _Bound


def _some_examples(x, y, n):
    """The training arrays (fit_metric takes a seeded subset), or the first n examples (and labels) of
    a dataset of x, (x,) or (x, y) batches."""
    x, y = split_xy(x, y)
    if isinstance(x, np.ndarray):
        return x, (None if y is None else np.asarray(y))
    if isinstance(x, tf.data.Dataset):
        xs, ys, count = [], [], 0
        for batch in x:
            if isinstance(batch, (tuple, list)):
                xs.append(np.asarray(batch[0]))
                if len(batch) > 1 and not isinstance(batch[1], dict):
                    ys.append(np.asarray(batch[1]))
            else:
                xs.append(np.asarray(batch))
            count += len(xs[-1])
            if count >= n:
                break
        if not xs:
            return None
        return np.concatenate(xs)[:n], (np.concatenate(ys)[:n] if len(ys) == len(xs) else None)
    return None


@keras.saving.register_keras_serializable(package="kvae")
class RHVAE(_Bound):
    """RHVAE: loss = -(log p(x, z_K) + log N(rho_K; 0, G(z_K)) - log q(z_0|x) - log N(gamma) - 1/2 log det G^{-1}(z_0)),
    z_K and rho_K from K tempered generalised leapfrog steps under the learned metric
    G^{-1}(z) = sum_i L(x_i) L(x_i)^T exp(-|z - mu(x_i)|^2 / T^2) + lambda I.  ``fit`` ends by
    storing the metric of up to ``metric_points`` training examples (:meth:`fit_metric`), which
    ``sample(n, source="manifold")`` explores by Hamiltonian Monte Carlo.

    Args:
      num_leapfrog: generalised leapfrog steps K (3, as pythae).
      step_size: leapfrog step size (0.001, as pythae).
      beta_zero: initial inverse temperature beta_0 in (0, 1] (0.3).
      temperature: the metric's temperature T (1.5, as pythae).
      regularization: the metric's lambda (0.01, as pythae).
      fixed_point_steps: fixed-point iterations of each implicit leapfrog step (3, as pythae).
      metric_hidden: the metric network's hidden layers (one of 400, as pythae).
      metric_points: training examples whose (mu, L) the stored metric keeps (2000).
    """

    def __init__(self, input_shape, num_leapfrog=3, step_size=0.001, beta_zero=0.3, temperature=1.5,
                 regularization=0.01, fixed_point_steps=3, metric_hidden=(400,), metric_points=2000,
                 objective=None, **kwargs):
        options = dict(num_leapfrog=int(num_leapfrog), step_size=float(step_size), beta_zero=float(beta_zero),
                       temperature=float(temperature), regularization=float(regularization),
                       fixed_point_steps=int(fixed_point_steps),
                       metric_hidden=[int(h) for h in metric_hidden], metric_points=int(metric_points))
        objective = objective or RiemannianHamiltonianBound(**options)
        super().__init__(input_shape, objective=objective, **kwargs)
        self._init_args.update(options)

    def fit(self, x=None, y=None, *args, **kwargs):
        """``keras.Model.fit``, then :meth:`fit_metric` on (up to ``metric_points`` of) the training data."""
        history = super().fit(x, y, *args, **kwargs)
        some = _some_examples(x, y, self.objective.metric_points)
        if some is not None:
            self.fit_metric(*some)
        return history

    def fit_metric(self, x, y=None, seed=0):
        """Store mu(x_i) and L(x_i) of up to ``metric_points`` examples of x: the metric after training."""
        return self.objective.fit_metric(self, x, y, seed=seed)

    def manifold_codes(self, n, seed=None, mcmc_steps=100, num_leapfrog=15, step_size=0.03):
        """n codes by HMC on pi(z) ∝ sqrt(det G^{-1}(z)) under the stored metric, from random stored
        centroids (pythae's RHVAESampler defaults: 100 transitions of 15 leapfrog steps of 0.03)."""
        centroids, factors = self.objective.stored_metric()
        metric_inv = self.objective.metric_inverse_fn(centroids, factors)
        s = tf.unstack(tf.random.experimental.stateless_split(self._seed(seed), 3))
        start = tf.random.stateless_uniform([n], s[0], maxval=tf.shape(centroids)[0], dtype=tf.int32)
        momenta = tf.random.stateless_normal([mcmc_steps, n, self.latent_dim], s[1])
        uniforms = tf.random.stateless_uniform([mcmc_steps, n], s[2])

        @tf.function
        def run(z0, momenta, uniforms):
            return hmc(lambda z: 0.5 * _log_det(metric_inv(z))[0], z0, momenta, uniforms, step_size, num_leapfrog)

        z, _ = run(tf.gather(centroids, start), momenta, uniforms)
        return z

    def sample(self, n, labels=None, seed=None, mean=True, source="prior"):
        """As :meth:`VariationalModel.sample`; ``source="manifold"`` draws z by :meth:`manifold_codes`."""
        if source != "manifold":
            return super().sample(n, labels=labels, seed=seed, mean=mean, source=source)
        if self.conditional and labels is None:
            raise ConfigError("a conditional RHVAE's manifold samples need labels")
        seed = self._seed(seed)
        s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        z = self.manifold_codes(n, s1)
        return self._mean_or_sample(self.decode(z, self._labels_for(n, labels)), mean, s2)
