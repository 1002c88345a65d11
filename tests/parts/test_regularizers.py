"""Each regulariser's penalty and discriminator step against a numpy transcription of its formula
(small eager inputs: these are the tests benchmarks/mutation_testing.py runs on kvae/parts/regularizers.py)."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy.special import expit, logsumexp
from scipy.stats import norm

import kvae
from kvae.nn.divergences import mmd
from kvae.parts import regularizers as R

tfd = tfp.distributions
SEED = tf.constant([4, 2], tf.int32)


def _fold(seed, salt):
    return tf.cast(tf.random.experimental.stateless_fold_in(seed, salt), tf.int32)


def _codes(b=6, d=3, seed=0):
    return np.random.RandomState(seed).normal(size=(b, d)).astype("float32")


def _prior(d=3):
    return tfd.Independent(tfd.Normal(tf.zeros([d]), 1.0), 1)


def _softplus(a):
    return np.logaddexp(0.0, a)


def _mlp(model, h):
    """The discriminator transcribed from its Dense weights: LeakyReLU(0.2) after each hidden layer."""
    dense = [layer for layer in model.layers if layer.weights]
    for i, layer in enumerate(dense):
        kernel, bias = (w.numpy() for w in layer.weights)
        h = h @ kernel + bias
        if i < len(dense) - 1:
            h = np.where(h > 0, h, 0.2 * h)
    return h[:, 0]


def test_latent_l2_and_the_seed_fold():
    z = _codes()
    np.testing.assert_allclose(R.LatentL2(0.3).penalty({"z": tf.constant(z.astype("float64"))}).numpy(),
                               0.3 * 0.5 * (z ** 2).sum(-1), rtol=1e-6)
    assert R._fold(None, 3) is None
    folded = R._fold(SEED, 11)
    assert folded.dtype == tf.int32
    np.testing.assert_array_equal(folded.numpy(), tf.random.experimental.stateless_fold_in(SEED, 11).numpy())


@pytest.mark.parametrize("kernel,bandwidths,unbiased", [("rbf", (0.5, 3.0), True), ("imq", (1.0,), False)])
def test_mmd_penalty_compares_the_codes_with_as_many_prior_draws(kernel, bandwidths, unbiased):
    z = _codes(7, 2)
    prior = _prior(2)
    terms = {"z": tf.constant(z), "prior": prior, "seed": SEED}
    draws = prior.sample(7, seed=_fold(SEED, 11))
    want = 2.5 * mmd(tf.constant(z), draws, kernel, list(bandwidths), unbiased=unbiased).numpy()
    reg = R.MMDPenalty(2.5, kernel=kernel, bandwidths=bandwidths, unbiased=unbiased)
    np.testing.assert_allclose(reg.penalty(terms).numpy(), want, rtol=1e-5)
    other = R.MMDPenalty(2.5, kernel=kernel, bandwidths=bandwidths, unbiased=not unbiased).penalty(terms).numpy()
    assert abs(float(other) - float(want)) > 1e-4


def test_pairwise_gaussian_kl_and_mae_penalty():
    rng = np.random.RandomState(1)
    loc, scale = rng.normal(size=(5, 3)).astype("float32"), rng.uniform(0.3, 2.0, (5, 3)).astype("float32")
    li, lj, si, sj = loc[:, None], loc[None], scale[:, None], scale[None]
    kl = np.log(sj / si) + (si ** 2 + (li - lj) ** 2) / (2 * sj ** 2) - 0.5
    np.testing.assert_allclose(R.pairwise_gaussian_kl(tf.constant(loc), tf.constant(scale)).numpy(), kl, rtol=1e-5,
                               atol=1e-6)
    off = ~np.eye(5, dtype=bool)
    mean_d = kl[off].mean(0)  # [D] over the 20 ordered pairs
    total = kl.sum(-1)[off]
    want = -0.7 * np.log(expit(mean_d)).sum() + 0.4 * np.sqrt(total.var(ddof=1) + 1e-12)
    q = tfd.Independent(tfd.Normal(tf.constant(loc), tf.constant(scale)), 1)
    np.testing.assert_allclose(R.MutualPosteriorDivergence(eta=0.7, gamma=0.4, weight=9.0).penalty({"q": q}).numpy(),
                               want, rtol=1e-5)
    same = tfd.Independent(tfd.Normal(tf.zeros([4, 2]), tf.ones([4, 2])), 1)  # identical posteriors: std 0
    np.testing.assert_allclose(R.MutualPosteriorDivergence(eta=1.0, gamma=1.0).penalty({"q": same}).numpy(),
                               -2 * np.log(0.5) + 1e-6, rtol=1e-5)


def test_minibatch_total_correlation_is_the_mws_estimator():
    rng = np.random.RandomState(2)
    loc, scale = rng.normal(size=(4, 3)).astype("float32"), rng.uniform(0.5, 1.5, (4, 3)).astype("float32")
    z = (loc + scale * rng.normal(size=(4, 3))).astype("float32")
    log_q = norm.logpdf(z[:, None, :], loc[None], scale[None])  # [i, j, d]
    log_bn = np.log(4 * 1000)
    log_qz = logsumexp(log_q.sum(-1), axis=1) - log_bn
    log_prod = (logsumexp(log_q, axis=1) - log_bn).sum(-1)
    q = tfd.Independent(tfd.Normal(tf.constant(loc), tf.constant(scale)), 1)
    got = R.MinibatchTotalCorrelation(3.0, dataset_size=1000).penalty({"q": q, "z": tf.constant(z)}).numpy()
    np.testing.assert_allclose(got, 3.0 * np.mean(log_qz - log_prod), rtol=1e-5)


def test_permute_dims_shuffles_each_dimension_by_its_own_argsort():
    z = _codes(6, 3)
    u = tf.random.stateless_uniform([6, 3], SEED).numpy()
    want = np.stack([z[np.argsort(u[:, d], kind="stable"), d] for d in range(3)], 1)
    np.testing.assert_array_equal(R.permute_dims(z, SEED).numpy(), want)


def _adam_first_step(g, lr, beta_2):
    """Keras Adam's first update: lr sqrt(1 - b2) / (1 - b1) * (1 - b1) g / (sqrt((1 - b2) g^2) + 1e-7)."""
    return lr * g / (np.abs(g) + 1e-7 / np.sqrt(1.0 - beta_2))


def _built(reg, latent_dim=3):
    class Model:
        pass

    model = Model()
    model.latent_dim = latent_dim
    reg.build_for(model)
    return reg


def test_latent_discriminators_penalties_and_samples(monkeypatch):
    z = _codes(6, 3)
    adv = _built(R.AdversarialDivergence(1.5, hidden=(5, 4)))
    t = _mlp(adv.discriminator, z)
    np.testing.assert_allclose(adv.logits(tf.constant(z)).numpy(), t, rtol=1e-5, atol=1e-6)
    terms = {"z": tf.constant(z), "prior": _prior(), "seed": SEED}
    np.testing.assert_allclose(adv.penalty(terms).numpy(), 1.5 * _softplus(-t), rtol=1e-5, atol=1e-6)
    real, fake = adv.real_and_fake(terms)
    np.testing.assert_allclose(real.numpy(), _prior().sample(6, seed=_fold(SEED, 13)).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(fake.numpy(), z)

    assert adv.discriminator.name == "adversarial_discriminator"
    assert [layer.units for layer in adv.discriminator.layers if hasattr(layer, "units")] == [5, 4, 1]

    tc = _built(R.TotalCorrelation(2.0, hidden=(5,)))
    np.testing.assert_allclose(tc.penalty(terms).numpy(), 2.0 * _mlp(tc.discriminator, z), rtol=1e-5, atol=1e-6)
    big = _codes(9, 3, seed=1)
    for seed in (SEED, None):
        joint, other = tc.real_and_fake({"z": tf.constant(big), "seed": seed})  # an odd batch: halves of 4
        fold = _fold(SEED if seed is not None else tf.constant([0, 0]), 17)
        np.testing.assert_array_equal(joint.numpy(), big[:4])
        np.testing.assert_array_equal(other.numpy(), R.permute_dims(big[4:8], fold).numpy())
    monkeypatch.setattr(tf.distribute, "get_replica_context", lambda: None)  # cross-replica context: one device
    joint, other = tc.real_and_fake({"z": tf.constant(big), "seed": SEED})
    np.testing.assert_array_equal(joint.numpy(), big[:4])

    class Replica:  # replica 1 of 2: the global batch is the other replica's codes then these
        num_replicas_in_sync, replica_id_in_sync_group = 2, 1

        @staticmethod
        def all_gather(value, axis):
            return tf.concat([tf.constant(z[::-1]), value], axis)

    monkeypatch.setattr(tf.distribute, "get_replica_context", lambda: Replica())
    joint, other = tc.real_and_fake({"z": tf.constant(z), "seed": SEED})
    np.testing.assert_array_equal(joint.numpy(), z[::-1][3:6])
    np.testing.assert_array_equal(other.numpy(), R.permute_dims(z, _fold(SEED, 17)).numpy()[3:6])


def test_latent_discriminator_step_is_one_adam_step_on_the_cross_entropy():
    """Adam's first step on mean[softplus(-T(real)) + softplus(T(fake))] (labels 1 for real, 0 for fake),
    with the regulariser's learning rate and beta_2 (0.999, and FactorVAE's 0.9)."""
    z = _codes(8, 3)
    terms = {"z": tf.constant(z), "prior": _prior(), "seed": SEED}
    for reg in (_built(R.AdversarialDivergence(1.0, hidden=(4,), lr=1e-2)),
                _built(R.TotalCorrelation(1.0, hidden=(4,), lr=1e-2))):
        real, fake = reg.real_and_fake(terms)
        variables = reg.discriminator.trainable_variables
        assert reg.own_variables == variables
        before = [v.numpy().copy() for v in variables]
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.softplus(-reg.discriminator(real)[:, 0]) +
                                  tf.nn.softplus(reg.discriminator(fake)[:, 0]))
        grads = [g.numpy() for g in tape.gradient(loss, variables)]
        reg.after_step(None, terms)
        for v, w0, g in zip(variables, before, grads):
            assert np.abs(g).max() > 1e-3
            np.testing.assert_allclose(w0 - v.numpy(), _adam_first_step(g, 1e-2, reg.beta_2), rtol=1e-3, atol=1e-7)


def _vaegan(**kw):
    return kvae.VAEGAN(input_shape=(4, 4, 1), latent_dim=2, hidden=(8,), discriminator_hidden=(6, 5), seed=0,
                       adversarial_weight=0.7, discriminator_lr=1e-2, **kw)


def test_image_discriminator_features_penalty_and_step():
    model = _vaegan(feature_layer=-2)
    gan = model.regularizer_layers[0]
    x = (np.random.RandomState(3).uniform(size=(3, 4, 4, 1)) > 0.5).astype("float32")
    flat = x.reshape(3, -1)
    np.testing.assert_allclose(gan.logits(tf.constant(x)).numpy(), _mlp(gan.discriminator, flat), rtol=1e-5,
                               atol=1e-6)
    kernel, bias = (w.numpy() for w in gan.discriminator.layers[0].weights)
    h = flat @ kernel + bias
    np.testing.assert_allclose(gan.features(tf.constant(x)).numpy(), np.where(h > 0, h, 0.2 * h), rtol=1e-5,
                               atol=1e-6)
    last = _vaegan().regularizer_layers[0]
    k2, b2 = (w.numpy() for w in last.discriminator.layers[2].weights)
    h1 = flat @ last.discriminator.layers[0].weights[0].numpy() + last.discriminator.layers[0].weights[1].numpy()
    h2 = np.where(h1 > 0, h1, 0.2 * h1) @ k2 + b2
    np.testing.assert_allclose(last.features(tf.constant(x)).numpy(), np.where(h2 > 0, h2, 0.2 * h2), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(kvae.errors.ConfigError, match="feature_layer must index one of the 2 hidden layers, got 2"):
        R.ImageDiscriminator(hidden=(6, 5), feature_layer=2)

    terms = model.compute_terms(x, seed=SEED, training=False)
    z_p = terms["prior"].sample(3, seed=_fold(SEED, 19))
    x_p = model.decode(z_p).mean().numpy()
    np.testing.assert_allclose(gan.generated(terms).numpy(), x_p, rtol=1e-5, atol=1e-6)
    recon = terms["px"].mean().numpy()
    t_rec, t_gen = _mlp(gan.discriminator, recon.reshape(3, -1)), _mlp(gan.discriminator, x_p.reshape(3, -1))
    np.testing.assert_allclose(gan.penalty(terms).numpy(), 0.7 * (_softplus(-t_rec) + _softplus(-t_gen)), rtol=1e-5,
                               atol=1e-6)

    variables = gan.discriminator.trainable_variables
    before = [v.numpy().copy() for v in variables]
    fakes = tf.constant(np.concatenate([recon, x_p]))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.softplus(-gan.logits(tf.constant(x)))
                              + tf.reshape(tf.nn.softplus(gan.logits(fakes)), [2, 3])[0]
                              + tf.reshape(tf.nn.softplus(gan.logits(fakes)), [2, 3])[1])
    grads = [g.numpy() for g in tape.gradient(loss, variables)]
    gan.after_step(model, terms)
    for v, w0, g in zip(variables, before, grads):
        np.testing.assert_allclose(w0 - v.numpy(), _adam_first_step(g, 1e-2, 0.999), rtol=1e-3, atol=1e-7)


def test_decoder_penalties():
    model = kvae.VAE(input_shape=(4, 4, 1), latent_dim=2, hidden=(8, 6), seed=0, regularizers=[
        R.DecoderL2(0.01), R.DecoderGradientPenalty(0.5)])
    l2, gp = model.regularizer_layers
    dense = [layer for layer in model.decoder_network.layers if hasattr(layer, "kernel")]
    kernels = [layer.kernel.numpy() for layer in dense] + [model.likelihood.dense.kernel.numpy()]
    assert len(kernels) == 3
    np.testing.assert_allclose(l2.penalty({}).numpy(), 0.01 * sum((k ** 2).sum() for k in kernels), rtol=1e-5)
    z = _codes(3, 2)
    terms = {"z": tf.constant(z), "y": None, "decode_params": model.decode_params, "training": False}

    def first(zz):
        return model.decode_params(tf.constant(zz, tf.float32))[0].numpy().reshape(len(zz), -1).astype(np.float64)

    h = 1e-2
    jac = np.stack([(first(z + h * np.eye(2)[d]) - first(z - h * np.eye(2)[d])) / (2 * h) for d in range(2)], -1)
    np.testing.assert_allclose(gp.penalty(terms).numpy(), 0.5 * (jac ** 2).sum((1, 2)), rtol=2e-3)
