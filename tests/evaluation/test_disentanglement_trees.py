"""DCI's tree learners (kvae.evaluation.disentanglement_trees): LightGBM's agrees with
disentanglement_lib's scikit-learn GradientBoostingClassifier within the stated tolerance."""
import numpy as np
import pytest

from kvae.errors import ConfigError
from kvae.evaluation import disentanglement as dm
from kvae.evaluation import disentanglement_trees as dt
from kvae.data import factors


def two_factor_codes(n, rng):
    """Factor 0 (2 values) in code 0 alone; factor 1 (6 values) copied into codes 1 and 2: DCI's
    completeness is ~1 for factor 0 and ~0.37 for factor 1 with importances normalised per factor,
    while unnormalised gains (factor 1's six trees per stage outweigh factor 0's one) pull it to ~0.56."""
    v = np.stack([rng.integers(0, 2, size=n), rng.integers(0, 6, size=n)], axis=1)
    z = np.stack([v[:, 0], v[:, 1], v[:, 1]], axis=1) + 0.1 * rng.normal(size=(n, 3))
    return z, v


def test_lightgbm_dci_agrees_with_the_published_learner_within_the_stated_tolerance():
    rng = np.random.default_rng(0)
    (z_train, v_train), (z_test, v_test) = two_factor_codes(400, rng), two_factor_codes(200, rng)
    fast = dm.dci(z_train, v_train, z_test, v_test, seed=0, trees="lightgbm")
    exact = dm.dci(z_train, v_train, z_test, v_test, seed=0, trees="sklearn")
    for key in ("dci_disentanglement", "dci_completeness", "dci_informativeness"):
        assert abs(fast[key] - exact[key]) <= dt.TOLERANCE, (key, fast[key], exact[key])
    assert exact["dci_completeness"] == pytest.approx(0.5 * (1.0 + 1.0 - np.log(2) / np.log(3)), abs=0.05)

    # the same trees with their gains left unnormalised (one total per factor) fall outside it
    importance = np.zeros((3, 2))
    for k in range(2):
        importance[:, k] = dt.lightgbm_classifier(0).fit(z_train, v_train[:, k]).booster_.feature_importance("gain")
    _, unnormalised = dm.dci_from_importance(importance)
    assert abs(unnormalised - exact["dci_completeness"]) > dt.TOLERANCE, (unnormalised, exact["dci_completeness"])


def test_lightgbm_trees_return_normalised_split_gains_and_the_most_probable_class():
    rng = np.random.default_rng(1)
    z, v = two_factor_codes(300, rng)
    labels = v[:, 1] * 3 + 10  # labels that are not 0..K-1
    importance, predicted = dt.fit_trees(z[:200], labels[:200], z[200:], seed=0, trees="lightgbm")
    model = dt.lightgbm_classifier(0).fit(z[:200], labels[:200])
    gain = model.booster_.feature_importance("gain")
    np.testing.assert_allclose(importance, gain / gain.sum(), rtol=1e-12)
    assert importance.sum() == pytest.approx(1.0) and importance[0] < 0.01  # code 0 says nothing of factor 1
    np.testing.assert_array_equal(predicted, model.classes_[np.argmax(model.predict_proba(z[200:]), axis=1)])
    assert np.mean(predicted == labels[200:]) > 0.95


def test_the_sklearn_learner_is_disentanglement_libs():
    from sklearn.ensemble import GradientBoostingClassifier

    rng = np.random.default_rng(2)
    z, v = two_factor_codes(200, rng)
    importance, predicted = dt.fit_trees(z[:150], v[:150, 1], z[150:], seed=3, trees="sklearn")
    model = GradientBoostingClassifier(random_state=3).fit(z[:150], v[:150, 1])
    np.testing.assert_array_equal(importance, model.feature_importances_)
    np.testing.assert_array_equal(predicted, model.predict(z[150:]))


def test_an_unknown_learner_is_named_before_anything_is_encoded():
    def represent(images):
        raise AssertionError("encoded before the learner was checked")

    with pytest.raises(ConfigError, match="DCI trees must be one of lightgbm, sklearn; got 'xgboost'"):
        dm.evaluate(factors.FactorGrid((2, 3)), represent, num_train=10, num_test=5, trees="xgboost")
    z = np.zeros((4, 2))
    with pytest.raises(ConfigError, match="got 'GradientBoosting'"):
        dm.dci(z, np.zeros((4, 1), int), z, np.zeros((4, 1), int), trees="GradientBoosting")
