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

from kvae.errors import ConfigError

ACTIVE_UNIT_THRESHOLD = 0.01


def _batches(x, y, batch_size):
    for start in range(0, len(x), batch_size):
        yield start, x[start:start + batch_size], None if y is None else y[start:start + batch_size]


#: Samples of the Monte-Carlo posterior mean for posteriors without a closed-form mean (IAF).
from kvae.core.moments import MC_MEAN_SAMPLES, posterior_mean_and_noise  # noqa: E402,F401


def posterior_mean(q, seed, num_samples=MC_MEAN_SAMPLES):
    """E_q[z|x]: closed form when the distribution has one, else a Monte-Carlo mean of S draws."""
    return posterior_mean_and_noise(q, seed, num_samples)[0]


#: Draws of the groups above whose conditional means make E_q[z_l|x] of a group below a hierarchy's top.
HIERARCHY_MEAN_DRAWS = 16


def _group_means(groups, seed):
    """Each group's E_q[z_g|x, draw] flattened to [B, D_g] and its Monte-Carlo noise."""
    means, noises = [], []
    for i, group in enumerate(groups):
        s2 = tf.cast(tf.random.experimental.stateless_fold_in(seed, 1 + i), tf.int32)
        mean, noise = posterior_mean_and_noise(group.q, s2)
        flat = tf.shape(mean)[0]
        means.append(tf.reshape(mean, [flat, -1]))
        noises.append(tf.reshape(noise, [flat, -1]))
    return means, noises


def posterior_statistics(model, x, y=None, batch_size=500, seed=0, mean_draws=HIERARCHY_MEAN_DRAWS):
    r"""One pass over x: per-example ``elbo``, ``log_px_z``, ``kl``, ``kl_per_dim`` ([N, D]
    or None), posterior means ``z_mean`` ([N, D]) and the Monte-Carlo variance of those means
    ``z_mean_noise`` ([N, D], 0 for closed-form means), as numpy arrays; per latent group
    (:mod:`kvae.core.terms`), ``group_names``, ``kl_per_group`` ([N, G]) and ``group_dims`` (the
    columns of ``z_mean`` that belong to each group, its codes flattened).

    In a hierarchy q(z_l|x, z_{>l}) depends on the draw of the groups above, so a lower group's
    E_q[z_l|x] = E_{q(z_{>l}|x)}[E_q[z_l|x, z_{>l}]] is the mean of its conditional means over
    ``mean_draws`` draws S of the whole hierarchy, and ``z_mean_noise`` that estimate's variance,
    s^2 / S (s^2 the variance of the S conditional means): one draw would count the groups above's
    sampling noise as variation across x (:func:`active_units` subtracts it).  The other statistics
    are those of the first draw."""
    y = y if model.conditional else None
    names = []

    @tf.function(reduce_retracing=True)
    def stats(xb, yb, s):
        terms = model.compute_terms(xb, yb, seed=s)
        means, noises = _group_means(terms.groups, s)
        if len(terms.groups) > 1 and mean_draws > 1:
            draws = [means]
            for j in range(1, mean_draws):
                sj = tf.cast(tf.random.experimental.stateless_fold_in(s, 1000 + j), tf.int32)
                draws.append(_group_means(model.latent_groups(xb, yb, seed=sj), sj)[0])
            stacked = [tf.stack([d[i] for d in draws]) for i in range(len(means))]  # [S, B, D_g] each
            means = [tf.reduce_mean(t, 0) for t in stacked]
            noises = [tf.reduce_sum(tf.square(t - m), 0) / float((mean_draws - 1) * mean_draws)
                      for t, m in zip(stacked, means)]
        names[:] = [g.name for g in terms.groups]
        out = {"log_px_z": terms["log_px_z"], "kl": terms["kl"], "z_mean": tf.concat(means, -1),
               "z_mean_noise": tf.concat(noises, -1), "kl_per_group": tf.stack([g.kl for g in terms.groups], -1),
               "group_sizes": tf.stack([tf.shape(m)[1] for m in means])}
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
    sizes = parts.pop("group_sizes")[0]
    result = {key: np.concatenate(values) for key, values in parts.items()}
    result.setdefault("kl_per_dim", None)
    result["elbo"] = result["log_px_z"] - result["kl"]
    result["group_names"] = list(names)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    result["group_dims"] = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    return result


def marginal_kl_per_dim(model, x, y=None, num_prior_samples=10000, num_posterior_samples=32, batch_size=500,
                        seed=0):
    """[D]: per latent dimension d, the mean over ``x`` of KL(q(z_d|x) || N(m_d, v_d)), N(m_d, v_d)
    the Gaussian with the mean and variance of the prior's marginal p(z_d) (over ``num_prior_samples``
    draws).  For a prior that does not factorise (VLAE's autoregressive flow) the KL has no
    per-dimension split; this one compares each dimension's posterior with the prior's spread there.
    For an N(0, I) prior it is the closed-form KL per dimension, up to the draws' noise.  q(z_d|x) is
    taken as the Gaussian of its own mean and standard deviation (moments over
    ``num_posterior_samples`` draws when q has no closed form, e.g. an IAF posterior)."""
    y = y if model.conditional else None
    draws = np.asarray(model.prior_distribution().sample(num_prior_samples, seed=(seed, 11)), np.float64)
    draws = draws.reshape(num_prior_samples, -1)
    m, v = draws.mean(0), draws.var(0)
    total, n = 0.0, 0
    for start, xb, yb in _batches(x, y, batch_size):
        q = model.encode(tf.cast(xb, tf.float32), None if yb is None else model.one_hot(yb))
        try:
            mean, std = np.asarray(q.mean(), np.float64), np.asarray(q.stddev(), np.float64)
        except NotImplementedError:
            z = np.asarray(q.sample(num_posterior_samples, seed=(seed, start)), np.float64)
            mean, std = z.mean(0), z.std(0)
        mean, std = mean.reshape(len(xb), -1), std.reshape(len(xb), -1)
        kl = np.log(np.sqrt(v) / std) + (std ** 2 + (mean - m) ** 2) / (2 * v) - 0.5
        total, n = total + kl.sum(0), n + len(xb)
    return total / n


def per_group(stats):
    """``kl_per_group`` ({name: mean KL in nats}) and ``active_units_per_group`` ({name: count}) from
    :func:`posterior_statistics`."""
    names = stats["group_names"]
    kl = {n: float(v) for n, v in zip(names, stats["kl_per_group"].mean(axis=0))}
    au = {n: active_units(stats["z_mean"][:, dims], mean_noise=stats["z_mean_noise"][:, dims])[0]
          for n, dims in zip(names, stats["group_dims"])}
    return {"kl_per_group": kl, "active_units_per_group": au}


def representation(model, batch_size=512, seed=0):
    """``images -> posterior means`` ([n, D] numpy float32, as the model computes them), the code
    the disentanglement metrics score (:mod:`kvae.evaluation.disentanglement`, which reads them as
    float64, exactly); unconditional models only.  Images go to the graph in their own dtype
    (dSprites: uint8) and are cast to float32 there."""
    if model.conditional:
        raise ConfigError("disentanglement metrics need an unconditional model (codes from images alone)")

    @tf.function(reduce_retracing=True)
    def means(xb):
        return posterior_mean(model.encode(tf.cast(xb, tf.float32)), tf.constant([seed, 11], tf.int32))

    def represent(images):
        images = np.asarray(images)
        return np.concatenate([means(tf.constant(images[i:i + batch_size])).numpy()
                               for i in range(0, len(images), batch_size)])

    return represent


def active_units(z_mean, threshold=ACTIVE_UNIT_THRESHOLD, mean_noise=None):
    r"""Active units (Burda et al. 2016): dimensions d with A_d = Var_x(E_q[z_d|x]) > threshold;
    returns (count, A).

    With Monte-Carlo means (``mean_noise`` [N, D], the variance of each estimated mean),
    Var_x of the estimates is A_d + E_x[noise_d]; the noise is subtracted, so that a posterior
    that ignores x reports A = 0 up to the estimate's own error (for N examples and S draws,
    about sqrt(2 / N) * Var_q / S, e.g. 7e-4 for N = 1000, S = 64, Var_q = 1: far below 0.01).
    """
    variances = np.var(np.asarray(z_mean, np.float64), axis=0)
    if mean_noise is not None:
        variances = variances - np.mean(np.asarray(mean_noise, np.float64), axis=0)
    return int((variances > threshold).sum()), variances


def importance_sampled_nll(model, x, y=None, k=1000, batch_size=100, seed=0, progress=None, journal=None, jobs=1,
                           model_file=None):
    """-log p(x) per example, estimated with k importance samples (nats, positive).  With a
    ``journal`` (:class:`~kvae.evaluation.journal.NLLJournal`) the values so far are kept after each
    batch and an earlier interrupted call's are continued; the journal is removed at the end.
    ``jobs`` > 1: the batches are computed in that many processes that load the model from
    ``model_file`` (its ``.keras`` file, which must hold the model's weights; :mod:`kvae.evaluation.parallel`)."""
    y = y if model.conditional else None
    kept = {} if journal is None else {"resume_from": journal.load(), "on_batch": journal.save}
    if jobs > 1:
        from kvae.evaluation.parallel import parallel_log_likelihood, weights_fingerprint

        if model_file is None:
            raise ConfigError("jobs > 1 needs model_file, the .keras file the worker processes load the model from")
        ll = parallel_log_likelihood(model_file, x, None if y is None else np.asarray(y), k=k, batch_size=batch_size,
                                     seed=seed, jobs=jobs, progress=progress, fingerprint=weights_fingerprint(model),
                                     **kept)
    else:
        ll = model.log_likelihood(x, y, k=k, batch_size=batch_size, seed=seed, progress=progress, **kept).numpy()
    if journal is not None:
        journal.remove()
    return -ll


def mutual_information(model, x, y=None, seed=0):
    r"""I(x; z) under q (Hoffman & Johnson 2016; the estimator of He et al. 2019):
    E_x E_{q(z|x)}[log q(z|x) - log q(z)], with q(z) = (1/N) sum_j q(z|x_j) over the given examples.
    Quadratic in N: pass a few thousand examples at most."""
    if not model.has_density:
        return None
    x = tf.cast(x, tf.float32)
    labels = None if (y is None or not model.conditional) else y
    q = model.encode(x, labels)
    z = q.sample(seed=tf.constant([seed, 29], tf.int32))
    log_q_own = q.log_prob(z)
    cross = q.log_prob(z[:, None, :])  # [N (z_i), N (q_j)]
    n = tf.cast(tf.shape(x)[0], tf.float32)
    log_aggregate = tf.reduce_logsumexp(cross, axis=1) - tf.math.log(n)
    return float(tf.reduce_mean(log_q_own - log_aggregate))


def mmd_to_prior(z, kernel="imq", bandwidths=(1.0,), seed=0):
    """Unbiased MMD^2 between codes z [N, D] and as many N(0, I) draws."""
    from kvae.nn.divergences import mmd

    z = np.asarray(z, np.float32)
    ref = np.random.RandomState(seed).standard_normal(z.shape).astype(np.float32)
    return float(mmd(z, ref, kernel, bandwidths))


def log_det_covariance(z):
    """log det Cov[z] of codes z [N, D] (InfoVAE's metric: 0 for a standard normal q(z))."""
    sign, logdet = np.linalg.slogdet(np.cov(np.asarray(z, np.float64), rowvar=False))
    return float(logdet) if sign > 0 else float("-inf")


def probe_accuracy(train_z, train_y, test_z, test_y):
    """Accuracy of a logistic-regression probe trained on latent means (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_z)
    probe = LogisticRegression(max_iter=2000).fit(scaler.transform(train_z), train_y)
    return float(probe.score(scaler.transform(test_z), test_y))


def diagnostics(model, x, y=None, train_x=None, train_y=None, seed=0, max_examples=2000):
    """The latent diagnostics of the regularised-family papers, as a dict: ``mutual_information``,
    ``mmd_to_prior`` (of aggregate posterior draws), ``log_det_cov`` (of posterior means),
    ``active_units``, ``kl_per_dim`` and, with labels and training data, ``probe_accuracy``."""
    x = np.asarray(x[:max_examples], np.float32)
    y = None if y is None else y[:max_examples]
    means, noise = model.posterior_means(x, y, return_noise=True)
    if model.has_density:
        draws = model.encode(x, y if model.conditional else None).sample(seed=tf.constant([seed, 31], tf.int32))
        draws = np.asarray(draws)
    else:
        draws = means
    out = {
        "mutual_information": mutual_information(model, x, y, seed=seed),
        "mmd_to_prior": mmd_to_prior(draws, seed=seed),
        "log_det_cov": log_det_covariance(draws),
        "active_units": active_units(means, mean_noise=noise)[0],
    }
    if model.has_density:
        stats = posterior_statistics(model, x, y, seed=seed)
        out["kl_per_dim"] = None if stats["kl_per_dim"] is None else [float(v) for v in stats["kl_per_dim"].mean(0)]
    if y is not None and train_x is not None and train_y is not None:
        train_means = model.posterior_means(np.asarray(train_x[:max_examples], np.float32), train_y[:max_examples])
        out["probe_accuracy"] = probe_accuracy(train_means, train_y[:max_examples], means, y)
    return out


def evaluate(model, x, y=None, k=1000, batch_size=100, seed=0, limit=None, progress=None, journal=None, jobs=1,
             model_file=None):
    """Everything ``kvae evaluate`` reports, as a JSON-ready dict (``journal``, ``jobs`` and
    ``model_file``: the NLL's, as in :func:`importance_sampled_nll`, for the first ``limit`` examples).

    Keys: ``nll`` (importance-sampled, nats, positive), ``elbo`` (nats, <= -nll),
    ``neg_elbo``, ``rec_loss`` (-E_q log p(x|z)), ``kl``, ``kl_per_dim`` (list), ``active_units``,
    ``latent_dim``, ``k``, ``n``, and per latent group ``kl_per_group`` and ``active_units_per_group``
    ({group name: value}; one group ``"z"`` for single-latent models).
    """
    if limit is not None:
        x = x[:limit]
        y = None if y is None else y[:limit]
    x = np.asarray(x, np.float32)
    if not model.has_density:  # deterministic encoders: reconstruction and codes only
        means = model.posterior_means(x, y)
        rec = -np.concatenate([model.decode(means[i:i + 500], None if y is None or not model.conditional
                                            else y[i:i + 500]).log_prob(x[i:i + 500]).numpy()
                               for i in range(0, len(x), 500)])
        result = {"nll": None, "nll_stderr": None, "elbo": None, "neg_elbo": None, "rec_loss": float(rec.mean()),
                  "kl": None, "kl_per_dim": None, "active_units": active_units(means)[0],
                  "latent_dim": int(model.latent_dim), "k": int(k), "n": int(len(x))}
        if hasattr(model, "codebook_usage"):  # VQ-VAE: q is a point mass on the index map k(x), so the
            # ELBO is log p(x|z_q) + log p(k(x)) under the code prior (uniform until fit_prior)
            code_nll = -float(np.mean(model.prior_distribution().log_prob(means).numpy()))
            result.update(model.codebook_usage(x, y), kl=code_nll, neg_elbo=result["rec_loss"] + code_nll,
                          elbo=-(result["rec_loss"] + code_nll), code_prior_fitted=model.prior.is_fitted)
        return result
    stats = posterior_statistics(model, x, y, seed=seed)
    au, _ = active_units(stats["z_mean"], mean_noise=stats["z_mean_noise"])
    if not model.has_likelihood:  # a reconstruction score (MS-SSIM): no NLL, no ELBO
        kl_per_dim = stats["kl_per_dim"]
        return {"nll": None, "nll_stderr": None, "elbo": None, "neg_elbo": None,
                "rec_loss": float(-np.mean(stats["log_px_z"])), "kl": float(np.mean(stats["kl"])),
                "kl_per_dim": None if kl_per_dim is None else [float(v) for v in kl_per_dim.mean(axis=0)],
                "active_units": au, "latent_dim": int(model.latent_dim), "k": int(k), "n": int(len(x))}
    nll = importance_sampled_nll(model, x, y, k=k, batch_size=batch_size, seed=seed, progress=progress,
                                 journal=journal, jobs=jobs, model_file=model_file)
    kl_per_dim = stats["kl_per_dim"]
    return {**per_group(stats),
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
    if result.get("perplexity") is not None:  # VQ-VAE
        prior = "PixelCNN code prior" if result.get("code_prior_fitted") else "uniform code prior"
        rows = [("reconstruction -log p(x|z_q)", f"{result['rec_loss']:.3f} nats"),
                (f"-log p(k(x)) ({prior})", f"{result['kl']:.3f} nats"),
                ("negative ELBO", f"{result['neg_elbo']:.3f} nats"),
                ("code perplexity", f"{result['perplexity']:.1f} of {result['num_embeddings']}"),
                ("dead codes", f"{result['dead_codes']} of {result['num_embeddings']}")]
    elif "n" not in result:  # no model table (kvae evaluate --disentanglement alone)
        rows = []
    elif result.get("nll") is None:
        scored = result.get("kl") is not None  # a reconstruction score with a stochastic encoder (MS-SSIM)
        rows = [("reconstruction term", f"{result['rec_loss']:.3f}" + ("" if scored else " nats"))]
        if scored:
            rows.append(("KL(q(z|x) || p(z))", f"{result['kl']:.3f} nats"))
        rows.append(("NLL / ELBO", "not defined (" + ("the decoder term is a score, not a density)" if scored
                                                     else "deterministic encoder)")))
    else:
        rows = [
            ("NLL (importance-sampled)", f"{result['nll']:.3f} ± {result.get('nll_stderr', 0):.3f} nats"),
            ("negative ELBO", f"{result['neg_elbo']:.3f} nats"),
            ("reconstruction -E log p(x|z)", f"{result['rec_loss']:.3f} nats"),
            ("KL(q(z|x) || p(z))", f"{result['kl']:.3f} nats"),
            ("importance samples k", str(result["k"])),
        ]
    if "n" in result:
        rows += [("active units", f"{result['active_units']} / {result['latent_dim']}"),
                 ("examples n", str(result["n"]))]
    per_group = result.get("kl_per_group") or {}
    if len(per_group) > 1:  # a hierarchy: each group's KL (given the groups above) and active units
        units = result.get("active_units_per_group") or {}
        for name, kl in per_group.items():
            rows.append((f"group {name}: KL, active units", f"{kl:.3f} nats, {units.get(name, '-')}"))
    for key in ("mutual_information", "mmd_to_prior", "log_det_cov", "probe_accuracy", "betavae_metric",
                "factorvae_metric", "mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap",
                "modularity", "explicitness", "fid_lenet", "fid_pca", "precision", "recall"):
        if result.get(key) is not None:
            rows.append((key.replace("_", " "), f"{result[key]:.4f}"))
    if result.get("disentanglement_seconds"):
        rows.append(("seconds per metric", ", ".join(f"{name} {t:.1f}"
                                                     for name, t in result["disentanglement_seconds"].items())))
    if result.get("kl_per_dim"):
        top = sorted(enumerate(result["kl_per_dim"]), key=lambda t: -t[1])[:8]
        rows.append(("KL per dim (largest)", ", ".join(f"z{d}:{v:.2f}" for d, v in top)))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
