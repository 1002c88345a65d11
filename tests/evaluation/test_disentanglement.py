"""Disentanglement metrics against transcriptions of their formulas (numpy, by hand) and on codes
whose answer is known; the procedural dSprites renderer by its geometry."""
import os

import numpy as np
import pytest

from kvae.evaluation import disentanglement as dm
from kvae.data import factors


# -- the formulas, transcribed independently ------------------------------------------------------------

def mutual_information(a, b):
    """I(a; b) in nats from the joint histogram of two integer vectors."""
    av, ai = np.unique(a, return_inverse=True)
    bv, bi = np.unique(b, return_inverse=True)
    joint = np.zeros((len(av), len(bv)))
    np.add.at(joint, (ai, bi), 1.0)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(joint[nz] / outer[nz])))


def test_discretisation_is_twenty_equal_width_bins_per_dimension():
    codes = np.array([[0.0, 5.0], [0.99, 5.5], [1.0, 6.0], [2.0, 7.0], [1.95, 5.0]])
    got = dm.histogram_discretize(codes, num_bins=20)
    # bin b covers [lo + b w, lo + (b + 1) w), numbered from 1; the maximum falls in the last bin
    for j in range(2):
        lo, hi = codes[:, j].min(), codes[:, j].max()
        w = (hi - lo) / 20
        want = np.minimum(np.floor((codes[:, j] - lo) / w + 1e-9), 19).astype(int) + 1
        np.testing.assert_array_equal(got[:, j], want)


def test_mig_equals_its_definition_on_a_small_example():
    rng = np.random.default_rng(0)
    v = rng.integers(0, 4, size=(400, 2))
    codes = np.stack([v[:, 0] + 0.3 * rng.normal(size=400), rng.normal(size=400),
                      v[:, 1] + 0.9 * rng.normal(size=400)], axis=1)
    binned = dm.histogram_discretize(codes, 20)
    mi = np.array([[mutual_information(binned[:, j], v[:, k]) for k in range(2)] for j in range(3)])
    h = np.array([mutual_information(v[:, k], v[:, k]) for k in range(2)])
    gaps = [(np.sort(mi[:, k])[-1] - np.sort(mi[:, k])[-2]) / h[k] for k in range(2)]
    np.testing.assert_allclose(dm.discrete_mutual_info(binned, v), mi, atol=1e-12)
    np.testing.assert_allclose(dm.mig(codes, v), np.mean(gaps), atol=1e-12)
    assert 0.2 < dm.mig(codes, v) < 1.0


def test_modularity_equals_its_definition():
    m = np.array([[0.9, 0.1, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0], [0.2, 0.0, 0.6]])
    want = []
    for row in m:
        sq = row ** 2
        want.append(0.0 if sq.max() == 0 else 1 - (sq.sum() - sq.max()) / (sq.max() * 2))
    assert want[1] == 0.0 and want[2] == 0.0  # equal information about all factors / none at all
    np.testing.assert_allclose(dm.modularity(m), np.mean(want), atol=1e-12)


def test_dci_equals_its_definition_on_a_fixed_importance_matrix():
    r = np.array([[0.8, 0.0], [0.1, 0.3], [0.1, 0.7], [0.0, 0.0]])  # 4 codes x 2 factors

    def entropy(p, base):
        p = p / p.sum()
        p = p[p > 0]
        return -np.sum(p * np.log(p)) / np.log(base)

    d_codes = [1 - entropy(row, 2) if row.sum() > 0 else 0.0 for row in r]
    d = sum(dj * r[j].sum() / r.sum() for j, dj in enumerate(d_codes))
    c = sum((1 - entropy(r[:, k], 4)) * r[:, k].sum() / r.sum() for k in range(2))
    got = dm.dci_from_importance(r)
    np.testing.assert_allclose(got, (d, c), atol=1e-6)
    np.testing.assert_allclose(dm.dci_from_importance(np.eye(3)), (1.0, 1.0), atol=1e-6)
    np.testing.assert_allclose(dm.dci_from_importance(np.ones((3, 3))), (0.0, 0.0), atol=1e-6)


def test_sap_is_the_mean_top_two_gap():
    scores = np.array([[0.9, 0.2], [0.5, 0.6], [0.1, 0.55]])
    np.testing.assert_allclose(dm.sap_from_scores(scores), np.mean([0.9 - 0.5, 0.6 - 0.55]), atol=1e-12)


def test_explicitness_is_the_roc_auc_of_the_probabilities():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    v = rng.integers(0, 2, size=(300, 1))
    z = v + rng.normal(scale=1.0, size=(300, 1))
    got = dm.explicitness(z[:200], v[:200], z[200:], v[200:])
    mean, std = z[:200].mean(0), z[:200].std(0)
    p = LogisticRegression().fit((z[:200] - mean) / std, v[:200, 0]).predict_proba((z[200:] - mean) / std)[:, 1]
    y = v[200:, 0]
    # the AUC by its definition: P(score of a positive > score of a negative), ties counted half
    pos, neg = p[y == 1], p[y == 0]
    auc = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    np.testing.assert_allclose(got, auc, atol=1e-12)  # both columns of a binary factor give the same AUC
    assert 0.6 < got < 0.95


def test_factorvae_votes_go_to_the_dimension_of_least_relative_variance():
    data = factors.FactorGrid((4, 4))
    # z = (factor 1, factor 0, noise): fixing factor 0 leaves dimension 1 constant, factor 1 -> dimension 0
    noise = np.random.default_rng(0)

    def represent(x):
        return np.stack([x[:, 1], x[:, 0], noise.normal(size=len(x))], axis=1)

    votes = dm.factorvae_votes(data, represent, np.random.default_rng(1), np.ones(3), np.ones(3, bool), 16, 50)
    assert votes[0, 1] + votes[1, 0] == 50 and votes[0, 1] > 10 and votes[1, 0] > 10
    pruned = dm.factorvae_votes(data, represent, np.random.default_rng(1), np.ones(3), np.array([True, False, True]),
                                16, 50)
    assert pruned[:, 1].sum() == 0 and pruned[1, 0] == votes[1, 0]  # a pruned dimension never votes


# -- codes whose answer is known ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scored():
    data = factors.FactorGrid((3, 6, 10, 8))
    q = np.linalg.qr(np.random.default_rng(1).normal(size=(4, 4)))[0]
    codes = {"identity": lambda x: x + 0.01 * np.random.default_rng(2).normal(size=x.shape),
             "rotated": lambda x: x @ q,
             "noise": lambda x: np.random.default_rng(int(1e6 * x.sum()) % 2 ** 32).normal(size=x.shape)}
    return {name: dm.evaluate(data, f, seed=0, num_train=1500, num_test=800, num_variance_estimate=1500)
            for name, f in codes.items()}


def test_the_factors_themselves_score_the_maximum(scored):
    s = scored["identity"]
    for key in ("betavae_metric", "factorvae_metric", "dci_disentanglement", "dci_completeness",
                "dci_informativeness", "modularity", "explicitness"):
        assert s[key] > 0.97, (key, s[key])
    assert s["mig"] > 0.9


def test_a_rotation_scores_lower_and_noise_scores_nothing(scored):
    ident, rot, noise = scored["identity"], scored["rotated"], scored["noise"]
    for key in ("mig", "dci_disentanglement", "dci_completeness", "sap", "modularity"):
        assert ident[key] > rot[key] + 0.1 > noise[key], (key, ident[key], rot[key], noise[key])
    for key in ("mig", "dci_disentanglement", "dci_completeness", "sap"):
        assert noise[key] < 0.05, (key, noise[key])
    for key in ("betavae_metric", "factorvae_metric"):  # chance is 1/4
        assert abs(noise[key] - 0.25) < 0.06, (key, noise[key])
    assert abs(noise["explicitness"] - 0.5) < 0.05
    assert set(dm.KEYS) <= set(ident)


def test_mig_of_a_factor_copied_into_two_dimensions_is_near_zero():
    rng = np.random.default_rng(0)
    v = rng.integers(0, 8, size=(3000, 2))
    copied = np.stack([v[:, 0], v[:, 0] + 1e-3 * rng.normal(size=3000), v[:, 1]], axis=1).astype(float)
    assert dm.mig(copied[:, [0, 1]], v[:, :1]) < 0.02
    assert dm.mig(copied[:, [0, 2]], v) > 0.95


# -- procedural dSprites ------------------------------------------------------------------------------------

def test_dsprites_grid_and_sampler():
    d = factors.DSprites()
    assert len(d) == 737280 and d.num_factors == 5 and d.image_shape == (64, 64, 1)
    rng = np.random.default_rng(0)
    f = d.sample_factors(2000, rng)
    assert f.shape == (2000, 5) and (f.min(0) == 0).all() and (f.max(0) == np.array(d.factor_sizes) - 1).all()
    np.testing.assert_array_equal(d.factors_of(d.index(f)), f)
    assert d.index(np.array([[2, 5, 39, 31, 31]]))[0] == 737279
    fixed = d.sample_with_fixed(64, 2, rng)
    assert len(set(fixed[:, 2])) == 1 and len(set(fixed[:, 3])) > 1
    with pytest.raises(ValueError, match=r"factor orientation must be in 0..39; 1 values are not \(first at row 1: 40\)"):
        d.images(np.array([[0, 0, 0, 0, 0], [0, 0, 40, 0, 0]]))


def test_dsprites_images_follow_their_factors():
    d = factors.DSprites()
    base = np.array([[1, 5, 0, 16, 16]])

    def vary(k, values):
        f = np.repeat(base, len(values), axis=0)
        f[:, k] = values
        return d.images(f)[..., 0].astype(float)

    ims = vary(3, [0, 10, 20, 31])  # x moves the centroid's column, and only it
    assert set(np.unique(ims)) == {0.0, 1.0}
    cols = [(im.sum(0) * np.arange(64)).sum() / im.sum() for im in ims]
    rows = [(im.sum(1) * np.arange(64)).sum() / im.sum() for im in ims]
    assert np.all(np.diff(cols) > 10) and np.ptp(rows) < 0.5
    np.testing.assert_allclose(cols[0], 13.0, atol=0.6)
    np.testing.assert_allclose(cols[-1], 51.0, atol=0.6)
    areas = vary(1, [0, 5]).sum((1, 2))  # scale 0.5 -> 1: area x4 (within the raster's error)
    assert 3.3 < areas[1] / areas[0] < 4.7
    shapes = vary(0, [0, 1, 2]).sum((1, 2))  # square, ellipse, heart: different areas
    assert len(set(shapes)) == 3
    turned = vary(2, [0, 10, 39])  # orientation 2 pi equals 0; a quarter turn of the ellipse differs
    np.testing.assert_array_equal(turned[0], turned[2])
    assert np.abs(turned[0] - turned[1]).sum() > 20
    for i in (3, 10, 17, 30):  # the ellipse's major axis (from the pixels' second moments) is at the angle
        im = vary(2, [i])[0]
        ys, xs = np.nonzero(im)
        c = np.cov(np.stack([xs, ys]))
        axis = 0.5 * np.arctan2(2 * c[0, 1], c[0, 0] - c[1, 1])
        gap = (axis - d.factor_values[2][i]) % np.pi
        assert min(gap, np.pi - gap) < 0.05, (i, axis, d.factor_values[2][i])


# -- dSprites as a kvae data set, and the CLI ------------------------------------------------------------

def test_dsprites_splits_are_disjoint_and_render_in_the_pipeline():
    from kvae.data import datasets as data

    splits = {s: data.load("dsprites", s) for s in ("train", "valid", "test")}
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [717280, 10000, 10000]
    src = splits["train"].source
    seen = np.concatenate([src.index(splits[s].factors) for s in splits])
    assert len(np.unique(seen)) == 737280  # the three splits partition the grid
    head = splits["valid"].head(40)
    assert len(head) == 40 and head.input_shape == (64, 64, 1) and head.x is None
    batches = list(head.dataset(batch_size=16, shuffle=False))
    np.testing.assert_array_equal(np.concatenate(batches), src.images(head.factors).astype(np.float32))
    shuffled = np.concatenate(list(head.dataset(batch_size=16, shuffle=True, seed=3)))
    rendered = src.images(head.factors).reshape(40, -1)
    matches = (shuffled.reshape(40, 1, -1) == rendered[None]).all(-1)
    assert matches.any(1).all() and matches.any(0).all()  # a permutation of the same 40 images


def test_cli_trains_on_dsprites_and_reports_every_metric(tmp_path, capsys, monkeypatch):
    import json

    from kvae.cli import main as cli

    run = str(tmp_path / "run")
    assert cli.main(["train", "--model", "factorvae", "--dataset", "dsprites", "--network", "conv4", "--hidden", "32",
                     "--latent-dim", "4", "--limit", "256", "--valid-limit", "128", "--epochs", "1", "--batch-size",
                     "64", "--out", run, "--quiet"]) == 0
    assert json.load(open(os.path.join(run, "config.json")))["valid_limit"] == 128
    out = str(tmp_path / "e.json")
    capsys.readouterr()
    assert cli.main(["evaluate", run, "--split", "valid", "--limit", "20", "--k", "2", "--disentanglement",
                     "--disentanglement-train", "100", "--disentanglement-test", "50", "--json", out]) == 0
    printed = capsys.readouterr().out
    result = json.load(open(out))
    for key in dm.KEYS:
        assert 0.0 <= result[key] <= 1.0, (key, result[key])
    assert "mig " in printed and "dci disentanglement" in printed
    # --disentanglement alone: the metrics and their seconds, no NLL table
    assert not {"nll", "elbo", "kl", "n", "k"} & set(result), sorted(result)
    assert set(result["disentanglement_seconds"]) == {"codes", "mig", "modularity", "explicitness", "sap", "dci",
                                                      "betavae_metric", "factorvae_metric", "total"}
    encoding = result["disentanglement_encoding"]  # i.i.d. 100 + 50; 150 x 2 x 64; 10000 variances + 150 x 64
    votes = 150 * 64 if result["factorvae_num_active"] else 0  # no dimension kept: no votes drawn
    assert encoding["images_requested"] == 150 + 150 * 128 + 10000 + votes, (encoding, result["factorvae_num_active"])
    assert 0 < encoding["images_encoded"] <= encoding["images_requested"]
    assert all(isinstance(t, float) and t >= 0 for t in result["disentanglement_seconds"].values())
    assert "seconds per metric" in printed and "NLL" not in printed
    assert cli.main(["evaluate", run, "--split", "valid", "--limit", "20", "--k", "2", "--disentanglement", "--nll",
                     "--disentanglement-train", "100", "--disentanglement-test", "50", "--jobs", "2",
                     "--json", out]) == 0
    both = json.load(open(out))
    assert both["n"] == 20 and both["k"] == 2 and both["nll"] > 0
    for key in dm.KEYS:  # the same draws: --jobs and --nll change nothing in the metrics
        assert both[key] == result[key], key
    learners = []
    real_dci = dm.dci

    def recorded_dci(*args, **kwargs):
        learners.append(kwargs["trees"])
        return real_dci(*args, **kwargs)

    monkeypatch.setattr(dm, "dci", recorded_dci)
    assert cli.main(["evaluate", run, "--split", "valid", "--disentanglement", "--dci-trees", "sklearn",
                     "--disentanglement-train", "100", "--disentanglement-test", "50", "--json", out]) == 0
    published = json.load(open(out))
    assert learners == ["sklearn"]
    for key in set(dm.KEYS) - {"dci_disentanglement", "dci_completeness", "dci_informativeness"}:
        assert published[key] == result[key], key  # the learner changes DCI alone
    capsys.readouterr()
    assert cli.main(["evaluate", run, "--disentanglement", "--dci-trees", "xgboost"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "kvae evaluate: error: DCI trees must be one of lightgbm, sklearn; got 'xgboost'", err
    assert learners == ["sklearn"]
    assert cli.main(["evaluate", run, "--disentanglement", "--jobs", "0"]) == 1
    assert "--jobs: must be > 0, or -1 for one per CPU" in capsys.readouterr().err
    assert cli.main(["evaluate", run, "--dataset", "digits", "--limit", "5", "--k", "2", "--disentanglement"]) == 1
    assert "needs a data set with ground-truth factors (dsprites); digits has none" in capsys.readouterr().err


# -- edges the transcriptions above leave open (found by mutation testing) -----------------------------

def test_dci_weights_by_unnormalised_importance_and_handles_zero_importance():
    r = np.array([[0.3, 0.0], [0.1, 0.05], [0.0, 0.05]])  # column sums 0.4 and 0.1, total 0.5

    def entropy(p, base):
        p = p / p.sum()
        p = p[p > 0]
        return -np.sum(p * np.log(p)) / np.log(base)

    d = sum((1 - entropy(row, 2)) * row.sum() / r.sum() for row in r if row.sum() > 0)
    c = sum((1 - entropy(r[:, k], 3)) * r[:, k].sum() / r.sum() for k in range(2))
    np.testing.assert_allclose(dm.dci_from_importance(r), (d, c), atol=1e-6)
    np.testing.assert_allclose(dm.dci_from_importance(np.zeros((3, 2))), (0.0, 0.0), atol=1e-6)


def test_discretisation_defaults_to_twenty_bins_and_mig_passes_its_own():
    codes = np.linspace(0, 1, 200)[:, None]
    assert dm.histogram_discretize(codes).max() == 20 and dm.histogram_discretize(codes, 5).max() == 5
    rng = np.random.default_rng(3)
    v = rng.integers(0, 10, size=(500, 1))
    z = v + rng.normal(scale=0.4, size=(500, 1))
    z = np.concatenate([z, rng.normal(size=(500, 1))], axis=1)
    assert abs(dm.mig(z, v, num_bins=5) - dm.mig(z, v)) > 0.02


def test_factorvae_votes_count_every_batch_and_divide_by_the_global_variance():
    data = factors.FactorGrid((4, 4))
    calls = []
    # dimension 0 varies 10x more than dimension 1 overall; fixing factor 0 halves dimension 0's batch
    # variance: relative variance picks dimension 0, the raw product would not
    scale = np.array([10.0, 1.0])

    def represent(x):
        return x * scale + np.random.default_rng(len(calls) + len(x)).normal(scale=0.01, size=x.shape)

    votes = dm.factorvae_votes(data, represent, np.random.default_rng(0), scale ** 2 * 0.1, np.ones(2, bool),
                               batch_size=4096, n=5, progress=calls.append)
    assert votes.sum() == 5 and sum(calls) == 5 and all(isinstance(c, int) for c in calls)
    assert votes[0, 0] + votes[1, 1] == 5  # each fixed factor voted for its own dimension
    # a noisy dimension: z0 = 10 f0 + 3 noise (global variance 100 Var f0 + 9), z1 = f1.  Fixing f0 leaves
    # z0's batch variance at 9: relative to its global variance (0.39) it is below z1's (1), while the
    # raw variance (or variance x global variance) would pick z1
    var_f = np.var(np.arange(4) / 3)
    noisy = dm.factorvae_votes(
        data, lambda x: np.stack([10 * x[:, 0] + 3 * np.random.default_rng(len(x)).normal(size=len(x)), x[:, 1]], 1),
        np.random.default_rng(1), np.array([100 * var_f + 9, var_f]), np.ones(2, bool), batch_size=1024, n=5)
    assert noisy.sum() == 5 and noisy[0, 0] + noisy[1, 1] == 5 and noisy[0, 0] > 0, noisy


def test_dsprites_renders_its_documented_definition():
    """A direct transcription of the module docstring: the full 64 x 64 grid, no window."""
    d = factors.DSprites()
    f = d.sample_factors(300, np.random.default_rng(7))
    f[:6, 3:] = [[0, 0], [31, 31], [0, 31], [31, 0], [16, 0], [0, 16]]  # the frame's edges
    got = d.images(f, chunk=7)
    assert got.shape == (300, 64, 64, 1) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, d.images(f))  # chunking changes nothing
    scale = np.linspace(0.5, 1, 6)[f[:, 1]]
    theta = np.linspace(0, 2 * np.pi, 40)[f[:, 2]]
    cx, cy = 13 + 38 * f[:, 3] / 31, 13 + 38 * f[:, 4] / 31
    centres = np.arange(64) + 0.5
    for i in range(300):
        dx, dy = centres[None, :] - cx[i], centres[:, None] - cy[i]
        u = (np.cos(theta[i]) * dx + np.sin(theta[i]) * dy) / (9 * scale[i])
        v = (-np.sin(theta[i]) * dx + np.cos(theta[i]) * dy) / (9 * scale[i])
        if f[i, 0] == 0:
            want = np.maximum(abs(u), abs(v)) <= 0.8
        elif f[i, 0] == 1:
            want = u ** 2 + (v / 0.5) ** 2 <= 1
        else:
            hu, hv = 1.2 * u, -1.2 * v + 0.15
            want = (hu ** 2 + hv ** 2 - 1) ** 3 - hu ** 2 * hv ** 3 <= 0
        mismatch = np.sum(got[i, ..., 0] != want)
        assert mismatch <= 2, (i, f[i], mismatch)  # float32 vs float64 on a pixel centre at the boundary
    assert set(f[:, 0]) == {0, 1, 2}


def test_dsprites_factor_values_and_inputs():
    d = factors.DSprites()
    np.testing.assert_allclose(d.factor_values[1], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    np.testing.assert_allclose(d.factor_values[2][[0, -1]], [0, 2 * np.pi])
    for k in (3, 4):
        np.testing.assert_allclose(d.factor_values[k], np.arange(32) / 31)
    np.testing.assert_array_equal(d.factor_values[0], [0, 1, 2])
    with pytest.raises(ValueError, match=r"dSprites factors must have shape \[n, 5\], got \[5\]"):
        d.images(np.zeros(5, int))
    with pytest.raises(ValueError, match=r"got \[2, 4\]"):
        d.images(np.zeros((2, 4), int))
    rng = np.random.default_rng(0)
    fixed = [d.sample_with_fixed(2, 0, rng)[0, 0] for _ in range(60)]
    assert set(fixed) == {0, 1, 2}  # every value of the fixed factor is drawn, 0 included


# ---------------------------------------------------------------- real dSprites through tensorflow-datasets
def _small_grid_arrays(sizes=(3, 2, 2, 4, 4), seed=0):
    """A small dSprites-like grid rendered procedurally, rows shuffled as a file might hold them."""
    from kvae.data.factors import DSprites

    grid = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1).reshape(-1, len(sizes))
    full = grid * (np.array(DSprites.factor_sizes) // np.array(sizes))  # spread over the full index ranges
    images = DSprites().images(full)
    order = np.random.RandomState(seed).permutation(len(grid))
    return images[order], grid[order], full[order]


def test_array_factors_reorders_rows_to_the_grid_and_unpacks_bits():
    from kvae.data.factors import ArrayFactors

    images, grid, _ = _small_grid_arrays()
    source = ArrayFactors(images, grid, (3, 2, 2, 4, 4), kind="test")
    rng = np.random.default_rng(1)
    f = source.sample_factors(50, rng)
    lookup = {tuple(g): im for g, im in zip(grid, images)}
    expected = np.stack([lookup[tuple(r)] for r in f])
    np.testing.assert_array_equal(source.images(f), expected)
    assert source.images(f).dtype == np.uint8 and source.kind == "test"


def test_array_factors_names_a_grid_that_is_not_covered_once():
    from kvae.data.factors import ArrayFactors

    images, grid, _ = _small_grid_arrays()
    dup = grid.copy()
    dup[1] = dup[0]
    with pytest.raises(ValueError, match="1 positions missing .* 1 repeated"):
        ArrayFactors(images, dup, (3, 2, 2, 4, 4))
    with pytest.raises(ValueError, match="factor factor_3 must be in 0..3"):
        ArrayFactors(images, np.where(np.arange(5) == 3, 7, grid), (3, 2, 2, 4, 4))
    with pytest.raises(ValueError, match="has 192 positions, got 191"):
        ArrayFactors(images[:-1], grid[:-1], (3, 2, 2, 4, 4))


def test_dsprites_uses_the_tfds_cache_when_prepared_and_says_so(monkeypatch):
    from kvae.data import datasets as data
    from kvae.data.factors import DSprites

    calls = []
    # tensorflow-datasets' dsprites, stubbed: every grid position once, in shuffled order
    n = 3 * 6 * 40 * 32 * 32
    rng = np.random.RandomState(0)
    order = rng.permutation(n)
    factors = DSprites().factors_of(order)
    images = np.zeros((n, 2, 2, 1), np.uint8)  # tiny images: the grid bookkeeping is what is tested
    images[:, 0, 0, 0] = factors[:, 3] % 2  # a pixel that tells the rows apart

    def stub(data_dir=None):
        calls.append(data_dir)
        return images, factors

    monkeypatch.setattr(data, "_tfds_dsprites", stub)
    monkeypatch.setattr(data, "_SOURCES", {})
    monkeypatch.setenv(data.DSPRITES_SOURCE_ENV, "auto")
    split = data.load("dsprites", "valid")
    assert split.source.kind == "tensorflow-datasets" and len(split) == 10000
    got = split.source.images(split.factors[:20])
    np.testing.assert_array_equal(got[:, 0, 0, 0], split.factors[:20, 3] % 2)
    data.load("dsprites", "train")
    assert len(calls) == 1  # read once per process

    monkeypatch.setattr(data, "_tfds_dsprites", lambda data_dir=None: None)
    monkeypatch.setattr(data, "_SOURCES", {})
    assert data.load("dsprites", "test").source.kind == "procedural"
    monkeypatch.setenv(data.DSPRITES_SOURCE_ENV, "tfds")
    with pytest.raises(data.DataError, match="tfds build dsprites"):
        data.load("dsprites", "test")


def test_the_claims_aggregation_over_seeds():
    """apps/disentanglement.py: per-configuration means over seeds, the 10% reconstruction window,
    the difference of means with its unpaired and paired standard errors, and paired wins."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "disentanglement_app", os.path.join(os.path.dirname(os.path.dirname(__file__)), "..", "apps", "disentanglement.py"))
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)

    def run(model, options, seed, rec, fm):
        return {"model": model, "options": options, "seed": seed, "reconstruction_error": rec, "kl": 1.0,
                **{k: 0.0 for k in dm.KEYS}, "factorvae_metric": fm}

    runs = {"a": run("factorvae", {"gamma": 10.0}, 0, 60.0, 0.50), "b": run("factorvae", {"gamma": 10.0}, 1, 62.0, 0.40),
            "c": run("factorvae", {"gamma": 40.0}, 0, 80.0, 0.90),  # outside the 10% window: not chosen
            "d": run("beta-vae", {"beta": 1.0}, 0, 61.0, 0.45), "e": run("beta-vae", {"beta": 1.0}, 1, 63.0, 0.42)}
    out = app.claim(runs)
    assert out["factorvae"]["options"] == {"gamma": 10.0}
    assert out["factorvae"]["factorvae_metric"]["mean"] == pytest.approx(0.45)
    assert out["difference"] == pytest.approx(0.45 - 0.435) and out["holds"] is True
    se = np.sqrt(np.var([0.5, 0.4], ddof=1) / 2 + np.var([0.45, 0.42], ddof=1) / 2)
    assert out["unpaired_difference_standard_error"] == pytest.approx(se)
    # paired by seed: differences 0.05 and -0.02, sd / sqrt(2)
    assert out["paired_seeds"] == [0, 1] and out["paired_difference"] == pytest.approx(0.015)
    assert out["paired_difference_standard_error"] == pytest.approx(np.std([0.05, -0.02], ddof=1) / np.sqrt(2))
    assert out["seeds_where_factorvae_is_higher"] == "1 of 2"


# -- disentanglement_lib's classifier: liblinear one-vs-rest (scikit-learn < 0.22's LogisticRegression) ----------

def _one_vs_rest_probabilities(x_train, y_train, x_test):
    """liblinear's L2 logistic regression written out: per class c, minimise
    0.5 (|w|^2 + b^2) + sum_i log(1 + exp(-s_i (w.x_i + b))), s_i = +1 for class c else -1 (C = 1, the
    intercept a penalised feature of value 1); probabilities sigmoid(w.x + b) normalised over classes."""
    from scipy.optimize import minimize
    from scipy.special import expit

    xb = np.concatenate([x_train, np.ones((len(x_train), 1))], axis=1)
    xt = np.concatenate([x_test, np.ones((len(x_test), 1))], axis=1)
    classes = np.unique(y_train)
    probs = []
    for c in classes:
        s = np.where(y_train == c, 1.0, -1.0)

        def loss(w):
            m = s * (xb @ w)
            return 0.5 * w @ w + np.sum(np.logaddexp(0.0, -m)), w - xb.T @ (s * expit(-m))

        w = minimize(loss, np.zeros(xb.shape[1]), jac=True, method="L-BFGS-B", options={"gtol": 1e-10}).x
        probs.append(expit(xt @ w))
    probs = np.stack(probs, axis=1)
    return classes, probs / probs.sum(axis=1, keepdims=True)


def _four_classes(seed, n):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=n)
    x = np.eye(4)[y][:, :3] * 1.5 + rng.normal(size=(n, 3)) + [0.0, 0.5, -0.3]
    return x, y


def test_liblinear_solver_is_one_vs_rest_logistic_regression():
    x, y = _four_classes(3, 600)
    classes, want = _one_vs_rest_probabilities(x[:400], y[:400], x[400:])
    clf = dm.logistic_regression("liblinear").fit(x[:400], y[:400])
    np.testing.assert_array_equal(clf.classes_, classes)
    np.testing.assert_allclose(clf.predict_proba(x[400:]), want, atol=1e-4)  # liblinear stops at tol 1e-4
    # the β-VAE metric's accuracies with it
    got = dm.betavae_scores(x[:400], y[:400], x[400:], y[400:], solver="liblinear")
    assert got["betavae_metric"] == pytest.approx(np.mean(classes[np.argmax(want, axis=1)] == y[400:]), abs=1 / 200)
    lbfgs = dm.logistic_regression("lbfgs").fit(x[:400], y[:400]).predict_proba(x[400:])
    assert np.abs(lbfgs - want).max() > 0.02  # the default is another classifier (multinomial)
    with pytest.raises(ValueError, match="solver must be one of"):
        dm.logistic_regression("saga")


def test_explicitness_with_the_liblinear_solver_is_the_auc_of_one_vs_rest_probabilities():
    from sklearn.metrics import roc_auc_score

    x, y = _four_classes(4, 600)
    got = dm.explicitness(x[:400], y[:400, None], x[400:], y[400:, None], solver="liblinear")
    mean, std = x[:400].mean(0), x[:400].std(0)
    classes, p = _one_vs_rest_probabilities((x[:400] - mean) / std, y[:400], (x[400:] - mean) / std)
    want = roc_auc_score(np.eye(4)[y[400:]], p, average="macro")
    assert got == pytest.approx(want, abs=1e-4)
    assert got != pytest.approx(dm.explicitness(x[:400], y[:400, None], x[400:], y[400:, None]), abs=1e-6)


def test_dci_fits_factors_in_parallel_with_the_same_result():
    """n_jobs only spreads the per-factor fits over processes: with ``trees="sklearn"``, importances and
    accuracies are those of one GradientBoostingClassifier(random_state=seed) per factor fitted in turn
    (disentanglement_lib's learner, written out here)."""
    from sklearn.ensemble import GradientBoostingClassifier

    rng = np.random.default_rng(3)
    v = np.stack([rng.integers(0, n, size=500) for n in (2, 5, 3)], axis=1)
    z = np.concatenate([v @ rng.normal(size=(3, 4)), rng.normal(size=(500, 1))], axis=1) + 0.3 * rng.normal(size=(500, 5))
    importance, accuracy = np.zeros((5, 3)), []
    for k in range(3):
        model = GradientBoostingClassifier(random_state=7).fit(z[:300], v[:300, k])
        importance[:, k] = model.feature_importances_
        accuracy.append(np.mean(model.predict(z[300:]) == v[300:, k]))
    d, c = dm.dci_from_importance(importance)
    want = {"dci_disentanglement": d, "dci_completeness": c, "dci_informativeness": float(np.mean(accuracy))}
    assert dm.dci(z[:300], v[:300], z[300:], v[300:], seed=7, n_jobs=1, trees="sklearn") == want
    assert dm.dci(z[:300], v[:300], z[300:], v[300:], seed=7, n_jobs=2, trees="sklearn") == want
    fast = dm.dci(z[:300], v[:300], z[300:], v[300:], seed=7, n_jobs=1)  # the default learner, LightGBM's
    assert fast == dm.dci(z[:300], v[:300], z[300:], v[300:], seed=7, n_jobs=2) != want


def test_evaluate_reports_seconds_per_metric():
    data = factors.FactorGrid((3, 4, 5))
    out = dm.evaluate(data, lambda x: x + 0.1, seed=0, num_train=200, num_test=100, num_variance_estimate=200)
    assert set(out["seconds"]) == {"codes", "mig", "modularity", "explicitness", "sap", "dci", "betavae_metric",
                                   "factorvae_metric", "total"}
    assert out["seconds"]["total"] >= out["seconds"]["codes"] + out["seconds"]["betavae_metric"]
    assert all(isinstance(t, float) and t >= 0 for t in out["seconds"].values())
    assert set(out["encoding"]) == {"images_requested", "images_encoded", "render_seconds", "encode_seconds"}
    assert all(isinstance(out["encoding"][k], float) and out["encoding"][k] >= 0
               for k in ("render_seconds", "encode_seconds"))


# -- one encoding per grid position, shared by the metrics ---------------------------------------------------

def test_cached_codes_encode_each_position_once_and_change_no_metric():
    """With the cache every metric is what encoding each drawn image where it is drawn gives (the
    previous computation, ``cache=False``), for a deterministic representation; each grid position
    is encoded at most once, and the counts are the draws of disentanglement_lib's procedure."""
    data = factors.FactorGrid((3, 6, 10, 8))
    mix = np.random.default_rng(4).normal(size=(4, 5))
    encoded = []

    def represent(x):
        encoded.append(np.array(x))
        return np.tanh(x @ mix) + 0.1 * np.sin(7 * x[:, :1])  # per image, deterministic, not linear

    sizes = dict(seed=3, num_train=300, num_test=150, num_variance_estimate=250)
    cached = dm.evaluate(data, represent, **sizes)
    rows = np.concatenate(encoded)
    encoded.clear()
    reference = dm.evaluate(data, represent, cache=False, overlap=False, **sizes)
    keys = [k for k in reference if k != "seconds"]
    assert set(dm.KEYS) <= set(keys) and "encoding" not in reference
    for key in keys:
        assert cached[key] == reference[key], (key, cached[key], reference[key])
    requested = sum(len(x) for x in encoded)  # what the reference encoded: every draw
    draws = 300 + 150 + 2 * 64 * (300 + 150) + 250 + 64 * (300 + 150)
    assert requested == draws == cached["encoding"]["images_requested"]
    assert len(np.unique(rows, axis=0)) == len(rows) == cached["encoding"]["images_encoded"]  # each once
    assert len(rows) == len(np.unique(data.index(np.rint(rows * (np.array(data.factor_sizes) - 1)).astype(int))))
    assert len(rows) <= len(data) == 1440 < draws


def test_cached_codes_are_the_representation_of_the_rendered_images():
    d = factors.DSprites()
    weights = np.random.default_rng(5).normal(size=(64 * 64, 3))

    def represent(images):
        return images.reshape(len(images), -1).astype(np.float64) @ weights

    cache = dm.CachedCodes(d, represent, batch_size=100)
    rng = np.random.default_rng(6)
    first = d.sample_factors(250, rng)
    again = np.concatenate([first[::3], d.sample_factors(50, rng)])
    # the same images' codes: equal up to float64 rounding (a matrix product of 100 rows and one of 250
    # may sum in another order: 2e-14 apart in a suite run beside other work); another image is far off
    np.testing.assert_allclose(cache(first), represent(d.images(first)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cache(again), represent(d.images(again)), rtol=1e-12, atol=1e-12)
    assert np.abs(represent(d.images(first[:1])) - represent(d.images(first[1:2]))).max() > 1e-3
    assert cache.requested == 250 + len(again)
    assert cache.encoded == len(np.unique(d.index(np.concatenate([first, again]))))


def test_float32_codes_are_cached_as_float32_and_change_no_metric():
    """A float32 representation (kvae's posterior means) is cached in float32 (half the memory) and
    read back as float64 exactly: every metric equals encoding each drawn image where it is drawn."""
    data = factors.FactorGrid((3, 6, 10, 8))
    mix = np.random.default_rng(4).normal(size=(4, 5)).astype(np.float32)

    def represent(x):
        return np.tanh(np.asarray(x, np.float32) @ mix)

    sizes = dict(seed=3, num_train=300, num_test=150, num_variance_estimate=250)
    cache = dm.CachedCodes(data, represent)
    cached = dm.evaluate(data, cache, **sizes)
    reference = dm.evaluate(data, represent, cache=False, overlap=False, **sizes)
    for key in dm.KEYS:
        assert cached[key] == reference[key], (key, cached[key], reference[key])
    assert cache.codes.dtype == np.float32
    f = data.sample_factors(40, np.random.default_rng(0))
    got = cache(f)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, represent(data.images(f)).astype(np.float64))


def test_the_cli_representation_is_the_float32_posterior_mean_of_uint8_or_float_images():
    import kvae
    from kvae.evaluation import metrics

    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), seed=0)
    images = (np.random.default_rng(0).uniform(size=(10, 8, 8, 1)) > 0.5).astype(np.uint8)
    represent = metrics.representation(model, batch_size=4)
    z = represent(images)
    want = np.asarray(model.encode(images.astype(np.float32)).mean())
    assert z.dtype == np.float32 and z.shape == (10, 3)
    np.testing.assert_array_equal(z, represent(images.astype(np.float32)))
    np.testing.assert_allclose(z, want, rtol=1e-6, atol=1e-6)
