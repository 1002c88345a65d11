r"""The ELBO machinery every model shares, over latent groups (:mod:`kvae.core.terms`).

* the evidence lower bound (Kingma & Welling 2013)
  :math:`\mathrm{ELBO}(x) = \mathbb{E}_{q(z|x)}[\log p(x|z)] - \sum_g \mathrm{KL}(q_g\,\|\,p_g)`,
  each KL in closed form when TFP has it and a one-sample Monte-Carlo estimate
  :math:`\log q_g(z_g) - \log p_g(z_g)` otherwise;
* the training loss ``-log p(x|z) + beta * KL + sum(regularisers)`` (or an objective's bound), with
  free bits (Kingma et al. 2016) per dimension or on the batch-mean total.
"""
import tensorflow as tf
import tensorflow_probability as tfp

from kvae.core.terms import LatentGroup, Terms
from kvae.errors import ConfigError
from kvae.parts.contracts import flag, reparameterizes

tfd = tfp.distributions


class ELBOMixin:
    """Terms, KL and losses of :class:`kvae.core.model.VariationalModel` (a mixin of it)."""

    #: names of the extra entries this model's :meth:`compute_terms` adds to :class:`Terms`
    extra_terms = ()

    def kl_divergence(self, q, z=None, prior=None):
        """KL(q || p) per example: closed form when available, else log q(z) - log p(z) at ``z``.
        ``prior`` defaults to the model's p(z)."""
        p = self.prior_distribution() if prior is None else prior
        if self.analytic_kl:
            try:
                return tfd.kl_divergence(q, p)
            except NotImplementedError:
                pass
        if z is None:
            raise ConfigError("a Monte-Carlo KL needs the sample z")
        return q.log_prob(z) - p.log_prob(z)

    def kl_per_dimension(self, q, z=None, prior=None):
        """KL per latent dimension [B, D] when q and p both factorise, else None: closed form,
        or with ``analytic_kl=False`` the one-sample estimate log q(z_d|x) - log p(z_d) at ``z``."""
        if not (flag(self.posterior, "factorized", "posterior") and flag(self.prior, "factorized", "prior")):
            return None
        p = self.prior_distribution() if prior is None else prior
        if self.analytic_kl or z is None:
            return tfd.kl_divergence(q.distribution, p.distribution)
        return q.distribution.log_prob(z) - p.distribution.log_prob(z)

    def latent_groups(self, x, y=None, training=False, seed=None):
        """Posterior draws of every latent group for a batch, as a tuple of
        :class:`~kvae.core.terms.LatentGroup` (q, z, p, KL).  One group ``"z"`` here; a hierarchy
        returns one per stochastic layer, each prior conditional on the groups above."""
        q = self.encode(x, y, training=training)
        z = self.sample_posterior(q, seed)
        prior = self.prior_distribution()
        return (LatentGroup("z", q, z, prior, kl=self.kl_divergence(q, z, prior),
                            kl_per_dim=self.kl_per_dimension(q, z, prior)),)

    def latent_draws(self, x, y=None, eps=None, k=None, seed=None, training=False, groups=None):
        """Draws of every group for importance weights: z = reparameterize(q, eps) for explicit noise
        eps [k, B, D], or k draws ``q.sample(k, seed)``; groups without KL (only q, z, prior).
        ``groups`` (a batch's :class:`Terms` groups) reuses their posteriors instead of encoding x."""
        q = self.encode(x, y, training=training) if groups is None else groups[0].q
        z = self.posterior.reparameterize(q, eps) if eps is not None else q.sample(k, seed=seed)
        return (LatentGroup("z", q, z, self.prior_distribution()),)

    def decode_groups(self, groups, y=None, training=False):
        """p(x | z) for the draws of the groups (the decoder sees the lowest group, or all of them
        in a hierarchy)."""
        return self.decode(groups[0].z, y, training=training)

    def compute_terms(self, x, y=None, training=False, seed=None):
        """The pieces of the objective for one batch, a :class:`~kvae.core.terms.Terms`.

        The draw of z uses :meth:`standard_noise`, so it is a function of the seed and of each
        example's position in the *global* batch.  Regularisers and objectives receive it.
        """
        x = tf.cast(x, tf.float32)
        groups = self.latent_groups(x, y, training=training, seed=seed)
        px = self.decode_groups(groups, y, training=training)
        return Terms(x=x, y=y, groups=groups, px=px, log_px_z=px.log_prob(x), seed=seed, training=training,
                     decode_params=self.decode_params)

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
        posterior maps noise to samples (``reparameterize``), else ``q.sample``."""
        if seed is None or not reparameterizes(self.posterior):
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
