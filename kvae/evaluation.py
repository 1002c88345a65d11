r"""What the papers report, as pure functions of a model and data.

* :func:`importance_sampled_nll`: -log p(x) by the importance-weighted bound with k samples
  (Burda et al. 2016); tighter as k grows, an upper bound on the true NLL.
* :func:`posterior_statistics`: per-example ELBO, E_q[log p(x|z)], KL, KL per dimension and
  posterior means, in one pass.
* :func:`active_units`: dimension d is active when Cov_x(E_{q(z|x)}[z_d]) > 0.01 (Burda et al.).
* :func:`evaluate`: all of the above as one dict (what ``kvae evaluate`` prints and writes).
"""
import math

import numpy as np
import tensorflow as tf

ACTIVE_UNIT_THRESHOLD = 0.01


def _batches(x, y, batch_size):
    for start in range(0, len(x), batch_size):
        yield start, x[start:start + batch_size], None if y is None else y[start:start + batch_size]


def posterior_mean(q, seed, num_samples=16):
    """E_q[z]: closed form when the distribution has one, else a Monte-Carlo mean (flows)."""
    try:
        return q.mean()
    except NotImplementedError:
        return tf.reduce_mean(q.sample(num_samples, seed=seed), axis=0)


def posterior_statistics(model, x, y=None, batch_size=500, seed=0):
    """One pass over x: per-example ``elbo``, ``log_px_z``, ``kl`` ([N]), ``kl_per_dim`` ([N, D]
    or None) and posterior means ``z_mean`` ([N, D]), as numpy arrays."""
    y = y if model.conditional else None

    @tf.function(reduce_retracing=True)
    def stats(xb, yb, s):
        terms = model.compute_terms(xb, yb, seed=s)
        s2 = tf.cast(tf.random.experimental.stateless_fold_in(s, 1), tf.int32)
        out = {"log_px_z": terms["log_px_z"], "kl": terms["kl"], "z_mean": posterior_mean(terms["q"], s2)}
        if terms["kl_per_dim"] is not None:
            out["kl_per_dim"] = terms["kl_per_dim"]
        return out

    parts = {}
    base = tf.constant([seed, 7], tf.int64)
    for start, xb, yb in _batches(x, y, batch_size):
        s = tf.cast(tf.random.experimental.stateless_fold_in(base, start), tf.int32)
        out = stats(tf.cast(xb, tf.float32), None if yb is None else model.one_hot(yb), s)
        for key, value in out.items():
            parts.setdefault(key, []).append(value.numpy())
    result = {key: np.concatenate(values) for key, values in parts.items()}
    result.setdefault("kl_per_dim", None)
    result["elbo"] = result["log_px_z"] - result["kl"]
    return result


def active_units(z_mean, threshold=ACTIVE_UNIT_THRESHOLD):
    """Number of dimensions whose posterior mean varies across examples by more than ``threshold``
    (variance), and the per-dimension variances."""
    variances = np.var(np.asarray(z_mean, np.float64), axis=0)
    return int((variances > threshold).sum()), variances


def importance_sampled_nll(model, x, y=None, k=1000, batch_size=100, seed=0, progress=None):
    """-log p(x) per example, estimated with k importance samples (nats, positive)."""
    y = y if model.conditional else None
    return -model.log_likelihood(x, y, k=k, batch_size=batch_size, seed=seed, progress=progress).numpy()


def evaluate(model, x, y=None, k=1000, batch_size=100, seed=0, limit=None, progress=None):
    """Everything ``kvae evaluate`` reports, as a JSON-ready dict.

    Keys: ``nll`` (importance-sampled, nats, positive), ``elbo`` (nats, <= -nll),
    ``neg_elbo``, ``rec_loss`` (-E_q log p(x|z)), ``kl``, ``kl_per_dim`` (list), ``active_units``,
    ``latent_dim``, ``k``, ``n``.
    """
    if limit is not None:
        x = x[:limit]
        y = None if y is None else y[:limit]
    x = np.asarray(x, np.float32)
    stats = posterior_statistics(model, x, y, seed=seed)
    au, _ = active_units(stats["z_mean"])
    nll = importance_sampled_nll(model, x, y, k=k, batch_size=batch_size, seed=seed, progress=progress)
    kl_per_dim = stats["kl_per_dim"]
    return {
        "nll": float(np.mean(nll)),
        "nll_stderr": float(np.std(nll) / math.sqrt(len(nll))),
        "elbo": float(np.mean(stats["elbo"])),
        "neg_elbo": float(-np.mean(stats["elbo"])),
        "rec_loss": float(-np.mean(stats["log_px_z"])),
        "kl": float(np.mean(stats["kl"])),
        "kl_per_dim": None if kl_per_dim is None else [float(v) for v in kl_per_dim.mean(axis=0)],
        "active_units": au,
        "latent_dim": int(model.latent_dim),
        "k": int(k),
        "n": int(len(x)),
    }


def format_table(result):
    """A readable two-column table of an :func:`evaluate` result."""
    rows = [
        ("NLL (importance-sampled)", f"{result['nll']:.3f} ± {result.get('nll_stderr', 0):.3f} nats"),
        ("negative ELBO", f"{result['neg_elbo']:.3f} nats"),
        ("reconstruction -E log p(x|z)", f"{result['rec_loss']:.3f} nats"),
        ("KL(q(z|x) || p(z))", f"{result['kl']:.3f} nats"),
        ("active units", f"{result['active_units']} / {result['latent_dim']}"),
        ("importance samples k", str(result["k"])),
        ("examples n", str(result["n"])),
    ]
    if result.get("kl_per_dim"):
        top = sorted(enumerate(result["kl_per_dim"]), key=lambda t: -t[1])[:8]
        rows.append(("KL per dim (largest)", ", ".join(f"z{d}:{v:.2f}" for d, v in top)))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
