"""DCI's per-factor gradient-boosted trees (:func:`kvae.evaluation.disentanglement.dci`): the learner
that gives each code dimension its importance for one factor and predicts that factor.

Two learners, the same boosting settings (100 stages, learning rate 0.1, depth-3 trees, one tree
per class per stage for more than two classes, softmax loss started from the log class priors,
Newton leaf values, no subsampling):

* ``"sklearn"``: scikit-learn's ``GradientBoostingClassifier`` at its defaults, disentanglement_lib's
  learner and the one its published numbers used (exact split search; importances: the trees'
  mean impurity decrease).
* ``"lightgbm"`` (the default): LightGBM's ``LGBMClassifier`` with the settings above (leaf-wise
  growth capped at depth 3 and 8 leaves, one sample per leaf allowed, no L1/L2 penalty; LightGBM's
  default minimum hessian sum per leaf, 1e-3, stays on);
  importances: total split gain.  It differs from scikit-learn's learner in its split search (each
  code binned into at most 255 histogram bins; splits ranked by the second-order gain instead of
  the first-order Friedman MSE).

Chosen by measurement (``benchmarks/disentanglement_trees.json``): on the 10,000 codes DCI scores
for the FactorVAE of issue 31's command (dSprites, 113 classes over five factors) LightGBM fitted
the five factors in 10 CPU seconds against scikit-learn's 778, and its scores differed by 0.036
(disentanglement), 0.018 (completeness) and 0.015 (informativeness).  On synthetic codes of known
structure (2,000 points of a 3 x 6 x 10 x 8 grid) the largest difference was 0.057 (completeness
of an axis-aligned code, where LightGBM's score is the lower; scikit-learn's own completeness moves
by 0.0003 on a second draw of the points, its disentanglement by 0.005: a systematic difference), at about 1/20 of the CPU time.  :data:`TOLERANCE` is the
largest measured difference, rounded up.  scikit-learn's ``HistGradientBoostingClassifier`` (the
same histogram method; 13 CPU seconds on those codes, as fast) exposes no feature importances,
which DCI needs, short of reading its private tree structures.

Both learners' importances are normalised to sum to one per factor (what ``feature_importances_``
of scikit-learn gives), so that DCI weighs every factor alike in its completeness.
"""
import numpy as np

TREES = ("lightgbm", "sklearn")
DEFAULT_TREES = "lightgbm"
#: largest |difference| of dci_disentanglement, dci_completeness and dci_informativeness between the
#: two learners measured in benchmarks/disentanglement_trees.json, rounded up.
TOLERANCE = 0.06


def check_trees(trees):
    """``trees`` if it names a learner of :data:`TREES`.

    Raises:
      ConfigError: any other value.
    """
    from kvae.errors import ConfigError

    if trees not in TREES:
        raise ConfigError(f"DCI trees must be one of {', '.join(TREES)}; got {trees!r}")
    return trees


def _sklearn_trees(codes_train, labels, codes_test, seed):
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(random_state=seed).fit(codes_train, labels)
    return np.abs(model.feature_importances_), model.predict(codes_test)


def lightgbm_classifier(seed=0):
    """The unfitted ``LGBMClassifier`` of ``trees="lightgbm"`` (one thread; ``seed``: its random state)."""
    import lightgbm

    return lightgbm.LGBMClassifier(n_estimators=100, learning_rate=0.1, max_depth=3, num_leaves=8, min_child_samples=1,
                                   reg_lambda=0.0, reg_alpha=0.0, min_split_gain=0.0,
                                   subsample=1.0, colsample_bytree=1.0, importance_type="gain", random_state=seed,
                                   n_jobs=1, verbose=-1)


def _lightgbm_trees(codes_train, labels, codes_test, seed):
    model = lightgbm_classifier(seed).fit(np.asarray(codes_train, np.float64), labels)
    gain = np.abs(np.asarray(model.feature_importances_, np.float64))
    total = gain.sum()
    return (gain / total if total > 0 else gain), model.predict(np.asarray(codes_test, np.float64))


def fit_trees(codes_train, labels, codes_test, seed=0, trees=DEFAULT_TREES):
    """One factor's boosted trees fitted to ``(codes_train [N, D], labels [N])``.

    Args:
      seed: the learner's random state.
      trees: the learner (:data:`TREES`, see the module docstring).

    Returns:
      ``(importance [D]`` (non-negative, summing to one, or all zero when no tree split),
      ``predicted labels of codes_test)``.

    Raises:
      ConfigError: an unknown ``trees``.
    """
    fit = {"lightgbm": _lightgbm_trees, "sklearn": _sklearn_trees}[check_trees(trees)]
    return fit(codes_train, labels, codes_test, seed)
