"""Disentanglement metrics: how well a code ``z`` (``[N, D]``) separates ground-truth factors ``v``
(integer indices, ``[N, F]``).

Definitions, sizes and classifiers follow disentanglement_lib (Locatello et al., ICML 2019, its
``unsupervised_study_v1`` settings), in numpy and scikit-learn:

=========================  ===========================================================  =================
metric                     definition                                                   defaults
=========================  ===========================================================  =================
``betavae_metric``         Higgins et al. 2017: fix factor k in pairs of batches; a     batch 64, 10000
                           logistic regression predicts k from mean |z1 - z2|;            train, 5000 eval
                           eval accuracy
``factorvae_metric``       Kim & Mnih 2018: fix factor k in a batch; vote k for the     batch 64, 10000
                           dimension of least variance / global variance (dims with     train, 5000 eval,
                           global std < 0.05 pruned); majority-vote accuracy on eval    10000 for variances
``mig``                    Chen et al. 2018: mean over factors of the gap between the   10000 points,
                           two largest I(z_j; v_k), divided by H(v_k); z discretised     20 bins
                           into 20 equal-width bins
``dci_*``                  Eastwood & Williams 2018: importances R (gradient-boosted    10000 train,
                           trees, one per factor); disentanglement 1 - H_F(R_j.)        5000 test
                           weighted by code importance, completeness 1 - H_D(R_.k)
                           weighted by factor importance, informativeness = test
                           accuracy of the trees
``sap``                    Kumar et al. 2018: per (z_j, v_k) the test accuracy of a     10000 train,
                           linear SVM (C = 0.01, balanced) on z_j alone; mean over k    5000 test
                           of the gap between the top two
``modularity``             Ridgeway & Mozer 2018: per code, 1 - (sum_k m_jk^2 -          10000 train,
                           max_k m_jk^2) / ((F - 1) max_k m_jk^2) with m = I(z_j; v_k)   20 bins
                           (20 bins); mean over codes
``explicitness``           Ridgeway & Mozer 2018: ROC-AUC (macro over classes) of a     10000 train,
                           logistic regression from the standardised code to each      5000 test
                           factor, on the test points; mean over factors
=========================  ===========================================================  =================

Deliberate differences from disentanglement_lib: ``factorvae_num_active`` counts the kept dimensions
(the library reports the length of the mask); explicitness binarises the test labels against the
classifier's classes and skips classes absent from the test points (the library's
``MultiLabelBinarizer`` raises on a test label the training points lack); and the β-VAE metric's and
explicitness's logistic regression is today's scikit-learn default (``solver="lbfgs"``, multinomial),
while the library's published numbers used scikit-learn < 0.22's (liblinear, one-vs-rest):
``solver="liblinear"`` gives that one (:func:`logistic_regression`).  DCI's trees are LightGBM's by
default, within a measured tolerance of the library's scikit-learn ``GradientBoostingClassifier``,
which ``trees="sklearn"`` fits (:mod:`kvae.evaluation.disentanglement_trees`).
"""
import numpy as np

from kvae.evaluation.disentanglement_trees import DEFAULT_TREES
from kvae.evaluation.factor_codes import CachedCodes

DEFAULTS = {"num_train": 10000, "num_test": 5000, "batch_size": 64, "num_variance_estimate": 10000,
            "num_bins": 20, "prune_threshold": 0.05}
KEYS = ("betavae_metric", "factorvae_metric", "mig", "dci_disentanglement", "dci_completeness",
        "dci_informativeness", "sap", "modularity", "explicitness")


# ---------------------------------------------------------------- information-theoretic parts
def histogram_discretize(codes, num_bins=20):
    """Each code dimension cut into ``num_bins`` equal-width bins over its range: ``[N, D]`` ints."""
    codes = np.asarray(codes, np.float64)
    out = np.zeros(codes.shape, np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], num_bins)[1][:-1]
        out[:, j] = np.digitize(codes[:, j], edges)
    return out


def discrete_mutual_info(a, b):
    """``I(a_i; b_k)`` in nats for discrete columns: ``[A, B]``."""
    from sklearn.metrics import mutual_info_score

    return np.array([[mutual_info_score(b[:, k], a[:, i]) for k in range(b.shape[1])] for i in range(a.shape[1])])


def discrete_entropy(v):
    """``H(v_k)`` in nats of each discrete column: ``[F]``."""
    from sklearn.metrics import mutual_info_score

    return np.array([mutual_info_score(v[:, k], v[:, k]) for k in range(v.shape[1])])


def mig(codes, factors, num_bins=20):
    """Mutual information gap (Chen et al. 2018)."""
    m = discrete_mutual_info(histogram_discretize(codes, num_bins), factors)
    top = np.sort(m, axis=0)[::-1]
    return float(np.mean((top[0] - top[1]) / discrete_entropy(factors)))


def modularity(mutual_information):
    """Modularity (Ridgeway & Mozer 2018) of an ``[D, F]`` mutual-information matrix."""
    sq = np.square(np.asarray(mutual_information, np.float64))
    top = sq.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = 1.0 - (sq.sum(axis=1) - top) / (top * (sq.shape[1] - 1.0))
    score[top == 0.0] = 0.0
    return float(np.mean(score))


# ---------------------------------------------------------------- predictor-based parts
SOLVERS = ("lbfgs", "liblinear")


def logistic_regression(solver="lbfgs", random_state=0):
    """An unfitted scikit-learn logistic regression (L2, C = 1).

    Args:
      solver: ``"lbfgs"``: scikit-learn's default today (multinomial); ``"liblinear"``: one-vs-rest
        liblinear fits (its intercept penalised too), scikit-learn < 0.22's default, which
        disentanglement_lib's published numbers used.
      random_state: passed to the estimator.

    Raises:
      ConfigError: an unknown solver.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from kvae.errors import ConfigError

    if solver not in SOLVERS:
        raise ConfigError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if solver == "liblinear":
        return OneVsRestClassifier(LogisticRegression(solver="liblinear", random_state=random_state))
    return LogisticRegression(random_state=random_state)


def dci_from_importance(importance):
    """(disentanglement, completeness) of an ``[D, F]`` importance matrix (Eastwood & Williams 2018)."""
    from scipy.stats import entropy

    r = np.asarray(importance, np.float64)
    weights = r if r.sum() > 0 else np.ones_like(r)
    per_code = 1.0 - entropy(r.T + 1e-11, base=r.shape[1])
    per_factor = 1.0 - entropy(r + 1e-11, base=r.shape[0])
    disentanglement = np.sum(per_code * weights.sum(axis=1) / weights.sum())
    completeness = np.sum(per_factor * weights.sum(axis=0) / weights.sum())
    return float(disentanglement), float(completeness)


def dci(codes_train, factors_train, codes_test, factors_test, seed=0, n_jobs=1, trees=DEFAULT_TREES):
    """``{"dci_disentanglement", "dci_completeness", "dci_informativeness"}`` with one gradient-
    boosted classifier per factor; informativeness is their mean test accuracy.

    Args:
      n_jobs: factors fitted in parallel (joblib processes; -1: one per CPU).  Each fit is seeded
        with ``seed`` alone, so the result does not depend on ``n_jobs``.
      trees: the learner (:mod:`kvae.evaluation.disentanglement_trees`): ``"lightgbm"`` (the default:
        fast, within its stated tolerance of the other) or ``"sklearn"`` (disentanglement_lib's
        ``GradientBoostingClassifier``, its published numbers).

    Raises:
      ConfigError: an unknown ``trees``.
    """
    from joblib import Parallel, delayed

    from kvae.evaluation.disentanglement_trees import check_trees, fit_trees

    check_trees(trees)
    num_factors = factors_train.shape[1]
    # the factors with the most classes first (a fit's cost grows with its classes: one tree per class per stage)
    order = sorted(range(num_factors), key=lambda k: -len(np.unique(factors_train[:, k])))
    fits = Parallel(n_jobs=n_jobs)(delayed(fit_trees)(codes_train, factors_train[:, k], codes_test, seed, trees)
                                   for k in order)
    importance = np.zeros((codes_train.shape[1], num_factors))
    accuracy = np.zeros(num_factors)
    for k, (weights, predicted) in zip(order, fits):
        importance[:, k] = weights
        accuracy[k] = np.mean(predicted == factors_test[:, k])
    d, c = dci_from_importance(importance)
    return {"dci_disentanglement": d, "dci_completeness": c, "dci_informativeness": float(np.mean(accuracy))}


def sap_from_scores(scores):
    """Mean over factors of the gap between the two best codes of an ``[D, F]`` score matrix."""
    top = np.sort(np.asarray(scores, np.float64), axis=0)
    return float(np.mean(top[-1] - top[-2]))


def sap(codes_train, factors_train, codes_test, factors_test):
    """Separated attribute predictability (Kumar et al. 2018), discrete factors."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    scores = np.zeros((codes_train.shape[1], factors_train.shape[1]))
    for j in range(codes_train.shape[1]):
        for k in range(factors_train.shape[1]):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf = LinearSVC(C=0.01, class_weight="balanced").fit(codes_train[:, j:j + 1], factors_train[:, k])
            scores[j, k] = np.mean(clf.predict(codes_test[:, j:j + 1]) == factors_test[:, k])
    return sap_from_scores(scores)


def explicitness(codes_train, factors_train, codes_test, factors_test, solver="lbfgs"):
    """Mean over factors of the test ROC-AUC of a logistic regression on the standardised code
    (``solver``: :func:`logistic_regression`)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import label_binarize

    mean, std = codes_train.mean(axis=0), codes_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    a, b = (codes_train - mean) / std, (codes_test - mean) / std
    scores = []
    for k in range(factors_train.shape[1]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = logistic_regression(solver).fit(a, factors_train[:, k])
        proba = clf.predict_proba(b)
        truth = label_binarize(factors_test[:, k], classes=clf.classes_)
        if len(clf.classes_) == 2:  # label_binarize gives one column for two classes
            truth = np.concatenate([1 - truth, truth], axis=1)
        both = (truth.min(axis=0) == 0) & (truth.max(axis=0) == 1)
        scores.append(roc_auc_score(truth[:, both], proba[:, both], average="macro"))
    return float(np.mean(scores))


# ---------------------------------------------------------------- intervention-based metrics
def _codes(represent, data, factors):
    if isinstance(represent, CachedCodes):
        return represent(factors)
    return np.asarray(represent(data.images(factors)), np.float64)


def betavae_scores(x_train, y_train, x_eval, y_eval, solver="lbfgs"):
    """``{"betavae_metric", "betavae_metric_train"}``: accuracies of a logistic regression
    (:func:`logistic_regression`) fitted to the training points."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = logistic_regression(solver).fit(x_train, y_train)
    return {"betavae_metric": float(np.mean(clf.predict(x_eval) == y_eval)),
            "betavae_metric_train": float(np.mean(clf.predict(x_train) == y_train))}


def betavae_metric(data, represent, rng, batch_size=64, num_train=10000, num_eval=5000, progress=None,
                   solver="lbfgs"):
    """β-VAE metric (Higgins et al. 2017): eval accuracy of a logistic regression (``solver``:
    :func:`logistic_regression`) that names the fixed factor from ``mean |z(x1) - z(x2)|`` over a
    batch of pairs sharing that factor."""

    def points(n):
        features, labels = [], []
        group = max(1, 4096 // (2 * batch_size))  # points encoded together
        for start in range(0, n, group):
            ks, pairs = [], []
            for _ in range(min(group, n - start)):
                k = int(rng.integers(data.num_factors))
                f1, f2 = data.sample_factors(batch_size, rng), data.sample_factors(batch_size, rng)
                f2[:, k] = f1[:, k]
                ks.append(k)
                pairs += [f1, f2]
            z = _codes(represent, data, np.concatenate(pairs)).reshape(len(ks), 2, batch_size, -1)
            features.append(np.mean(np.abs(z[:, 0] - z[:, 1]), axis=1))
            labels += ks
            if progress:
                progress(len(ks))
        return np.concatenate(features), np.array(labels)

    x_train, y_train = points(num_train)
    x_eval, y_eval = points(num_eval)
    return betavae_scores(x_train, y_train, x_eval, y_eval, solver)


def factorvae_votes(data, represent, rng, global_variances, active, batch_size, n, progress=None):
    """``[F, D]`` votes: for each of n batches with one factor fixed, the kept dimension of least
    (batch variance / global variance) votes for that factor."""
    votes = np.zeros((data.num_factors, len(global_variances)), np.int64)
    kept = np.flatnonzero(active)
    group = max(1, 4096 // batch_size)  # batches encoded together
    for start in range(0, n, group):
        ks = [int(rng.integers(data.num_factors)) for _ in range(min(group, n - start))]
        batches = [data.sample_with_fixed(batch_size, k, rng) for k in ks]
        z = _codes(represent, data, np.concatenate(batches)).reshape(len(ks), batch_size, -1)
        for k, zk in zip(ks, z):
            local = np.var(zk, axis=0, ddof=1)
            votes[k, kept[np.argmin(local[kept] / global_variances[kept])]] += 1
        if progress:
            progress(len(ks))
    return votes


def factorvae_metric(data, represent, rng, batch_size=64, num_train=10000, num_eval=5000,
                     num_variance_estimate=10000, prune_threshold=0.05, progress=None):
    """FactorVAE metric (Kim & Mnih 2018): majority-vote classifier accuracy on eval votes."""
    z = _codes(represent, data, data.sample_factors(num_variance_estimate, rng))
    global_variances = np.var(z, axis=0, ddof=1)
    active = np.sqrt(global_variances) >= prune_threshold
    if not active.any():
        return {"factorvae_metric": 0.0, "factorvae_metric_train": 0.0, "factorvae_num_active": 0}
    train = factorvae_votes(data, represent, rng, global_variances, active, batch_size, num_train, progress)
    classifier = np.argmax(train, axis=0)  # each dimension -> the factor it votes for most
    columns = np.arange(train.shape[1])
    evaluation = factorvae_votes(data, represent, rng, global_variances, active, batch_size, num_eval, progress)
    return {"factorvae_metric": float(evaluation[classifier, columns].sum() / evaluation.sum()),
            "factorvae_metric_train": float(train[classifier, columns].sum() / train.sum()),
            "factorvae_num_active": int(active.sum())}


# ---------------------------------------------------------------- everything at once
def evaluate(data, represent, seed=0, num_train=10000, num_test=5000, batch_size=64, num_variance_estimate=10000,
             num_bins=20, prune_threshold=0.05, progress=None, solver="lbfgs", n_jobs=1, cache=True,
             overlap=True, trees=DEFAULT_TREES):
    """Every metric above for ``represent`` (images -> codes ``[n, D]``) on a factor data set
    (:mod:`kvae.data.factors`); one numpy generator seeded with ``seed`` draws all factors.

    Args:
      progress: called as ``progress(done, total)`` as representation batches complete.
      solver: the β-VAE metric's and explicitness's logistic regression (:func:`logistic_regression`).
      n_jobs: DCI's factors fitted in parallel (:func:`dci`).
      trees: DCI's tree learner (:func:`dci`).
      cache: encode each grid position once, shared by all metrics (:class:`CachedCodes`; for a
        deterministic ``represent``); ``False``: every drawn image is encoded where it is drawn.
      overlap: fit DCI's trees in a background thread (and its ``n_jobs`` processes) while the other
        metrics run; the same numbers either way.

    Returns:
      A dict with :data:`KEYS`, the training-set accuracies, ``"seconds"``: wall-clock seconds per
      metric (``codes``: the i.i.d. training and test points the first five share; each intervention
      metric includes encoding the images it needs that were not encoded before; ``dci`` overlaps the
      others with ``overlap``; ``total``: the whole call) and ``"encoding"``:
      ``images_requested``, ``images_encoded`` and the ``render_seconds`` / ``encode_seconds``
      within the above (with ``cache`` only).
    """
    import time
    from concurrent.futures import ThreadPoolExecutor

    from kvae.evaluation.disentanglement_trees import check_trees

    check_trees(trees)  # before any encoding
    begin, rng = time.perf_counter(), np.random.default_rng(seed)
    if cache and not isinstance(represent, CachedCodes):
        represent = CachedCodes(data, represent)
    # progress steps: the i.i.d. codes in chunks of 1000, then one per point of each intervention metric
    total = -(-num_train // 1000) + -(-num_test // 1000) + 2 * (num_train + num_test)
    state, seconds = {"done": 0}, {}

    def tick(n=1):
        state["done"] += n
        if progress:
            progress(state["done"], total)

    def iid(n):
        factors = data.sample_factors(n, rng)
        codes = np.concatenate([_codes(represent, data, factors[i:i + 1000]) for i in range(0, n, 1000)])
        tick(-(-n // 1000))
        return codes, factors

    def timed(name, compute):
        start = time.perf_counter()
        value = compute()
        seconds[name] = time.perf_counter() - start
        return value

    out = {}
    (z_train, v_train), (z_test, v_test) = timed("codes", lambda: (iid(num_train), iid(num_test)))

    def fit_dci():
        return timed("dci", lambda: dci(z_train, v_train, z_test, v_test, seed=seed, n_jobs=n_jobs,
                                             trees=trees))

    background = ThreadPoolExecutor(1) if overlap else None
    dci_scores = background.submit(fit_dci) if overlap else fit_dci()
    out["mig"] = timed("mig", lambda: mig(z_train, v_train, num_bins))
    out["modularity"] = timed("modularity", lambda: modularity(
        discrete_mutual_info(histogram_discretize(z_train, num_bins), v_train)))
    out["explicitness"] = timed("explicitness", lambda: explicitness(z_train, v_train, z_test, v_test, solver))
    out["sap"] = timed("sap", lambda: sap(z_train, v_train, z_test, v_test))
    out.update(timed("betavae_metric", lambda: betavae_metric(data, represent, rng, batch_size, num_train, num_test,
                                                              progress=tick, solver=solver)))
    out.update(timed("factorvae_metric", lambda: factorvae_metric(data, represent, rng, batch_size, num_train,
                                                                  num_test, num_variance_estimate, prune_threshold,
                                                                  progress=tick)))
    if overlap:
        dci_scores = dci_scores.result()
        background.shutdown()
    out.update(dci_scores)
    out["seconds"] = {**seconds, "total": time.perf_counter() - begin}
    if isinstance(represent, CachedCodes):
        out["encoding"] = {"images_requested": represent.requested, "images_encoded": represent.encoded,
                           **{f"{step}_seconds": t for step, t in represent.seconds.items()}}
    return out
