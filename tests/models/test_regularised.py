"""Property tests of the regularised family's pieces: MMD, permutation, MAE's pairwise KL, RAE's
gradient penalty, the ex-post mixture, and the diagnostics."""
import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import kvae
from kvae.evaluation import metrics as evaluation
from kvae.nn.divergences import kernel_matrix, mmd
from kvae.parts.regularizers import DecoderGradientPenalty, MutualPosteriorDivergence, pairwise_gaussian_kl, permute_dims

tfd = tfp.distributions


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_mmd_is_near_zero_for_one_distribution_and_grows_with_a_shift(kernel):
    rng = np.random.RandomState(0)
    a, b = rng.normal(size=(500, 4)), rng.normal(size=(500, 4))
    same = float(mmd(a, b, kernel, (1.0,)))
    values = [float(mmd(a, rng.normal(size=(500, 4)) + shift, kernel, (1.0,))) for shift in (0.25, 0.5, 1.0)]
    assert abs(same) < 0.01
    assert values[0] < values[1] < values[2] and values[0] > same


def test_unbiased_mmd_matches_the_closed_form_for_gaussians():
    """For x ~ N(m1, s1^2 I), y ~ N(m2, s2^2 I) and k = exp(-|a-b|^2 / (2 h^2)), with c = h^2:
    E k(x, x') = (c / (c + 2 s1^2))^{D/2}, E k(x, y) = (c / (c + s1^2 + s2^2))^{D/2} exp(-|m1-m2|^2 / (2 (c + s1^2 + s2^2)))."""
    d, s1, s2, shift = 3, 1.0, 0.7, 0.5
    c = 2.0 * d * 1.0**2 / 2.0  # kvae's RBF uses 2 s^2 D in the denominator, i.e. h^2 = D s^2
    kxx = (c / (c + 2 * s1**2)) ** (d / 2)
    kyy = (c / (c + 2 * s2**2)) ** (d / 2)
    kxy = (c / (c + s1**2 + s2**2)) ** (d / 2) * np.exp(-(shift**2) * d / (2 * (c + s1**2 + s2**2)))
    exact = kxx + kyy - 2 * kxy
    rng = np.random.RandomState(1)
    estimates = [float(mmd(rng.normal(size=(20, d)) * s1, rng.normal(size=(20, d)) * s2 + shift, "rbf", (1.0,)))
                 for _ in range(400)]
    biased = [float(mmd(rng.normal(size=(20, d)) * s1, rng.normal(size=(20, d)) * s2 + shift, "rbf", (1.0,),
                        unbiased=False)) for _ in range(400)]
    se = np.std(estimates) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates) - exact) < 4 * se, (np.mean(estimates), exact, se)
    assert np.mean(biased) - exact > 4 * se  # the V-statistic is biased upwards at n = 20


@pytest.mark.parametrize("kernel", ["rbf", "imq", "infovae"])
def test_v_statistic_is_the_u_statistics_terms_reweighted_not_a_multiple(kernel):
    """V = ((n-1)/n) U_xx + ((m-1)/m) U_yy - 2 cross + K0 (1/n + 1/m) with K0 = k(a, a) = 2 (two bandwidths):
    the cross term is shared, so the two estimators' gradients are not proportional."""
    rng = np.random.RandomState(5)
    x = tf.constant(rng.normal(size=(6, 3)), tf.float32)
    y = tf.constant(rng.normal(size=(9, 3)) + 0.4, tf.float32)
    scales = (0.5, 2.0)
    n, m = 6.0, 9.0
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        u, v = mmd(x, y, kernel, scales), mmd(x, y, kernel, scales, unbiased=False)
    kxx, kyy, kxy = (kernel_matrix(a, b, kernel, scales).numpy().astype(np.float64) for a, b in ((x, x), (y, y), (x, y)))
    u_xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    u_yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    np.testing.assert_allclose(np.diag(kxx), 2.0, rtol=1e-6)
    want_v = (n - 1) / n * u_xx + (m - 1) / m * u_yy - 2 * kxy.mean() + 2.0 * (1 / n + 1 / m)
    np.testing.assert_allclose(float(v), want_v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(u), u_xx + u_yy - 2 * kxy.mean(), rtol=1e-5, atol=1e-6)
    gu, gv = tape.gradient(u, x).numpy().ravel(), tape.gradient(v, x).numpy().ravel()
    ratio = gv / gu
    assert ratio.max() - ratio.min() > 0.05, ratio  # not one factor (n - 1) / n for every coordinate


def test_permutation_keeps_every_marginal_and_breaks_dependence():
    rng = np.random.RandomState(0)
    z0 = rng.normal(size=(2000, 1))
    z = np.concatenate([z0, z0 + 0.01 * rng.normal(size=(2000, 1)), rng.normal(size=(2000, 1))], 1).astype("float32")
    p = permute_dims(z, tf.constant([3, 4])).numpy()
    np.testing.assert_array_equal(np.sort(p, axis=0), np.sort(z, axis=0))
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) > 0.99 and abs(np.corrcoef(p[:, 0], p[:, 1])[0, 1]) < 0.1


def test_mae_pairwise_kl_and_penalty_match_a_direct_computation():
    rng = np.random.RandomState(0)
    loc = rng.normal(size=(5, 3)).astype("float32")
    scale = rng.uniform(0.3, 1.5, size=(5, 3)).astype("float32")
    kl = pairwise_gaussian_kl(tf.constant(loc), tf.constant(scale)).numpy()
    for i in range(5):
        for j in range(5):
            direct = tfd.kl_divergence(tfd.Normal(loc[i], scale[i]), tfd.Normal(loc[j], scale[j])).numpy()
            np.testing.assert_allclose(kl[i, j], direct, atol=1e-5)
    eta, gamma = 0.7, 0.3
    off = ~np.eye(5, dtype=bool)
    mean_d = kl[off].mean(0)
    expected = -eta * np.sum(np.log(1 / (1 + np.exp(-mean_d)))) + gamma * kl.sum(-1)[off].std(ddof=1)
    q = tfd.Independent(tfd.Normal(loc, scale), 1)
    np.testing.assert_allclose(MutualPosteriorDivergence(eta, gamma).penalty({"q": q}), expected, rtol=1e-4)


def test_rae_gradient_penalty_is_the_squared_jacobian_norm():
    model = kvae.RAE(input_shape=(4, 4, 1), latent_dim=3, hidden=(8,), regularization="gp", reg_weight=1.0, seed=0)
    z = tf.constant(np.random.RandomState(0).normal(size=(2, 3)).astype("float32"))
    value = DecoderGradientPenalty(0.5).penalty({"z": z, "y": None, "decode_params": model.decode_params}).numpy()
    for i in range(2):  # the Jacobian by finite differences, one example at a time
        def f(v):
            return model.decode_params(v[None, :])[0].numpy().reshape(-1).astype(np.float64)

        h = 1e-3
        jac = np.stack([(f(z[i] + h * np.eye(3, dtype="float32")[k]) - f(z[i] - h * np.eye(3, dtype="float32")[k]))
                        / (2 * h) for k in range(3)], 1)
        np.testing.assert_allclose(value[i], 0.5 * np.sum(jac**2), rtol=2e-2)


def test_ex_post_mixture_survives_save_and_load(tmp_path):
    model = kvae.RAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), seed=0)
    x = (np.random.RandomState(0).uniform(size=(200, 8, 8, 1)) > 0.5).astype("float32")
    with pytest.raises(kvae.errors.ConfigError, match="not fitted"):
        model.sample(2, source="density")
    model.fit_density(x)
    path = str(tmp_path / "rae.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.sample(8, seed=4, source="density"), model.sample(8, seed=4, source="density"))
    z = model.posterior_means(x)
    np.testing.assert_allclose(loaded.density(z), model.density(z), rtol=1e-5)
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(10, covariance_type="full", random_state=0, reg_covar=1e-5).fit(z.astype(np.float64))
    np.testing.assert_allclose(model.density(z).numpy(), gmm.score_samples(z), rtol=1e-3, atol=1e-3)


def test_diagnostics_on_known_codes():
    rng = np.random.RandomState(0)
    z = rng.normal(size=(3000, 4))
    assert abs(evaluation.log_det_covariance(z)) < 0.1
    assert abs(evaluation.log_det_covariance(2 * z) - 4 * np.log(4)) < 0.2
    assert abs(evaluation.mmd_to_prior(z)) < 0.01 and evaluation.mmd_to_prior(z + 1) > 0.05
    labels = (z[:, 0] > 0).astype(int)
    assert evaluation.probe_accuracy(z[:2000], labels[:2000], z[2000:], labels[2000:]) > 0.95


def test_mutual_information_is_zero_for_an_ignoring_encoder_and_positive_otherwise():
    model = kvae.VAE(input_shape=(4, 4, 1), latent_dim=2, hidden=(8,), seed=0)
    x = (np.random.RandomState(0).uniform(size=(300, 4, 4, 1)) > 0.5).astype("float32")
    dense = model.posterior.dense
    kernel, bias = dense.get_weights()
    dense.set_weights([np.zeros_like(kernel), bias])  # q(z|x) no longer depends on x
    assert abs(evaluation.mutual_information(model, x)) < 1e-4
    dense.set_weights([kernel * 50.0, bias])
    mi = evaluation.mutual_information(model, x)
    assert mi <= np.log(300) + 1e-3  # bounded by log N
    # the estimator written out in scipy: mean_i [log q(z_i|x_i) - log (1/N) sum_j q(z_i|x_j)], on the same draws
    from scipy.special import logsumexp
    from scipy.stats import norm

    q = model.encode(tf.constant(x))
    z = q.sample(seed=tf.constant([0, 29], tf.int32)).numpy().astype(np.float64)
    loc, scale = q.mean().numpy().astype(np.float64), q.stddev().numpy().astype(np.float64)
    cross = norm.logpdf(z[:, None, :], loc[None], scale[None]).sum(-1)  # [N (z_i), N (q_j)]
    want = np.mean(np.diag(cross) - (logsumexp(cross, axis=1) - np.log(len(x))))
    assert mi == pytest.approx(want, abs=1e-3 * max(1.0, abs(want)))
    assert want > 1.0  # a sharp encoder: well above the ignoring one's 0


def test_minibatch_tc_matches_its_formula_and_orders_dependent_above_independent_codes():
    from scipy.special import logsumexp
    from scipy.stats import norm

    from kvae.parts.regularizers import MinibatchTotalCorrelation

    rng = np.random.RandomState(0)
    a, b = rng.normal(size=(200, 1)), rng.normal(size=(200, 1))
    scale = np.full((200, 2), 0.05, np.float32)
    tc = MinibatchTotalCorrelation(weight=1.0, dataset_size=1000)

    def estimate(loc):
        q = tfd.Independent(tfd.Normal(loc.astype("float32"), scale), 1)
        return float(tc.penalty({"q": q, "z": loc.astype("float32")}))

    def direct(loc):  # the minibatch-weighted-sampling formula, written out in numpy/scipy
        log_q = norm.logpdf(loc[:, None, :], loc[None, :, :], scale[None, :, :])  # [i, j, d]
        log_bn = np.log(200 * 1000)
        log_qz = logsumexp(log_q.sum(-1), axis=1) - log_bn
        log_prod = (logsumexp(log_q, axis=1) - log_bn).sum(-1)
        return float(np.mean(log_qz - log_prod))

    dependent, independent = np.concatenate([a, a], 1), np.concatenate([a, b], 1)
    assert abs(estimate(dependent) - direct(dependent)) < 1e-3
    assert abs(estimate(independent) - direct(independent)) < 1e-3
    assert estimate(dependent) > estimate(independent) + 1.0  # z_2 = z_1 carries total correlation


def test_factorvae_follows_algorithm_1():
    """Kim & Mnih 2018, Algorithm 1: joint codes from one batch, permuted codes from an independent one;
    the paper's discriminator (6 x 1000, LeakyReLU 0.2) and its Adam(1e-4, 0.5, 0.9)."""
    from kvae.parts.regularizers import TotalCorrelation

    model = kvae.FactorVAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(16,), seed=0)
    (tc,) = model.regularizer_layers
    dense = [l for l in tc.discriminator.layers if isinstance(l, keras.layers.Dense)]
    leaky = [l for l in tc.discriminator.layers if isinstance(l, keras.layers.LeakyReLU)]
    assert [d.units for d in dense] == [1000] * 6 + [1]
    assert len(leaky) == 6 and all(abs(float(l.negative_slope) - 0.2) < 1e-7 for l in leaky)
    opt = tc.optimizer
    np.testing.assert_allclose([float(opt.learning_rate), opt.beta_1, opt.beta_2], [1e-4, 0.5, 0.9], rtol=1e-6)
    z = tf.constant(np.random.RandomState(0).normal(size=(10, 4)).astype("float32"))
    real, fake = TotalCorrelation(hidden=(8,)).real_and_fake({"z": z, "seed": tf.constant([1, 2])})
    np.testing.assert_array_equal(real.numpy(), z.numpy()[:5])  # the joint codes: the first half
    second = z.numpy()[5:]
    for d in range(4):  # each dimension of the fake codes is a permutation of the second half's
        np.testing.assert_array_equal(np.sort(fake.numpy()[:, d]), np.sort(second[:, d]))
        assert not set(fake.numpy()[:, d]) & set(z.numpy()[:5, d])  # nothing from the joint half


def test_rae_spectral_norm_bounds_every_decoder_layer(digits):
    """Every Dense kernel of the decoder, the likelihood head's included, has largest singular value <= 1
    (Keras' SpectralNormalization divides each kernel by its power-iteration estimate of that value at
    every training-mode call; an optimizer step then moves it, so the bound holds after such a call)."""
    model = kvae.RAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(32, 32), regularization="sn", seed=0)
    x, _ = digits["train"].arrays()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, epochs=3, batch_size=50, verbose=0)
    model.decode_params(tf.zeros((1, 3)), training=True)  # the normalisation runs in training-mode calls
    kernels = [w for w in model.decoder_network.weights + model.likelihood.weights if w.path.endswith("kernel")]
    assert len(kernels) == 3  # two hidden layers and the head
    for w in kernels:
        assert np.linalg.norm(w.numpy(), 2) <= 1.05, (w.path, np.linalg.norm(w.numpy(), 2))
    loaded = keras.models.load_model(_save(model))  # the normalised head survives save/load
    assert loaded.likelihood.spectral_norm


def _save(model):
    import tempfile

    path = tempfile.mkdtemp() + "/rae.keras"
    model.save(path)
    return path


def test_infovae_kernel_is_the_reference_codes():
    """InfoVAE's mmd_vae.py: compute_kernel = exp(-mean_d (x - y)^2 / dim); MMD = mean kxx + mean kyy - 2 mean kxy."""
    from kvae.nn.divergences import kernel_matrix

    rng = np.random.RandomState(0)
    x, y = rng.normal(size=(7, 5)).astype("float32"), rng.normal(size=(6, 5)).astype("float32") + 0.5

    def compute_kernel(a, b):  # the reference's arithmetic, in numpy
        return np.exp(-np.mean((a[:, None, :] - b[None, :, :]) ** 2, axis=2) / a.shape[1])

    np.testing.assert_allclose(kernel_matrix(x, y, "infovae").numpy(), compute_kernel(x, y), rtol=1e-5)
    reference = compute_kernel(x, x).mean() + compute_kernel(y, y).mean() - 2 * compute_kernel(x, y).mean()
    np.testing.assert_allclose(mmd(x, y, "infovae", unbiased=False).numpy(), reference, rtol=1e-5)
    model = kvae.InfoVAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=0)
    assert model.regularizer_layers[0].kernel == "infovae"


@pytest.mark.parametrize("kernel", ["rbf", "imq", "infovae"])
def test_kernel_matrix_and_mmd_match_numpy_for_several_bandwidths(kernel):
    """Each kernel, summed over bandwidths s, written out in numpy: RBF exp(-d2 / (2 D s^2)), IMQ C / (C + d2)
    with C = 2 D s^2, infovae exp(-d2 / (D^2 s^2)); MMD^2 as the unbiased U-statistic."""
    from kvae.nn.divergences import kernel_matrix

    rng = np.random.RandomState(1)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(5, 3)) * 1.5 + 0.3
    bandwidths = (0.5, 3.0)  # not a reciprocal pair: s^2 and 1/s^2 must give different sums

    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        dim = a.shape[1]
        total = np.zeros_like(d2)
        for s in bandwidths:
            if kernel == "rbf":
                total += np.exp(-d2 / (2 * dim * s**2))
            elif kernel == "imq":
                total += 2 * dim * s**2 / (2 * dim * s**2 + d2)
            else:
                total += np.exp(-d2 / (dim * dim * s**2))
        return total

    np.testing.assert_allclose(kernel_matrix(x, y, kernel, bandwidths).numpy(), k(x, y), rtol=1e-5)
    kxx, kyy = k(x, x), k(y, y)
    n, m = len(x), len(y)
    expected = ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                - 2 * k(x, y).mean())
    np.testing.assert_allclose(mmd(x.astype("float32"), y.astype("float32"), kernel, bandwidths).numpy(), expected,
                               rtol=1e-4, atol=1e-6)


def test_kernel_defaults_and_unknown_kernels():
    from kvae.nn.divergences import kernel_matrix

    x = np.random.RandomState(2).normal(size=(4, 2)).astype("float32")
    np.testing.assert_allclose(kernel_matrix(x, x).numpy(), kernel_matrix(x, x, "rbf", (1.0,)).numpy())
    np.testing.assert_allclose(mmd(x, x + 1).numpy(), mmd(x, x + 1, "rbf", (1.0,)).numpy())
    with pytest.raises(ValueError, match=r"kernel must be one of \('rbf', 'imq', 'infovae'\), got 'gauss'"):
        kernel_matrix(x, x, "gauss")
