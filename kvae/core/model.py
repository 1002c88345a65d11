r"""The base contract every kvae model shares: :class:`VariationalModel`.

A model is ``x -> encoder network -> posterior head q(z|x) -> z -> decoder network ->
likelihood head p(x|z)`` with a prior p(z), optional regularisers and an ex-post density, each a part
(:mod:`kvae.parts`, contracts in :mod:`kvae.parts.contracts`).  The class is composed of

* this module: construction, inputs (labels of conditional models, Sohn et al. 2015),
  ``encode``/``decode`` (``tfd.Distribution``), ``sample``, ``reconstruct``, the ex-post density and
  ``get_config`` for ``.keras`` files;
* :class:`~kvae.core.objective.ELBOMixin`: latent groups, :class:`~kvae.core.terms.Terms`, KL, free
  bits and the loss;
* :class:`~kvae.core.step.KerasStepMixin`: ``train_step``/``test_step`` (global-batch averaging,
  noise keyed by the optimizer step), resume batch-skipping, ``fit``;
* :class:`~kvae.core.endpoints.EndpointsMixin`: the importance-sampled ``log_likelihood`` and the
  deterministic ``*_from_noise`` endpoints that :mod:`kvae.export` serves.
"""
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from kvae.core.endpoints import EndpointsMixin
from kvae.core.inputs import labels_one_hot, labels_out_of_range, split_xy
from kvae.core.moments import posterior_mean_and_noise
from kvae.core.objective import ELBOMixin
from kvae.core.step import KerasStepMixin
from kvae.errors import ConfigError, DataError
from kvae.parts import densities, likelihoods, networks, objectives, posteriors, priors
from kvae.parts.contracts import flag
from kvae.parts.schedules import LinearWarmup

tfd = tfp.distributions

# Constructor arguments that may hold Keras objects; they are (de)serialised in the config.
_OBJECT_ARGS = ("encoder_network", "decoder_network", "posterior", "prior", "decoder", "beta", "objective", "density")


def _serialize(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return keras.saving.serialize_keras_object(value)


def _deserialize(value):
    if isinstance(value, dict) and ("class_name" in value or "module" in value):
        return keras.saving.deserialize_keras_object(value)
    return value


@keras.saving.register_keras_serializable(package="kvae")
class VariationalModel(ELBOMixin, KerasStepMixin, EndpointsMixin, keras.Model):
    """Base class of kvae models; see the module docstring for the contract.

    Args:
      input_shape: shape of one example, e.g. ``(28, 28, 1)``.
      latent_dim: dimension of z.
      network: ``"mlp"``, ``"conv"``, ``"conv4"`` (the dSprites networks of Higgins et al. and
        Kim & Mnih) or ``"resnet"`` (pythae's MNIST ResNet; ignores ``hidden``): builder for encoder
        and decoder networks.
      hidden: hidden sizes for the builder (encoder order; the decoder mirrors it).
      decoder: likelihood p(x|z): ``"bernoulli"``, ``"gaussian"``, ``"pixelcnn"`` or a likelihood layer.
      posterior: q(z|x): ``"gaussian"``, ``"iaf"`` (Gaussian + IAF steps), ``"deterministic"`` or a layer.
      prior: p(z): ``"normal"``, ``"maf"`` / ``"iaf"`` (a flow over N(0, I)) or a prior layer.
      encoder_network: a Keras layer/model replacing the builder's encoder.
      decoder_network: a Keras layer/model replacing the builder's decoder.
      num_classes: if set, the model is conditional on a label with this many classes.
      beta: KL weight, a number or a schedule of the optimizer step (``kvae.parts.schedules``).
      kl_warmup_steps: if positive, the KL weight rises linearly from 0 to ``beta`` over this many
        optimizer steps (``kvae.parts.schedules.LinearWarmup``); 0 for none.
      free_bits_per_dim: KL floor lambda in nats per latent dimension (Kingma et al. 2016): the batch
        objective is sum_d max(lambda, E_batch KL_d); 0 for none.
      free_bits_total: floor in nats on the batch-mean total KL, max(lambda, E_batch KL) (the form in
        MAE's reference code, Ma et al. 2019); 0 for none.
      regularizers: list of ``kvae.parts.regularizers.Regularizer`` layers added to the loss.
      seed: base seed of the training noise (a random one is drawn and stored if None).
      density: the ex-post density over codes (:meth:`fit_density`): ``"gmm"`` (a Gaussian mixture,
        Ghosh et al. 2020), ``"maf"`` / ``"iaf"`` (an autoregressive flow) or a layer of
        :mod:`kvae.parts.densities`.
      density_components: components of the ex-post Gaussian mixture.
      analytic_kl: use the closed-form KL when TFP has one (else a one-sample Monte-Carlo estimate).
      objective: ``"elbo"`` (the loss below) or a bound from :mod:`kvae.parts.objectives` (``"iwae"``,
        ``"miwae"``, ``"ciwae"``, ``"piwae"`` or a layer such as ``kvae.parts.objectives.IWAEBound(50)``) that
        replaces -log p(x|z) + beta KL; regularisers are still added.
      skip_nonfinite_updates: skip a training step whose gradients hold a NaN or an infinity on any replica
        (weights and optimizer moments unchanged, the step still counted; Child 2021, VDVAE); the metric
        ``skipped_updates`` counts them per epoch.  A ``LossScaleOptimizer`` (``mixed_float16``) already skips
        such steps and lowers its scale, so the model leaves them to it.  Forward-pass state is not rolled back.
    """

    def __init__(self, input_shape, latent_dim=32, network="mlp", hidden=(500, 500), decoder="bernoulli",
                 posterior="gaussian", prior="normal", encoder_network=None, decoder_network=None,
                 num_classes=None, beta=1.0, analytic_kl=True, free_bits_per_dim=0.0, free_bits_total=0.0,
                 regularizers=(), seed=None, density_components=10, kl_warmup_steps=0, objective="elbo",
                 density="gmm", skip_nonfinite_updates=False, **kwargs):
        super().__init__(**kwargs)
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        regularizers = [_deserialize(r) for r in regularizers]
        self._init_args = dict(
            input_shape=list(input_shape), latent_dim=int(latent_dim), network=network,
            hidden=[int(h) for h in hidden], decoder=decoder, posterior=posterior, prior=prior,
            encoder_network=encoder_network, decoder_network=decoder_network,
            num_classes=None if num_classes is None else int(num_classes), beta=beta,
            analytic_kl=bool(analytic_kl), free_bits_per_dim=float(free_bits_per_dim),
            free_bits_total=float(free_bits_total), regularizers=regularizers, seed=int(seed),
            density_components=int(density_components), kl_warmup_steps=int(kl_warmup_steps),
            objective=_deserialize(objective), density=_deserialize(density),
            skip_nonfinite_updates=bool(skip_nonfinite_updates))
        self.skip_nonfinite_updates = bool(skip_nonfinite_updates)
        self.data_shape = tuple(int(d) for d in input_shape)
        self.latent_dim = int(latent_dim)
        self.num_classes = None if num_classes is None else int(num_classes)
        if int(kl_warmup_steps) < 0:
            raise ConfigError(f"kl_warmup_steps must be >= 0, got {kl_warmup_steps}")
        if int(kl_warmup_steps) > 0:
            if not isinstance(beta, (int, float)):
                raise ConfigError("kl_warmup_steps needs a numeric beta (beta is already a schedule)")
            beta = LinearWarmup(target=float(beta), warmup_steps=int(kl_warmup_steps))
        self.beta = beta
        self.analytic_kl = bool(analytic_kl)
        self.free_bits_per_dim = float(free_bits_per_dim)
        self.free_bits_total = float(free_bits_total)
        if self.free_bits_per_dim < 0 or self.free_bits_total < 0:
            raise ConfigError("free bits must be >= 0")
        if self.free_bits_per_dim > 0 and self.free_bits_total > 0:
            raise ConfigError("use free_bits_per_dim or free_bits_total, not both")
        self.seed = int(seed)
        if self.latent_dim <= 0:
            raise ConfigError(f"latent_dim must be positive, got {latent_dim}")

        k = self.num_classes or 0
        encoder_input_shape = self.data_shape[:-1] + (self.data_shape[-1] + k,)
        if encoder_network is None or decoder_network is None:
            default_enc, default_dec = networks.build(network, encoder_input_shape, self.latent_dim + k, hidden)
        self.encoder_network = encoder_network if encoder_network is not None else default_enc
        self.decoder_network = decoder_network if decoder_network is not None else default_dec
        self.posterior = posteriors.get(posterior, self.latent_dim)
        if flag(self.posterior, "param_names", "posterior") is None:
            raise ConfigError(f"posterior {type(self.posterior).__name__} declares no param_names (the names of the "
                              "tensors its call returns; kvae.parts.contracts.Posterior): its encode endpoint could "
                              "not be exported")
        self.prior = priors.get(prior, self.latent_dim)
        self.likelihood = likelihoods.get(decoder, self.data_shape)
        self.regularizer_layers = list(regularizers)
        self.objective = objectives.get(self._init_args["objective"])
        if self.objective is not None:
            self.objective.check(self)
        self.density = densities.get(self._init_args["density"], self.latent_dim, int(density_components))

        # index of the batch within the current evaluation, folded into the validation noise seed
        self._eval_batch = self.add_weight(shape=(), dtype="int64", initializer="zeros", trainable=False,
                                           aggregation="only_first_replica", name="eval_batch")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.neg_elbo_tracker = keras.metrics.Mean(name="neg_elbo")
        self.rec_tracker = keras.metrics.Mean(name="rec_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.beta_tracker = keras.metrics.Mean(name="beta")
        self.reg_trackers = [keras.metrics.Mean(name=r.name) for r in self.regularizer_layers]
        self.skipped_tracker = keras.metrics.Sum(name="skipped_updates") if self.skip_nonfinite_updates else None
        self._build_parts()

    # ------------------------------------------------------------------ building
    def _build_parts(self):
        """Create every weight now (one forward pass on zeros), so the model saves and loads
        without a build step and variables are created under the caller's strategy scope."""
        x0 = tf.zeros((1,) + self.data_shape, tf.float32)
        y0 = tf.zeros((1,), tf.int32) if self.conditional else None
        q = self.encode(x0, y0)
        self.decode(tf.zeros((1, self.latent_dim)), y0)
        if hasattr(self.prior, "bind"):  # priors built from the model's own networks (the VampPrior)
            self.prior.bind(self)
        if not self.prior.built:
            self.prior.build(None)
        if not self.density.built:
            self.density.build(None)
        self.prior.distribution()
        for reg in self.regularizer_layers:
            reg.build_for(self)
        self.built = True
        return q

    @property
    def model_variables(self):
        """Trainable variables the model's optimizer updates: all but those regularisers train
        themselves (discriminators with their own optimizer)."""
        own = {id(v) for reg in self.regularizer_layers for v in reg.own_variables}
        return [v for v in self.trainable_variables if id(v) not in own]

    @property
    def has_density(self):
        """Whether q(z|x) has a density, so that the ELBO and importance sampling are defined."""
        return not flag(self.posterior, "deterministic", "posterior")

    @property
    def has_likelihood(self):
        """Whether p(x|z) is a normalised density, so that log p(x), the ELBO and the NLL are defined
        (not for a reconstruction score such as MS-SSIM)."""
        return bool(flag(self.likelihood, "normalised", "likelihood"))

    @property
    def conditional(self):
        return self.num_classes is not None

    @property
    def metrics(self):
        trackers = [self.loss_tracker, self.neg_elbo_tracker, self.rec_tracker, self.kl_tracker,
                    self.beta_tracker, *self.reg_trackers]
        return trackers + ([self.skipped_tracker] if self.skipped_tracker is not None else [])

    # ------------------------------------------------------------------ inputs
    def one_hot(self, y):
        """Labels (integers in 0..K-1 of shape [B] or [B, 1], or one-hot [B, K]) as float32 one-hot [B, K]
        (:func:`kvae.core.inputs.labels_one_hot`)."""
        return labels_one_hot(y, self.num_classes, type(self).__name__)

    def _encoder_input(self, x, y):
        x = tf.cast(x, tf.float32)
        if not self.conditional:
            return x
        y = self.one_hot(y)
        spatial = tf.shape(x)[1:-1]
        y = tf.reshape(y, tf.concat([[-1], tf.ones_like(spatial), [self.num_classes]], 0))
        y = tf.broadcast_to(y, tf.concat([tf.shape(x)[:-1], [self.num_classes]], 0))
        return tf.concat([x, y], axis=-1)

    def _split_inputs(self, inputs):
        return split_xy(inputs)

    # ------------------------------------------------------------------ parts
    def encode_params(self, x, y=None, training=False):
        """Posterior parameters (tuple of tensors) for a batch x [B, *input_shape]."""
        h = self.encoder_network(self._encoder_input(x, y), training=training)
        return self.posterior(h, training=training)

    def encode(self, x, y=None, training=False):
        """q(z|x) as a ``tfd.Distribution`` with batch shape [B] and event shape [latent_dim]."""
        return self.posterior.distribution(self.encode_params(x, y, training=training))

    def decode_params(self, z, y=None, training=False):
        """Likelihood parameters for codes z of shape [..., latent_dim] (any leading dims)."""
        z = tf.cast(tf.convert_to_tensor(z), tf.float32)
        lead = tf.shape(z)[:-1]
        code = tf.reshape(z, [-1, self.latent_dim])
        if self.conditional:
            y = self.one_hot(y)
            y = tf.broadcast_to(y, tf.concat([lead, [self.num_classes]], 0))
            code = tf.concat([code, tf.reshape(y, [-1, self.num_classes])], axis=-1)
        params = self.likelihood(self.decoder_network(code, training=training), training=training)
        return tuple(tf.reshape(p, tf.concat([lead, p.shape[1:]], 0)) for p in params)

    def decode(self, z, y=None, training=False):
        """p(x|z) as a ``tfd.Distribution`` with batch shape z.shape[:-1] and event shape input_shape."""
        return self.likelihood.distribution(self.decode_params(z, y, training=training))

    def prior_distribution(self):
        """p(z) as a ``tfd.Distribution`` with event shape [latent_dim]."""
        return self.prior.distribution()

    # ------------------------------------------------------------------ inference
    def _seed(self, seed):
        if seed is None:
            return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
        if isinstance(seed, int):
            return tf.constant([seed, 0], tf.int32)
        return tf.cast(seed, tf.int32)

    def _labels_for(self, n, labels):
        if not self.conditional:
            return None
        if labels is None:
            return tf.range(n) % self.num_classes
        labels = np.asarray(labels)
        if labels.ndim == 0:
            labels = np.full([n], int(labels))
        if labels.shape[0] != n:
            raise DataError(f"got {labels.shape[0]} labels for {n} samples")
        if labels.ndim == 1 and labels_out_of_range(labels, self.num_classes):
            raise DataError(labels_out_of_range(labels, self.num_classes))
        return labels

    @staticmethod
    def _mean_or_sample(dist, mean, seed):
        if mean:
            try:
                return dist.mean()
            except NotImplementedError:
                pass
        return dist.sample(seed=seed)

    def sample(self, n, labels=None, seed=None, mean=True, source="prior"):
        """n draws x ~ p(x|z), z ~ p(z); ``mean=True`` returns E[x|z] (pixel probabilities for a
        Bernoulli decoder) instead of a draw of x.  For conditional models ``labels`` is an int,
        a sequence of n labels, or None (cycling through the classes).  ``source="density"`` draws
        z from the ex-post Gaussian mixture instead of the prior (after :meth:`fit_density`)."""
        seed = self._seed(seed)
        s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        if source == "density":
            if not self.density.is_fitted:
                raise ConfigError("the ex-post density is not fitted: call fit_density(x) (kvae fit-density RUN_DIR)")
            if flag(self.density, "needs_component_noise", "density"):  # the Gaussian mixture
                z = self.density.distribution().sample(n, seed=s1)
            else:
                z = self.density.from_noise(tf.random.stateless_normal([n, self.latent_dim], s1))
        elif source == "prior":
            z = self.prior_distribution().sample(n, seed=s1)
        else:
            what = ("'manifold' needs a learned metric (an RHVAE: --model rhvae); " if source == "manifold" else "")
            raise ConfigError(f"{what}source must be 'prior' or 'density' for a {type(self).__name__}, got {source!r}")
        return self._mean_or_sample(self.decode(z, self._labels_for(n, labels)), mean, s2)

    def reconstruct(self, x, y=None, sample=False, seed=None, training=False):
        """E[x|z] at the posterior mean z (or at a draw of z with ``sample=True``)."""
        q = self.encode(x, y, training=training)
        z = None
        if not sample:
            try:
                z = q.mean()
            except NotImplementedError:
                z = None
        if z is None:
            z = q.sample(seed=self._seed(seed))
        return self._mean_or_sample(self.decode(z, y, training=training), True, self._seed(seed))

    def posterior_means(self, x, y=None, batch_size=500, seed=0, num_samples=256, return_noise=False):
        """E_q[z|x] for every example, as a numpy array; a Monte-Carlo mean of ``num_samples`` draws
        for posteriors without a closed form (flows), whose per-example variance is returned too
        with ``return_noise=True`` (see :func:`kvae.core.moments.posterior_mean_and_noise`)."""
        means, noises = [], []
        for start in range(0, len(x), batch_size):
            yb = None if (y is None or not self.conditional) else y[start:start + batch_size]
            q = self.encode(tf.cast(x[start:start + batch_size], tf.float32), yb)
            mean, noise = posterior_mean_and_noise(q, tf.constant([seed, start], tf.int32), num_samples)
            means.append(np.asarray(mean))
            noises.append(np.asarray(noise))
        means, noises = np.concatenate(means), np.concatenate(noises)
        return (means, noises) if return_noise else means

    def fit_density(self, x, y=None, seed=0, kind=None):
        """Fit the ex-post density (the ``density`` option: a Gaussian mixture by default, Ghosh et al.
        2020) to the posterior means of x.  ``kind`` must be the model's own: for another kind,
        ``model.with_density(kind)`` returns the same model with that density slot."""
        current = flag(self.density, "kind", "density")
        if kind is not None and kind != current:
            raise ConfigError(f"this model's ex-post density is {current!r}, not {kind!r}: use "
                              f"model = model.with_density({kind!r}) first (kvae fit-density --kind does this)")
        return self.density.fit(self.posterior_means(x, y), seed=seed)

    def with_density(self, kind):
        """A copy of this model (same weights) whose ex-post density is ``kind`` (``"gmm"``, ``"maf"``,
        ``"iaf"``) or a density layer of :mod:`kvae.parts.densities`, not yet fitted."""
        config = self.get_config()
        config["density"] = _serialize(kind)
        clone = type(self).from_config(config)

        def others(model):  # every variable but the density's, in tracking order (layer names may differ)
            skip = {id(v) for v in model.density.weights}
            return [v for v in model.weights if id(v) not in skip]

        mine, theirs = others(self), others(clone)
        if len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs)):
            raise ConfigError("with_density: the copy's variables do not match the model's")
        for source, target in zip(mine, theirs):
            target.assign(source)
        return clone

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable}
        for key, value in self._init_args.items():
            if key == "regularizers":
                config[key] = [_serialize(r) for r in value]
            elif key in _OBJECT_ARGS:
                config[key] = _serialize(value)
            else:
                config[key] = value
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "free_bits" in config:  # files written before free bits had two named forms
            config["free_bits_per_dim"] = config.pop("free_bits")
        for key in _OBJECT_ARGS:
            if key in config:
                config[key] = _deserialize(config[key])
        return cls(**config)
