"""Sample-quality measures against transcriptions of their definitions, and the shipped LeNet."""
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from kvae.evaluation import sample_quality as sq


def test_frechet_distance_equals_its_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + 0.5
    s_a, s_b = np.cov(a.T), np.cov(b.T)
    # tr (S_a S_b)^(1/2) = sum of the square roots of the eigenvalues of S_a S_b (all real, >= 0)
    root_trace = np.sum(np.sqrt(np.abs(np.linalg.eigvals(s_a @ s_b))))
    want = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * root_trace
    np.testing.assert_allclose(sq.frechet_distance(a, b), want, rtol=1e-8)
    assert abs(sq.frechet_distance(a, a)) < 1e-8
    # two known Gaussians, many samples: ||mu||^2 + sum (s1 + s2 - 2 sqrt(s1 s2)) for diagonal covariances
    x = rng.normal(size=(200000, 2)) * [1.0, 2.0]
    y = rng.normal(size=(200000, 2)) * [3.0, 2.0] + [1.0, 0.0]
    np.testing.assert_allclose(sq.frechet_distance(x, y), 1.0 + (1 + 9 - 2 * 3), atol=0.1)


def test_precision_recall_equals_the_k_nearest_neighbour_definition():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(120, 3)), rng.normal(size=(90, 3)) * 1.5 + 0.3

    def manifold_share(points, centres, k):
        d_cc = cdist(centres, centres)
        radius = np.sort(d_cc, axis=1)[:, k]  # column 0 is the centre itself
        return np.mean((cdist(points, centres) <= radius[None, :]).any(axis=1))

    for k in (1, 3, 5):
        got = sq.precision_recall(real, fake, k=k, chunk=7)  # chunks that do not divide the sets
        np.testing.assert_allclose(got["precision"], manifold_share(fake, real, k), atol=1e-12)
        np.testing.assert_allclose(got["recall"], manifold_share(real, fake, k), atol=1e-12)
    assert sq.precision_recall(real, real) == {"precision": 1.0, "recall": 1.0}
    assert sq.precision_recall(real, real + 100.0) == {"precision": 0.0, "recall": 0.0}


def test_mode_dropping_lowers_recall_not_precision():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(10, 8)) * 10
    real = centres[rng.integers(0, 10, 2000)] + rng.normal(size=(2000, 8))
    full = centres[rng.integers(0, 10, 2000)] + rng.normal(size=(2000, 8))  # the same distribution
    dropped = centres[rng.integers(0, 5, 2000)] + rng.normal(size=(2000, 8))  # half the modes
    base, got = sq.precision_recall(real, full), sq.precision_recall(real, dropped)
    assert abs(got["precision"] - base["precision"]) < 0.05, (base, got)
    assert 0.4 * base["recall"] < got["recall"] < 0.6 * base["recall"], (base, got)


def test_the_shipped_lenet_separates_digits_from_scrambled_digits(digits28_dir):
    from kvae.data import datasets as data

    # 28x28 binary digits bundled with the tests (scikit-learn's, enlarged): 1197 train, 300 valid
    train, _ = data.load("binarized_mnist", "train", digits28_dir).arrays()
    valid, _ = data.load("binarized_mnist", "valid", digits28_dir).arrays()
    features = sq.LeNetFeatures()
    f_valid, f_train = features(valid), features(train[:600])
    assert f_valid.shape == (300, 84)
    rng = np.random.default_rng(0)
    scrambled = np.stack([rng.permutation(im.ravel()).reshape(im.shape) for im in train[600:]])
    same, other = sq.frechet_distance(f_valid, f_train), sq.frechet_distance(f_valid, features(scrambled))
    assert same * 10 < other, (same, other)  # measured: 47 against 1121
    with pytest.raises(ValueError, match=r"LeNet features need images of shape \(28, 28, 1\), got \(8, 8, 1\)"):
        features(np.zeros((2, 8, 8, 1)))
    result = sq.evaluate(train[600:900], valid, train)
    assert result["precision_recall_space"] == "lenet" and result["fid_lenet"] < 0.2 * other
    # real digits against scrambled ones (measured 0.77 / 0.79 against 0.28 / 0.00)
    noise = sq.evaluate(scrambled[:300], valid, train)
    assert result["precision"] > noise["precision"] + 0.3 and result["recall"] > noise["recall"] + 0.5, (result, noise)


def test_images_of_other_shapes_use_the_pca_space(digits):
    x = digits["train"].arrays()[0]
    result = sq.evaluate(x[:300], x[300:600], x)
    assert result["fid_lenet"] is None and result["precision_recall_space"] == "pca"
    assert result["fid_pca"] < sq.evaluate(np.random.default_rng(0).uniform(size=(300, 8, 8, 1)) > 0.5,
                                           x[300:600], x)["fid_pca"]


def test_cli_reports_sample_quality(tmp_path, digits28_dir):
    mnist_dir = digits28_dir  # the binarized_mnist file format, of 28x28 digits bundled with the tests
    import json

    from kvae.cli import main as cli

    run = str(tmp_path / "rae")
    assert cli.main(["train", "--model", "rae", "--dataset", "binarized_mnist", "--data-dir", mnist_dir,
                     "--limit", "2000", "--epochs", "1", "--hidden", "64", "--fit-density", "--out", run,
                     "--quiet"]) == 0
    from kvae.data import datasets as data
    from kvae.training import runs

    model, _ = runs.load_run(run)
    valid = data.load("binarized_mnist", "valid", mnist_dir).arrays()[0][:300]
    train = data.load("binarized_mnist", "train", mnist_dir).head(10000).arrays()[0]
    scores = {}
    for source in ("prior", "density"):
        path = str(tmp_path / f"{source}.json")
        assert cli.main(["evaluate", run, "--data-dir", mnist_dir, "--split", "valid", "--limit", "300",
                         "--sample-quality", "--sample-n", "300", "--sample-source", source, "--json", path]) == 0
        scores[source] = json.load(open(path))
        assert scores[source]["sample_n"] == 300 and scores[source]["sample_source"] == source
        # the numbers of the library on the same pieces: 300 binary draws of the model at seed 0 (a Bernoulli
        # decoder: draws, not means), the first 300 validation images, the training set as reference
        samples = np.asarray(model.sample(300, seed=0, mean=False, source=source))
        assert set(np.unique(samples)) <= {0.0, 1.0}
        want = sq.evaluate(samples, valid, train, seed=0)
        for key in ("fid_lenet", "fid_pca", "precision", "recall"):
            assert scores[source][key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), (source, key)
    assert scores["prior"]["fid_lenet"] != scores["density"]["fid_lenet"]


def test_manifold_balls_are_closed_and_k_defaults_to_three():
    real = np.arange(6, dtype=float)[:, None]  # points 1 apart: every 1st-neighbour radius is 1
    assert sq.precision_recall(real, np.array([[-1.0], [2.5]]), k=1)["precision"] == 1.0  # -1: on the ball
    assert sq.precision_recall(real, np.array([[-1.01], [2.5]]), k=1)["precision"] == 0.5
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(200, 4)), rng.normal(size=(150, 4)) * 1.3
    assert sq.precision_recall(a, b) == sq.precision_recall(a, b, k=3) != sq.precision_recall(a, b, k=4)


def test_a_failed_square_root_is_retried_with_jitter(monkeypatch):
    from scipy import linalg

    calls = []
    real_sqrtm = linalg.sqrtm

    def failing_once(m):
        calls.append(np.array(m))
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(linalg, "sqrtm", failing_once)
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(40, 3))
    got = sq.frechet_distance(a, b)
    s_a, s_b = np.cov(a.T), np.cov(b.T)
    jitter = 1e-6 * np.eye(3)
    np.testing.assert_allclose(calls[1], (s_a + jitter) @ (s_b + jitter), rtol=1e-12)
    monkeypatch.setattr(linalg, "sqrtm", real_sqrtm)
    np.testing.assert_allclose(got, sq.frechet_distance(a, b), atol=1e-4)


def _singular_features(seed, n, k):
    rng = np.random.RandomState(seed)
    a = rng.normal(size=(n, k)) * rng.lognormal(0, 3, size=k)
    b = rng.normal(size=(n, k)) * rng.lognormal(0, 3, size=k)
    return a, b


def test_frechet_distance_raises_on_an_imaginary_square_root_above_1e_3_as_pytorch_fid():
    """20 samples of 300 features with scales spread over e^±9 (seed 2): scipy's sqrtm(S_a S_b) has an imaginary
    part of about 0.26 on its diagonal, which pytorch-fid refuses (ValueError) rather than dropping it; 5 samples of 64
    features (seed 0): about 1.6e-5, kept as the real part."""
    from scipy import linalg

    from kvae.errors import DataError

    def diagonal_imaginary(a, b):
        root = linalg.sqrtm(np.cov(a, rowvar=False) @ np.cov(b, rowvar=False))
        return float(np.max(np.abs(np.diagonal(root).imag))) if np.iscomplexobj(root) else 0.0, np.real(root)

    a, b = _singular_features(2, 20, 300)
    assert diagonal_imaginary(a, b)[0] > 1e-2  # the premise, computed independently
    with pytest.raises(DataError, match="imaginary part"):
        sq.frechet_distance(a, b)
    a, b = _singular_features(0, 5, 64)
    imaginary, real_root = diagonal_imaginary(a, b)
    assert 0.0 < imaginary < 1e-3
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    want = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(real_root)
    np.testing.assert_allclose(sq.frechet_distance(a, b), want, rtol=1e-10)
