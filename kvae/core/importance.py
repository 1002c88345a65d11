r"""Importance weights and the importance-sampled log-likelihood (Burda et al. 2016).

The one log-importance-weight of the library, over latent groups (:mod:`kvae.core.terms`):

    log w = log p(x|z) + sum_g [log p_g(z_g) - log q_g(z_g|x, z_{<g})]

and the bound  log p(x) >= log (1/k) sum_i w_i  with z_i ~ q, tighter as k grows.
"""
import math

import tensorflow as tf

from kvae.errors import ConfigError


def log_importance_weights(log_px_z, groups):
    """log p(x|z) + sum_g (log p_g(z_g) - log q_g(z_g)) for draws of shape [..., B]; ``groups`` is a
    sequence of :class:`~kvae.core.terms.LatentGroup` (their ``q``, ``z`` and ``prior``)."""
    log_w = log_px_z
    for g in groups:
        log_w = log_w + g.prior.log_prob(g.z) - g.q.log_prob(g.z)
    return log_w


def log_mean_exp(log_w, axis=0):
    """log (1/k) sum_i exp(log_w_i) along ``axis`` (k its length), computed stably."""
    k = tf.cast(tf.shape(log_w)[axis], log_w.dtype)
    return tf.reduce_logsumexp(log_w, axis=axis) - tf.math.log(k)


def resumed_examples(resume_from, n, batch_size):
    """How many examples ``resume_from`` (the values of an interrupted call, or None) already holds:
    a multiple of ``batch_size`` or all ``n``."""
    first = 0 if resume_from is None else len(resume_from)
    if first > n or (first % batch_size and first != n):
        raise ConfigError(f"resume_from holds {first} values: not a multiple of batch_size={batch_size} "
                          f"within the {n} examples")
    return first


def chunked_log_likelihood(log_weights, x, y, k, seed, batch_size, chunk_for, progress=None, resume_from=None,
                           on_batch=None, offset=0, context_for=None):
    r"""log (1/k) sum_i w_i per example of x, the k draws taken in chunks combined by logsumexp.

    ``log_weights(xb, yb, m, seed)`` returns log w [m, b] for m draws; ``chunk_for(b)`` the number of
    draws per chunk for a batch of b examples (bounded memory at any k); ``progress(done, total)``
    is called after each batch.  ``context_for(xb, yb)``, when given, computes once per batch what
    all its chunks share (a hierarchy's bottom-up pass), passed as ``log_weights(xb, yb, m, seed,
    context)``.  Batch ``start``'s chunk i uses the seed folded with
    ``start * 1_000_003 + i``, so a result does not depend on ``batch_size`` splitting elsewhere.

    ``resume_from``: the values of the first m examples from an earlier call with the same arguments
    (m a multiple of ``batch_size``, or all of x); they are kept and the batches from m on computed,
    with the seeds an uninterrupted call gives them.  ``on_batch(values)`` is called after each batch
    with the values of all examples so far (numpy float32 [m]), e.g. to keep them across a kill.
    ``offset``: x is the part of a larger set that starts at that position (the seeds follow the
    position in the larger set, so its parts can be computed apart, :mod:`kvae.evaluation.parallel`).
    """
    n = int(x.shape[0])
    first = resumed_examples(resume_from, n, batch_size)
    out = [] if resume_from is None else [tf.constant(resume_from, tf.float32)]
    for start in range(first, n, batch_size):
        xb = x[start:start + batch_size]
        yb = None if y is None else y[start:start + batch_size]
        b = int(xb.shape[0])
        chunk = chunk_for(b)
        total = None
        shared = () if context_for is None else (context_for(xb, yb),)
        for i, lo in enumerate(range(0, k, chunk)):
            m = min(chunk, k - lo)
            s = tf.cast(tf.random.experimental.stateless_fold_in(seed, (offset + start) * 1_000_003 + i), tf.int32)
            lse = tf.reduce_logsumexp(log_weights(xb, yb, tf.constant(m), s, *shared), axis=0)
            total = lse if total is None else tf.experimental.numpy.logaddexp(total, lse)
        out.append(total - math.log(k))
        if on_batch is not None:
            on_batch(tf.concat(out, axis=0).numpy())
        if progress is not None:
            progress(start + b, n)
    return tf.concat(out, axis=0) if out else tf.zeros([0], tf.float32)
