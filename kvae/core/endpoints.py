r"""What a trained model computes with every source of randomness given: the importance-sampled
log-likelihood and the deterministic endpoints :mod:`kvae.export` serves (a mixin of
:class:`kvae.core.model.VariationalModel`).

Every log-importance-weight goes through :func:`kvae.core.importance.log_importance_weights` over
the model's latent groups (:meth:`latent_draws`), so hierarchies are scored like one group.
"""
import inspect
import math

import numpy as np
import tensorflow as tf

from kvae.core.importance import chunked_log_likelihood, log_importance_weights, log_mean_exp
from kvae.errors import ConfigError
from kvae.parts.contracts import flag


class EndpointsMixin:
    """``log_likelihood`` and the ``*_from_noise`` endpoints."""

    def log_weights_from_noise(self, x, y=None, eps=None, k=None, seed=None, training=False, groups=None,
                               context=None):
        """log w [k, B] = log p(x|z) + sum_g (log p_g(z_g) - log q_g(z_g)) for draws from explicit noise
        ``eps`` [k, B, D] or k draws of q with ``seed`` (``groups``: posteriors already computed;
        ``context``: what :meth:`importance_context` returned for x, unused here)."""
        groups = self.latent_draws(x, y, eps=eps, k=k, seed=seed, training=training, groups=groups)
        px = self.decode_groups(groups, y, training=training)
        return log_importance_weights(px.log_prob(x), groups)

    def importance_context(self, x, y=None):
        """What the importance draws of a batch share, computed once per batch by :meth:`log_likelihood`
        and passed to :meth:`log_weights_from_noise` as ``context``: None here (each chunk of draws
        encodes x itself); a hierarchy returns its bottom-up pass, the same for all draws."""
        return None

    @tf.function(reduce_retracing=True)
    def _log_weights(self, x, y, k, seed, context=None):
        if context is None:  # (an override of log_weights_from_noise may predate ``context``)
            return self.log_weights_from_noise(x, y, k=k, seed=seed)
        return self.log_weights_from_noise(x, y, k=k, seed=seed, context=context)

    @tf.function(reduce_retracing=True)
    def _importance_context(self, x, y):
        return self.importance_context(x, y)

    def log_likelihood(self, x, y=None, k=1000, batch_size=100, seed=0, max_elements=2**23, progress=None,
                       resume_from=None, on_batch=None, offset=0):
        r"""Importance-sampled log p(x) per example (Burda et al. 2016), a lower bound that
        tightens as k grows:  log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),  z_i ~ q(z|x).

        The k samples are drawn in chunks so that a chunk holds about ``max_elements`` numbers
        per data tensor; chunks are combined with logsumexp, so k=5000 fits in memory.
        ``progress(done, total)`` is called after each batch of examples; ``resume_from`` and
        ``on_batch`` continue an interrupted call, ``offset`` places x in a larger set
        (:func:`kvae.core.importance.chunked_log_likelihood`).
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
        y = None if (y is None or not self.conditional) else self.one_hot(y)

        def chunk_for(b):
            return self.draws_per_chunk(b, k, max_elements)

        shared = (type(self).importance_context is not EndpointsMixin.importance_context
                  and "context" in inspect.signature(self.log_weights_from_noise).parameters)
        return chunked_log_likelihood(self._log_weights, x, y, k, self._seed(seed), batch_size, chunk_for,
                                      progress, resume_from=resume_from, on_batch=on_batch, offset=offset,
                                      context_for=self._importance_context if shared else None)

    def draws_per_chunk(self, batch, k, max_elements=2**23):
        """The importance draws :meth:`log_likelihood` takes at once for a batch of ``batch`` examples
        (they choose the draws, so they are part of an evaluation's identity)."""
        cost = math.prod(self.data_shape) * flag(self.likelihood, "memory_factor", "likelihood")
        return int(max(1, min(k, max_elements // max(1, batch * cost))))

    # Every source of randomness is an input: these are what kvae.export serves.
    def sample_from_noise(self, eps, labels=None, uniform=None, component_uniform=None):
        """Images for prior noise eps [N, latent_dim] (z = prior.from_noise(eps)); PixelCNN decoders
        also take the uniform pixel noise [N, *input_shape], mixture priors (the VampPrior) the
        component noise [N]."""
        if flag(self.prior, "needs_component_noise", "prior"):
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
        return log_mean_exp(self.log_weights_from_noise(x, labels, eps=eps), axis=0)

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
        """``keras.Model.export``: the model's ``call`` (the reconstruction of x, or of (x, y) for
        conditional models) as a SavedModel ``serve`` endpoint (or ONNX with ``format="onnx"``).
        The input signature defaults to x [None, *input_shape] float32 (and y [None] int32).
        For every endpoint (encode, decode, sample, log_prob, ...) use :func:`kvae.export.export`."""
        if input_signature is None:
            x_spec = tf.TensorSpec((None,) + self.data_shape, tf.float32, name="x")
            input_signature = [(x_spec, tf.TensorSpec((None,), tf.int32, name="y"))] if self.conditional else [x_spec]
        return super().export(filepath, format=format, verbose=verbose, input_signature=input_signature, **kwargs)

