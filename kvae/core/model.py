r"""The base contract every kvae model shares: :class:`VariationalModel`.

A model is ``x -> encoder network -> posterior head q(z|x) -> z -> decoder network ->
likelihood head p(x|z)`` with a prior p(z) and optional regularisers.  The base class owns

* the evidence lower bound (Kingma & Welling 2013)
  :math:`\mathrm{ELBO}(x) = \mathbb{E}_{q(z|x)}[\log p(x|z)] - \mathrm{KL}(q(z|x)\,\|\,p(z))`,
  with the KL in closed form when TFP has it and a one-sample Monte-Carlo estimate
  :math:`\log q(z|x) - \log p(z)` otherwise;
* the training objective ``-E_q[log p(x|z)] + beta * KL + sum(regularisers)``, averaged over the
  *global* batch so that N replicas apply the same update as one device;
* the importance-weighted bound (Burda et al. 2016)
  :math:`\log p(x) \ge \log \frac1k \sum_i p(x, z_i)/q(z_i|x)`, batched over samples;
* ``encode``/``decode`` (``tfd.Distribution``), ``sample``, ``reconstruct``, ``train_step``,
  ``test_step``, input checks in ``fit``, and ``get_config`` for ``.keras`` files.

Conditional models (``num_classes`` set) see the one-hot label as extra input channels in the
encoder and appended to z in the decoder (Sohn et al. 2015).
"""
import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from kvae.parts import likelihoods, networks, posteriors, priors
from kvae.errors import ConfigError, DataError
from kvae.parts.schedules import beta_value

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
class VariationalModel(keras.Model):
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
      encoder_network, decoder_network: Keras layers/models replacing the builder's.
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
    """

    def __init__(self, input_shape, latent_dim=32, network="mlp", hidden=(500, 500), decoder="bernoulli",
                 posterior="gaussian", prior="normal", encoder_network=None, decoder_network=None,
                 num_classes=None, beta=1.0, analytic_kl=True, free_bits_per_dim=0.0, free_bits_total=0.0,
                 regularizers=(), seed=None, density_components=10, kl_warmup_steps=0, objective="elbo",
                 density="gmm", **kwargs):
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
        )
        self.data_shape = tuple(int(d) for d in input_shape)
        self.latent_dim = int(latent_dim)
        self.num_classes = None if num_classes is None else int(num_classes)
        if int(kl_warmup_steps) < 0:
            raise ConfigError(f"kl_warmup_steps must be >= 0, got {kl_warmup_steps}")
        if int(kl_warmup_steps) > 0:
            if not isinstance(beta, (int, float)):
                raise ConfigError("kl_warmup_steps needs a numeric beta (beta is already a schedule)")
            from kvae.parts.schedules import LinearWarmup

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
        self.prior = priors.get(prior, self.latent_dim)
        self.likelihood = likelihoods.get(decoder, self.data_shape)
        self.regularizer_layers = list(regularizers)
        from kvae.parts import objectives

        self.objective = objectives.get(self._init_args["objective"])
        if self.objective is not None:
            self.objective.check(self)
        from kvae.parts import densities

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
        self._build_parts()

    # ------------------------------------------------------------------ building
    def _build_parts(self):
        """Create every weight now (one forward pass on zeros), so the model saves and loads
        without a build step and variables are created under the caller's strategy scope."""
        x0 = tf.zeros((1,) + self.data_shape, tf.float32)
        y0 = tf.zeros((1,), tf.int32) if self.conditional else None
        q = self.encode(x0, y0)
        self.decode(tf.zeros((1, self.latent_dim)), y0)
        if hasattr(self.prior, "bind"):  # priors that use the model's own networks (the VampPrior)
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
        return not getattr(self.posterior, "deterministic", False)

    @property
    def has_likelihood(self):
        """Whether p(x|z) is a normalised density, so that log p(x), the ELBO and the NLL are defined
        (not for a reconstruction score such as MS-SSIM)."""
        return bool(getattr(self.likelihood, "normalised", True))

    @property
    def conditional(self):
        return self.num_classes is not None

    @property
    def metrics(self):
        return [self.loss_tracker, self.neg_elbo_tracker, self.rec_tracker, self.kl_tracker,
                self.beta_tracker, *self.reg_trackers]

    # ------------------------------------------------------------------ inputs
    def one_hot(self, y):
        """Labels (integers of shape [B] or [B, 1], or one-hot [B, K]) as float32 one-hot [B, K]."""
        if y is None:
            raise DataError(
                f"{type(self).__name__} is conditional on a label with {self.num_classes} classes: "
                "fit on (x, y) data and pass labels to encode/decode/sample")
        y = tf.convert_to_tensor(y)
        if y.dtype.is_integer or y.dtype == tf.bool:
            if y.shape.rank == 2 and y.shape[-1] == 1:
                y = tf.squeeze(y, -1)
            if y.shape.rank == 2 and y.shape[-1] == self.num_classes:
                return tf.cast(y, tf.float32)
            return tf.one_hot(tf.cast(y, tf.int32), self.num_classes, dtype=tf.float32)
        y = tf.cast(y, tf.float32)
        if y.shape.rank != 2 or y.shape[-1] != self.num_classes:
            raise DataError(
                f"float labels must be one-hot of shape (batch, {self.num_classes}), got {tuple(y.shape)}")
        return y

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
        if isinstance(inputs, (tuple, list)) and len(inputs) == 2:
            return inputs[0], inputs[1]
        return inputs, None

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

    # ------------------------------------------------------------------ objective
    def kl_divergence(self, q, z=None):
        """KL(q(z|x) || p(z)) per example: closed form when available, else log q(z) - log p(z)."""
        p = self.prior_distribution()
        if self.analytic_kl:
            try:
                return tfd.kl_divergence(q, p)
            except NotImplementedError:
                pass
        if z is None:
            raise ValueError("a Monte-Carlo KL needs the sample z")
        return q.log_prob(z) - p.log_prob(z)

    def kl_per_dimension(self, q, z=None):
        """KL per latent dimension [B, latent_dim] when q and p both factorise, else None: closed form,
        or with ``analytic_kl=False`` the one-sample estimate log q(z_d|x) - log p(z_d) at ``z``."""
        if not (getattr(self.posterior, "factorized", False) and getattr(self.prior, "factorized", False)):
            return None
        if self.analytic_kl or z is None:
            return tfd.kl_divergence(q.distribution, self.prior_distribution().distribution)
        return q.distribution.log_prob(z) - self.prior_distribution().distribution.log_prob(z)

    def compute_terms(self, x, y=None, training=False, seed=None):
        """The pieces of the objective for one batch, as a dict of tensors and distributions.

        Keys: ``x``, ``y``, ``q``, ``z`` (one reparameterised sample), ``px``,
        ``log_px_z`` (log p(x|z), [B]), ``kl`` ([B]), ``kl_per_dim`` ([B, D] or None), ``prior``
        (p(z)), ``seed``, ``decode_params`` (the decoder, for penalties on it) and ``training``.
        Regularisers receive this dict.  The draw of z uses :meth:`standard_noise`, so it is a
        function of the seed and of each example's position in the *global* batch.
        """
        x = tf.cast(x, tf.float32)
        q = self.encode(x, y, training=training)
        z = self.sample_posterior(q, seed)
        px = self.decode(z, y, training=training)
        return {
            "x": x, "y": y, "q": q, "z": z, "px": px,
            "log_px_z": px.log_prob(x),
            "kl": self.kl_divergence(q, z),
            "kl_per_dim": self.kl_per_dimension(q, z),
            "prior": self.prior_distribution(), "seed": seed, "decode_params": self.decode_params,
            "training": training,
        }

    def standard_noise(self, batch_size, seed, samples=None):
        """N(0, I) noise [batch_size, latent_dim] (or [samples, batch_size, latent_dim]) for this
        replica's share of the global batch.

        Every replica draws the noise of the whole global batch from the same seed and keeps its
        own slice, so an example gets the same noise on 1 or N replicas (the update is the same)
        and no two replicas (no two examples) share noise.
        """
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        lead = [] if samples is None else [int(samples)]
        # (XLA's random kernels give another stream: runs are reproducible within a jit mode, not across.)
        if replicas == 1:
            return tf.random.stateless_normal(lead + [batch_size, self.latent_dim], seed)
        eps = tf.random.stateless_normal(lead + [batch_size * replicas, self.latent_dim], seed)
        start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * batch_size
        return eps[start:start + batch_size] if samples is None else eps[:, start:start + batch_size]

    def sample_posterior(self, q, seed):
        """One reparameterised z ~ q(z|x) per example; through :meth:`standard_noise` when the
        posterior layer can map noise to samples (``reparameterize``), else ``q.sample``."""
        if seed is None or not hasattr(self.posterior, "reparameterize"):
            return q.sample(seed=seed)
        return self.posterior.reparameterize(q, self.standard_noise(q.batch_shape_tensor()[0], seed))

    def kl_penalty(self, terms):
        r"""The KL term of the training loss, per example ([B]).

        With per-dimension free bits lambda (Kingma et al. 2016) the batch objective is
        sum_d max(lambda, E_batch KL_d) when q and p factorise, else max(lambda * D, E_batch KL):
        dimensions whose batch-mean KL is under the floor cost lambda and get no gradient.  With
        ``free_bits_total`` lambda it is max(lambda, E_batch KL) (MAE's reference code:
        ``KL.mean().clamp(min=free_bits)``).  (Under tf.distribute the floor is applied to each
        replica's part of the batch.)
        """
        def floor_batch_mean(kl, floor):  # max(floor, E_batch KL) with no gradient below the floor
            floor = tf.constant(floor, tf.float32)
            return tf.where(tf.reduce_mean(kl) >= floor, kl, floor * tf.ones_like(kl))

        if self.free_bits_total > 0:
            return floor_batch_mean(terms["kl"], self.free_bits_total)
        if self.free_bits_per_dim <= 0:
            return terms["kl"]
        lam = tf.constant(self.free_bits_per_dim, tf.float32)
        per_dim = terms["kl_per_dim"]
        if per_dim is not None:
            above = tf.reduce_mean(per_dim, axis=0, keepdims=True) >= lam
            return tf.reduce_sum(tf.where(above, per_dim, lam), axis=-1)
        return floor_batch_mean(terms["kl"], self.free_bits_per_dim * self.latent_dim)

    def bound_loss(self, terms, beta):
        """The loss before regularisers, per example: -log p(x|z) + beta * KL, or the objective's
        negative bound (models with another form override this)."""
        if self.objective is not None:
            return self.objective.per_example_loss(self, terms)
        return -terms["log_px_z"] + beta * self.kl_penalty(terms)

    def per_example_loss(self, terms, beta):
        """:meth:`bound_loss` + regularisers, one value per example, plus the regulariser values."""
        loss = self.bound_loss(terms, beta)
        reg_values = []
        for reg in self.regularizer_layers:
            value = tf.cast(reg.penalty(terms), tf.float32)
            reg_values.append(value)
            loss = loss + value
        return loss, reg_values

    def elbo(self, x, y=None, seed=None):
        """ELBO per example (one sample of z, closed-form KL where available), in nats."""
        terms = self.compute_terms(x, y, seed=self._seed(seed))
        return terms["log_px_z"] - terms["kl"]

    # ------------------------------------------------------------------ training
    def noise_seed(self):
        """A stateless seed for this step: the base seed folded with the optimizer step, so noise
        never repeats across steps and resumes with the optimizer state (replicas then take their
        own slice of the global batch's noise, see :meth:`standard_noise`)."""
        step = self.optimizer.iterations if self.optimizer is not None else tf.constant(0, tf.int64)
        seed = tf.random.experimental.stateless_fold_in(tf.constant([self.seed, 0], tf.int64), step)
        return tf.cast(seed, tf.int32)

    def _unpack(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None and isinstance(x, (tuple, list)):
            x, y = self._split_inputs(x)
        if not self.conditional:
            y = None
        return tf.cast(x, tf.float32), y, sample_weight

    def _current_beta(self):
        step = self.optimizer.iterations if self.optimizer is not None else 0
        return beta_value(self.beta, step)

    def _update_metrics(self, terms, per_example, reg_values, beta, sample_weight):
        extra = sum(self.losses) if self.losses else 0.0
        self.loss_tracker.update_state(per_example + extra, sample_weight=sample_weight)
        self.neg_elbo_tracker.update_state(-terms["log_px_z"] + terms["kl"], sample_weight=sample_weight)
        self.rec_tracker.update_state(-terms["log_px_z"], sample_weight=sample_weight)
        self.kl_tracker.update_state(terms["kl"], sample_weight=sample_weight)
        self.beta_tracker.update_state(beta)
        for tracker, value in zip(self.reg_trackers, reg_values):
            tracker.update_state(value)
        results = {m.name: m.result() for m in self.metrics}
        strategy = tf.distribute.get_strategy()
        if (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                and strategy.extended._in_multi_worker_mode()):
            # Keras 3 reduces multi-worker step outputs with MEAN over axis 0, which fails on scalars
            # (tensorflow/tensorflow#72388); shape [1] reduces to the same scalar.
            results = {k: tf.reshape(v, [1]) for k, v in results.items()}
        return results

    def train_step(self, data):
        x, y, sample_weight = self._unpack(data)
        beta = self._current_beta()
        split = self.objective is not None and self.objective.splits_gradients
        with tf.GradientTape(persistent=split) as tape:
            terms = self.compute_terms(x, y, training=True, seed=self.noise_seed())
            per_example, reg_values = self.per_example_loss(terms, beta)
            loss = tf.nn.compute_average_loss(per_example, sample_weight=sample_weight)
            if self.losses:
                loss = loss + tf.nn.scale_regularization_loss(tf.add_n(self.losses))
            scaled = self.optimizer.scale_loss(loss)
            if split:  # PIWAE: the inference network follows its own bound
                encoder_loss = self.objective.encoder_loss(self, terms)
                for reg, value in zip(self.regularizer_layers, reg_values):
                    if getattr(reg, "encoder_term", True):  # not the VAE-GAN's GAN loss
                        encoder_loss = encoder_loss + value
                encoder_scaled = self.optimizer.scale_loss(
                    tf.nn.compute_average_loss(encoder_loss, sample_weight=sample_weight))
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        if split:
            inference = {id(v) for v in self.encoder_network.trainable_variables + self.posterior.trainable_variables}
            chosen = [i for i, v in enumerate(variables) if id(v) in inference]
            encoder_grads = tape.gradient(encoder_scaled, [variables[i] for i in chosen])
            grads = list(grads)
            for i, g in zip(chosen, encoder_grads):
                grads[i] = g
        del tape
        own = {id(v) for v in self.model_variables}
        # regularisers' own variables (discriminators) get zero here: their optimizer steps them in
        # after_step; keeping them in the list keeps the optimizer's state aligned for save/load
        grads = [g if id(v) in own or g is None else tf.zeros_like(g) for g, v in zip(grads, variables)]
        self.optimizer.apply(grads, variables)
        for reg in self.regularizer_layers:
            reg.after_step(self, terms)
        return self._update_metrics(terms, per_example, reg_values, beta, sample_weight)

    def skip_batches(self, n):
        """Make the next ``n`` training batches be read and discarded without a step (used on resume
        by :class:`kvae.training.callbacks.SafeBackupAndRestore` for the batches applied before an interruption)."""
        self._batches_to_skip = int(n)

    def make_train_function(self, force=False):
        super().make_train_function(force)
        step = self.train_function
        if getattr(step, "_kvae_skipping", False):
            return step

        def train_function(iterator):
            # one call runs up to steps_per_execution steps; the skipped batches of a resumed epoch
            # are read in calls of the same size (a checkpoint lands at the end of a call, so the
            # count is normally a whole number of calls; a remainder is read, then a call runs)
            todo = getattr(self, "_batches_to_skip", 0)
            if todo > 0:
                n = min(todo, self.steps_per_execution)
                for _ in range(n):
                    next(iterator)
                self._batches_to_skip = todo - n
                if n == self.steps_per_execution:
                    return {m.name: m.result() for m in self.metrics}
            return step(iterator)

        train_function._kvae_skipping = True
        self.train_function = train_function
        return train_function

    def evaluate(self, *args, **kwargs):
        """``keras.Model.evaluate``; the validation noise restarts with each evaluation."""
        self._eval_batch.assign(0)
        return super().evaluate(*args, **kwargs)

    def test_step(self, data):
        x, y, sample_weight = self._unpack(data)
        beta = self._current_beta()
        # a different draw for every batch of an evaluation (the step's seed folded with the batch index)
        seed = tf.cast(tf.random.experimental.stateless_fold_in(self.noise_seed(), self._eval_batch.value), tf.int32)
        self._eval_batch.assign_add(1)
        terms = self.compute_terms(x, y, training=False, seed=seed)
        per_example, reg_values = self.per_example_loss(terms, beta)
        return self._update_metrics(terms, per_example, reg_values, beta, sample_weight)

    def call(self, inputs, training=False):
        """Reconstruction (decoder mean at the posterior mean) of ``x`` or ``(x, y)``."""
        x, y = self._split_inputs(inputs)
        return self.reconstruct(x, y, training=training)

    #: run ``fit`` with the objects that exist at its start (and after its first epoch, when the
    #: steps are traced) frozen out of the garbage collector's view (:class:`kvae.training.callbacks.FreezeGC`)
    freeze_gc_during_fit = True

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        """``keras.Model.fit`` after checking the data (shape, NaN/inf, range, binary values).

        While it runs, Python's garbage collector skips the objects that existed when it started and
        after its first epoch (``gc.freeze``, undone when it returns): a full collection over the
        many objects of TensorFlow and Keras took ~1.2 s between two batches here, every few
        epochs.  Set ``model.freeze_gc_during_fit = False`` to leave the collector alone.

        numpy arrays are batched by a kvae pipeline (:meth:`_arrays_to_pipelines`): epoch e's order
        is keyed by (``seed``, e) rather than Keras' global generator, and tf.data's autotuner,
        whose teardown stalled an epoch's start by ~1 s, is off."""
        from kvae.data.datasets import check_inputs

        check_inputs(self, x, y, what="training data")
        if validation_data is not None:
            check_inputs(self, validation_data, None, what="validation data")
        if not args:
            x, y, validation_data = self._arrays_to_pipelines(x, y, validation_data, kwargs)
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # a Dataset shuffles itself; avoids Keras' warning
            if getattr(x, "kvae_epoch", None) is not None:  # a kvae pipeline: order each epoch by its number
                from kvae.training.callbacks import DataEpoch

                kwargs["callbacks"] = [DataEpoch(x.kvae_epoch), *(kwargs.get("callbacks") or [])]
        if not self.freeze_gc_during_fit:
            return super().fit(x, y, *args, validation_data=validation_data, **kwargs)
        from kvae.training.callbacks import FreezeGC

        freeze = FreezeGC()
        kwargs["callbacks"] = [freeze, *(kwargs.get("callbacks") or [])]
        try:
            return super().fit(x, y, *args, validation_data=validation_data, **kwargs)
        finally:  # also when fit raises (Keras then skips on_train_end)
            freeze.on_train_end()

    def _arrays_to_pipelines(self, x, y, validation_data, kwargs):
        """numpy training (and validation) arrays become kvae pipelines (:func:`kvae.data.batches`):
        batches of ``batch_size`` (Keras' default 32), epoch e in the order keyed by (model seed, e)
        when ``shuffle`` (as a resumed run needs), tf.data's autotuner off.  Arrays with
        ``sample_weight``, ``class_weight``, ``validation_split``, ``steps_per_epoch`` or
        ``shuffle="batch"`` go to Keras unchanged."""
        from kvae.data.datasets import batches

        def arrays(a, b):
            if isinstance(a, (tuple, list)) and len(a) == 2 and b is None:
                a, b = a
            if isinstance(a, np.ndarray) and (b is None or isinstance(b, np.ndarray)):
                return a, b
            return None

        def _unset(value):
            return value is None or (isinstance(value, (int, float)) and value == 0)

        keras_only = ("sample_weight", "class_weight", "validation_split", "steps_per_epoch")
        train = arrays(x, y)
        if train is None or any(not _unset(kwargs.get(k)) for k in keras_only) or \
                kwargs.get("shuffle", True) not in (True, False):
            return x, y, validation_data
        batch_size = kwargs.pop("batch_size", None) or 32
        shuffle = kwargs.pop("shuffle", True)
        a, b = train
        a = a.astype(np.float32, copy=False)
        x = batches(a, b, batch_size, shuffle=shuffle, seed=self.seed)
        valid = arrays(validation_data, None) if validation_data is not None else None
        if valid is not None:
            va, vb = valid
            vbatch = kwargs.pop("validation_batch_size", None) or batch_size
            validation_data = batches(va.astype(np.float32, copy=False), vb, vbatch, shuffle=False)
        return x, None, validation_data

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
        """``keras.Model.export``: the model's ``call`` (the reconstruction of x, or of (x, y) for
        conditional models) as a SavedModel ``serve`` endpoint (or ONNX with ``format="onnx"``).
        The input signature defaults to x [None, *input_shape] float32 (and y [None] int32).
        For every endpoint (encode, decode, sample, log_prob, ...) use :func:`kvae.export.export`."""
        if input_signature is None:
            x_spec = tf.TensorSpec((None,) + self.data_shape, tf.float32, name="x")
            input_signature = [(x_spec, tf.TensorSpec((None,), tf.int32, name="y"))] if self.conditional else [x_spec]
        return super().export(filepath, format=format, verbose=verbose, input_signature=input_signature, **kwargs)

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
        if labels.ndim == 1 and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise DataError(f"labels must be in 0..{self.num_classes - 1}, got {labels.min()}..{labels.max()}")
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
            if self.density.needs_component_noise:  # the Gaussian mixture
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
        with ``return_noise=True`` (see :func:`kvae.evaluation.posterior_mean_and_noise`)."""
        from kvae.evaluation.metrics import posterior_mean_and_noise

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
        current = getattr(self.density, "kind", None)
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

    @tf.function(reduce_retracing=True)
    def _log_weights(self, x, y, k, seed):
        q = self.encode(x, y)
        z = q.sample(k, seed=seed)
        log_w = self.decode(z, y).log_prob(x) + self.prior_distribution().log_prob(z) - q.log_prob(z)
        return log_w

    def log_likelihood(self, x, y=None, k=1000, batch_size=100, seed=0, max_elements=2**23, progress=None):
        r"""Importance-sampled log p(x) per example (Burda et al. 2016), a lower bound that
        tightens as k grows:  log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),  z_i ~ q(z|x).

        The k samples are drawn in chunks so that a chunk holds about ``max_elements`` numbers
        per data tensor; chunks are combined with logsumexp, so k=5000 fits in memory.
        ``progress(done, total)`` is called after each batch of examples.
        """
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        if not self.has_density:
            raise ConfigError(f"{type(self).__name__} has a deterministic encoder: q(z|x) has no density, so "
                              "the importance-sampled likelihood is not defined")
        if not self.has_likelihood:
            raise ConfigError(f"{type(self).__name__}'s decoder term ({type(self.likelihood).__name__}) is a "
                              "reconstruction score, not a normalised density: log p(x) is not defined")
        x = np.asarray(x, np.float32) if not isinstance(x, tf.Tensor) else tf.cast(x, tf.float32)
        n = int(x.shape[0])
        seed = self._seed(seed)
        out = []
        event = math.prod(self.data_shape)
        for start in range(0, n, batch_size):
            xb = x[start:start + batch_size]
            yb = None if (y is None or not self.conditional) else self.one_hot(y[start:start + batch_size])
            b = int(xb.shape[0])
            cost = b * event * getattr(self.likelihood, "memory_factor", 1)
            chunk = int(max(1, min(k, max_elements // max(1, cost))))
            total = None
            for i, lo in enumerate(range(0, k, chunk)):
                m = min(chunk, k - lo)
                s = tf.cast(tf.random.experimental.stateless_fold_in(seed, start * 1_000_003 + i), tf.int32)
                lse = tf.reduce_logsumexp(self._log_weights(xb, yb, tf.constant(m), s), axis=0)
                total = lse if total is None else tf.experimental.numpy.logaddexp(total, lse)
            out.append(total - math.log(k))
            if progress is not None:
                progress(start + b, n)
        return tf.concat(out, axis=0)

    # ------------------------------------------------------------------ deterministic endpoints
    # Every source of randomness is an input: these are what kvae.export serves.
    def sample_from_noise(self, eps, labels=None, uniform=None, component_uniform=None):
        """Images for prior noise eps [N, latent_dim] (z = prior.from_noise(eps)); PixelCNN decoders
        also take the uniform pixel noise [N, *input_shape], mixture priors (the VampPrior) the
        component noise [N]."""
        if getattr(self.prior, "needs_component_noise", False):
            z = self.prior.from_noise(eps, component_uniform)
        else:
            z = self.prior.from_noise(eps)
        return self.likelihood.images(self.decode_params(z, labels), uniform)

    def sample_density_from_noise(self, eps, component_uniform=None, labels=None, uniform=None):
        """Images for codes drawn from the ex-post density with explicit noise (``component_uniform``
        [N] only for the Gaussian mixture)."""
        z = self.density.from_noise(eps, component_uniform)
        return self.likelihood.images(self.decode_params(z, labels), uniform)

    def reconstruct_from_noise(self, x, eps, labels=None, uniform=None):
        """Images decoded from z = reparameterize(q(z|x), eps)."""
        q = self.encode(x, labels)
        z = self.posterior.reparameterize(q, eps)
        return self.likelihood.images(self.decode_params(z, labels), uniform)

    def log_prob_from_noise(self, x, eps, labels=None):
        """Importance-weighted bound log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i = reparameterize(q, eps_i),
        for eps [k, B, latent_dim]: the exported ``log_prob`` endpoint."""
        x = tf.cast(x, tf.float32)
        q = self.encode(x, labels)
        z = self.posterior.reparameterize(q, eps)
        log_w = self.decode(z, labels).log_prob(x) + self.prior_distribution().log_prob(z) - q.log_prob(z)
        k = tf.cast(tf.shape(eps)[0], tf.float32)
        return tf.reduce_logsumexp(log_w, axis=0) - tf.math.log(k)

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
