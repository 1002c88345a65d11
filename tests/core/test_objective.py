"""The ELBO / importance-weighting machinery of the base model, checked against independent estimates."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import kvae

tfd = tfp.distributions


def _model(**kw):
    return kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(32,), seed=0, **kw)


def _x(n=6, seed=0):
    return (np.random.RandomState(seed).uniform(size=(n, 8, 8, 1)) > 0.5).astype("float32")


def test_closed_form_kl_matches_monte_carlo():
    model = _model()
    x = _x()
    q = model.encode(x)
    analytic = model.kl_divergence(q).numpy()
    z = q.sample(200_000, seed=tf.constant([1, 2]))
    log_ratio = (q.log_prob(z) - model.prior_distribution().log_prob(z)).numpy()
    mc, se = log_ratio.mean(0), log_ratio.std(0) / np.sqrt(len(log_ratio))
    assert np.all(np.abs(mc - analytic) < 4 * se + 1e-4), (mc, analytic, se)


def test_monte_carlo_kl_is_used_without_closed_form():
    analytic = _model()
    mc = _model(analytic_kl=False)
    mc.set_weights(analytic.get_weights())
    x = _x()
    q = mc.encode(x)
    z = q.sample(seed=tf.constant([5, 6]))
    np.testing.assert_allclose(mc.kl_divergence(q, z), q.log_prob(z) - mc.prior_distribution().log_prob(z), rtol=1e-6)
    assert not np.allclose(mc.kl_divergence(q, z), analytic.kl_divergence(q))


def test_kl_per_dimension_sums_to_kl():
    model = _model()
    q = model.encode(_x())
    np.testing.assert_allclose(tf.reduce_sum(model.kl_per_dimension(q), -1), model.kl_divergence(q), rtol=1e-5)


def test_log_likelihood_k1_is_the_elbo_in_expectation_and_grows_with_k():
    model = _model()
    x = np.repeat(_x(1), 4000, axis=0)  # one example, many independent estimates
    # ELBO with the closed-form KL and a well-averaged reconstruction term
    q = model.encode(x[:1])
    z = q.sample(20000, seed=tf.constant([7, 8]))
    rec = model.decode(z).log_prob(x[:1]).numpy().mean()
    elbo = rec - float(model.kl_divergence(q)[0])
    estimates = {k: model.log_likelihood(x if k == 1 else x[:400], k=k, batch_size=500, seed=k).numpy()
                 for k in (1, 10, 100)}
    k1 = estimates[1]
    assert abs(k1.mean() - elbo) < 4 * k1.std() / np.sqrt(len(k1)) + 0.05, (k1.mean(), elbo)
    means = [estimates[k].mean() for k in (1, 10, 100)]
    assert means[0] < means[1] < means[2], means


@pytest.mark.parametrize("k, max_elements", [(10, 10 * 64 * 64), (10, 3 * 64 * 64), (10, 64 * 64), (7, 2 * 64 * 5)])
def test_log_likelihood_combines_chunks_exactly(monkeypatch, k, max_elements):
    """With stubbed log-weights L [k, n], log_likelihood returns logsumexp_k L - log k exactly, however
    the k samples are chunked, and every chunk respects the element budget."""
    from scipy.special import logsumexp

    model = _model()
    n = 12
    x = np.zeros((n, 8, 8, 1), np.float32)
    x[:, 0, 0, 0] = np.arange(n)  # each example carries its index
    weights = np.random.RandomState(0).normal(size=(k, n)).astype(np.float64) * 5
    position, chunks = {}, []

    def stub(xb, yb, m, seed):
        idx = np.asarray(xb)[:, 0, 0, 0].astype(int)
        start = position.get(idx[0], 0)
        m = int(m)
        position[idx[0]] = start + m
        chunks.append((m, len(idx)))
        return tf.constant(weights[start:start + m][:, idx], tf.float32)

    monkeypatch.setattr(model, "_log_weights", stub)
    got = model.log_likelihood(x, k=k, batch_size=5, max_elements=max_elements).numpy()
    np.testing.assert_allclose(got, logsumexp(weights, axis=0) - np.log(k), rtol=1e-6, atol=1e-5)
    assert all(m * b * 64 <= max(max_elements, b * 64) for m, b in chunks), chunks
    assert sum(m for m, b in chunks) == k * 3  # 3 batches of examples (5, 5, 2), each covering all k samples
    if max_elements < k * 5 * 64:
        assert max(m for m, _ in chunks) < k  # the budget did force chunking


def test_log_likelihood_chunking_does_not_change_the_estimate():
    model = _model()
    x = _x(300)
    whole = model.log_likelihood(x, k=100, seed=3).numpy()
    chunked = model.log_likelihood(x, k=100, seed=4, max_elements=100 * 64 * 7).numpy()  # 15 chunks of <= 7
    diff = whole - chunked  # same estimator, independent noise: mean 0 (a wrong combination is off by ~log 15)
    assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(len(diff)) + 0.02, (diff.mean(), diff.std())


def test_reparameterised_gradient_reaches_encoder_through_reconstruction_only():
    model = _model()
    x = _x()
    with tf.GradientTape() as tape:
        terms = model.compute_terms(x, seed=tf.constant([1, 1]), training=True)
        rec = tf.reduce_mean(terms["log_px_z"])  # depends on the encoder only through z
    grads = tape.gradient(rec, model.encoder_network.trainable_weights + model.posterior.trainable_weights)
    assert all(g is not None for g in grads)
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_reparameterised_gradient_is_unbiased():
    """d/d(mu, sigma) E_q[f(z)] through kvae's training path (``standard_noise`` + the posterior's
    ``reparameterize``, what ``compute_terms`` uses) vs the closed form, for f(z) = sum z^2:
    E[sum z^2] = sum(mu^2 + sigma^2), so the gradients are 2 mu and 2 sigma."""
    model = _model()
    n = 100_000
    mu = tf.Variable(np.tile([[0.3, -1.2, 0.5, 0.0]], (n, 1)).astype("float32"))
    sigma = tf.Variable(np.tile([[0.5, 2.0, 1.0, 0.7]], (n, 1)).astype("float32"))
    with tf.GradientTape() as tape:
        q = model.posterior.distribution((mu, sigma))
        z = model.posterior.reparameterize(q, model.standard_noise(n, tf.constant([2, 3])))
        f = tf.reduce_sum(tf.reduce_sum(z ** 2, -1)) / n
    g_mu, g_sigma = tape.gradient(f, [mu, sigma])
    np.testing.assert_allclose(g_mu.numpy().sum(0), 2 * mu.numpy()[0], atol=0.05)
    np.testing.assert_allclose(g_sigma.numpy().sum(0), 2 * sigma.numpy()[0], atol=0.05)


def test_one_sgd_step_of_fit_is_the_step_on_the_batch_mean_loss():
    """fit's update equals w - lr * grad of mean(per-example loss), computed here with a GradientTape."""
    import keras

    model = _model()
    lr = 0.05
    model.compile(optimizer=keras.optimizers.SGD(lr))
    x = _x(8)
    model.optimizer.build(model.trainable_variables)
    seed = model.noise_seed()  # the seed of step 0
    with tf.GradientTape() as tape:
        terms = model.compute_terms(x, training=True, seed=seed)
        per_example = -terms["log_px_z"] + terms["kl"]
        loss = tf.reduce_mean(per_example)
    grads = tape.gradient(loss, model.trainable_variables)
    expected = [w.numpy() - lr * g.numpy() for w, g in zip(model.trainable_variables, grads)]
    model.fit(x, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert int(model.optimizer.iterations.numpy()) == 1
    for w, e in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(w.numpy(), e, atol=1e-6)
    # a sum instead of a mean would move the weights 8 times as far: the check above would fail
    result = model.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    assert abs(result["neg_elbo"] - (result["rec_loss"] + result["kl"])) < 1e-3


def test_regularizer_value_is_added_to_the_loss():
    reg = kvae.parts.regularizers.LatentL2(weight=0.5)
    z = tf.constant([[1.0, 2.0], [0.0, -1.0]])
    np.testing.assert_allclose(reg.penalty({"z": z}), [0.5 * 0.5 * 5, 0.5 * 0.5 * 1])
    model = _model(regularizers=[kvae.parts.regularizers.LatentL2(weight=2.0)])
    model.compile(optimizer="sgd")
    r = model.evaluate(_x(8), batch_size=8, verbose=0, return_dict=True)
    assert abs(r["loss"] - (r["neg_elbo"] + r["latent_l2"])) < 1e-3 and r["latent_l2"] > 0


def test_beta_schedule_drives_the_kl_weight_during_fit():
    sched = kvae.parts.schedules.LinearWarmup(target=2.0, warmup_steps=4)
    np.testing.assert_allclose([float(sched(s)) for s in (0, 1, 4, 10)], [0.0, 0.5, 2.0, 2.0])
    cyc = kvae.parts.schedules.CyclicalAnnealing(target=1.0, cycle_steps=4, ratio=0.5)
    np.testing.assert_allclose([float(cyc(s)) for s in range(6)], [0, 0.5, 1, 1, 0, 0.5])
    model = _model(beta=sched)
    model.compile(optimizer="adam")
    hist = model.fit(_x(16), batch_size=4, epochs=2, verbose=0).history
    # steps 0..3 then 4..7: mean beta 0.75 in epoch 1, 2.0 in epoch 2
    np.testing.assert_allclose(hist["beta"], [0.75, 2.0], atol=1e-6)


def test_validation_batches_get_different_noise_and_evaluations_repeat():
    import kvae

    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=0)
    model.compile(optimizer="adam")
    seeds = []
    original = model.compute_terms

    def recording(x, y=None, training=False, seed=None):
        seeds.append(seed)
        return original(x, y, training=training, seed=seed)

    model.compute_terms = recording
    model.run_eagerly = True
    x = (np.random.RandomState(0).uniform(size=(30, 8, 8, 1)) > 0.5).astype("float32")
    model.evaluate(x, batch_size=10, verbose=0)
    first = [tuple(s.numpy()) for s in seeds]
    seeds.clear()
    model.evaluate(x, batch_size=10, verbose=0)
    assert len(set(first)) == 3 and [tuple(s.numpy()) for s in seeds] == first


def test_monte_carlo_kl_per_dimension_when_analytic_kl_is_off():
    import kvae

    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(8,), seed=0, analytic_kl=False)
    x = (np.random.RandomState(0).uniform(size=(5, 8, 8, 1)) > 0.5).astype("float32")
    terms = model.compute_terms(x, seed=tf.constant([1, 2]))
    q = terms["q"].distribution
    z = terms["z"].numpy()
    loc, scale = q.loc.numpy(), q.scale.numpy()
    from scipy.stats import norm

    expected = norm.logpdf(z, loc, scale) - norm.logpdf(z)
    np.testing.assert_allclose(terms["kl_per_dim"].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(terms["kl"].numpy(), expected.sum(-1), atol=1e-4)


def test_gradient_penalty_runs_the_decoder_in_inference_mode_during_validation():
    import keras

    import kvae
    from kvae.parts.regularizers import DecoderGradientPenalty

    dec = keras.Sequential([keras.Input((2,)), keras.layers.Dense(16, "relu"), keras.layers.Dropout(0.5)])
    model = kvae.RAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), decoder_network=dec, regularization="gp",
                     seed=0)
    x = (np.random.RandomState(0).uniform(size=(4, 8, 8, 1)) > 0.5).astype("float32")
    gp = [r for r in model.regularizer_layers if isinstance(r, DecoderGradientPenalty)][0]
    val = model.compute_terms(x, training=False, seed=tf.constant([1, 2]))
    a, b = gp.penalty(val).numpy(), gp.penalty(val).numpy()
    np.testing.assert_array_equal(a, b)  # no dropout at validation
    train = model.compute_terms(x, training=True, seed=tf.constant([1, 2]))
    assert not np.allclose(gp.penalty(train).numpy(), gp.penalty(train).numpy())  # dropout in training


# ---- numpy transcriptions of each piece of the ELBO machinery (small eager models: these are the tests
# benchmarks/mutation_testing.py runs on kvae/core/objective.py, selected by "transcription")

def _small(**kw):
    return kvae.VAE(input_shape=(4, 4, 1), latent_dim=3, hidden=(8,), seed=0, **kw)


def _bern(logits, x):
    logits = logits.reshape(len(x), -1).astype(np.float64)
    x = x.reshape(len(x), -1)
    return (x * -np.logaddexp(0, -logits) + (1 - x) * -np.logaddexp(0, logits)).sum(-1)


def _gauss_kl(loc, scale):
    return np.log(1.0 / scale) + (scale ** 2 + loc ** 2) / 2.0 - 0.5


def test_transcription_compute_terms_and_elbo():
    """z = mu + sigma eps with eps = stateless_normal([B, D], seed); log p(x|z) Bernoulli at the decoder's
    logits; KL and KL per dimension the Gaussian closed form; elbo = log p(x|z) - KL for the same seed."""
    model = _small()
    x = (np.random.RandomState(0).uniform(size=(5, 4, 4, 1)) > 0.5).astype("float64")
    seed = tf.constant([3, 9], tf.int32)
    terms = model.compute_terms(x, seed=seed, training=True)
    loc, scale = (p.numpy() for p in model.encode_params(x.astype("float32")))
    eps = tf.random.stateless_normal([5, 3], seed).numpy()
    z = loc + scale * eps
    np.testing.assert_allclose(terms["z"].numpy(), z, rtol=1e-5, atol=1e-6)
    logits = model.decode_params(tf.constant(z, tf.float32))[0].numpy()
    np.testing.assert_allclose(terms["log_px_z"].numpy(), _bern(logits, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(terms["kl_per_dim"].numpy(), _gauss_kl(loc, scale), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(terms["kl"].numpy(), _gauss_kl(loc, scale).sum(-1), rtol=1e-4, atol=1e-5)
    assert terms["x"].dtype == tf.float32 and terms["training"] is True and terms["seed"] is seed
    assert terms["decode_params"] == model.decode_params and terms["y"] is None
    assert [g.name for g in terms["groups"]] == ["z"] and terms["groups"][0].context is None
    np.testing.assert_allclose(model.elbo(x, seed=seed).numpy(), _bern(logits, x) - _gauss_kl(loc, scale).sum(-1),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.elbo(x, seed=7).numpy(), (lambda t: (t["log_px_z"] - t["kl"]).numpy())(
        model.compute_terms(x, seed=tf.constant([7, 0]))), rtol=1e-6)
    unseeded = model.compute_terms(x)  # q.sample: noise of its own
    assert unseeded["z"].shape == (5, 3) and not np.allclose(unseeded["z"].numpy(), z)


def test_transcription_kl_closed_form_monte_carlo_and_fallback():
    from scipy.stats import logistic, norm

    model, mc = _small(), _small(analytic_kl=False)
    x = (np.random.RandomState(1).uniform(size=(4, 4, 4, 1)) > 0.5).astype("float32")
    q = model.encode(x)
    loc, scale = q.distribution.loc.numpy(), q.distribution.scale.numpy()
    z = tf.constant(np.random.RandomState(2).normal(size=(4, 3)), tf.float32)
    np.testing.assert_allclose(model.kl_divergence(q).numpy(), _gauss_kl(loc, scale).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(model.kl_divergence(q, z).numpy(), _gauss_kl(loc, scale).sum(-1), rtol=1e-5)
    log_q = norm.logpdf(z.numpy(), loc, scale)
    np.testing.assert_allclose(mc.kl_divergence(q, z).numpy(), (log_q - norm.logpdf(z.numpy())).sum(-1), rtol=1e-4)
    np.testing.assert_allclose(mc.kl_per_dimension(q, z).numpy(), log_q - norm.logpdf(z.numpy()), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(mc.kl_per_dimension(q).numpy(), _gauss_kl(loc, scale), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.kl_per_dimension(q, z).numpy(), _gauss_kl(loc, scale), rtol=1e-5, atol=1e-6)
    # another prior, passed explicitly: N(1, 2^2) has a closed form, a logistic prior has none
    other = tfd.Independent(tfd.Normal(tf.ones([3]), 2.0), 1)
    want = (np.log(2.0 / scale) + (scale ** 2 + (loc - 1.0) ** 2) / 8.0 - 0.5)
    np.testing.assert_allclose(model.kl_divergence(q, prior=other).numpy(), want.sum(-1), rtol=1e-5)
    np.testing.assert_allclose(model.kl_per_dimension(q, prior=other).numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mc.kl_per_dimension(q, z, prior=other).numpy(),
                               log_q - norm.logpdf(z.numpy(), 1.0, 2.0), rtol=1e-4, atol=1e-5)
    no_closed_form = tfd.Independent(tfd.Logistic(tf.zeros([3]), 1.0), 1)
    np.testing.assert_allclose(model.kl_divergence(q, z, prior=no_closed_form).numpy(),
                               (log_q - logistic.logpdf(z.numpy())).sum(-1), rtol=1e-4)
    with pytest.raises(kvae.errors.ConfigError, match="^a Monte-Carlo KL needs the sample z$"):
        mc.kl_divergence(q)
    flow = kvae.VAE(input_shape=(4, 4, 1), latent_dim=3, hidden=(8,), seed=0, posterior="planar")
    assert flow.kl_per_dimension(flow.encode(x), z) is None


def test_transcription_latent_draws_and_standard_noise(monkeypatch):
    model = _small()
    x = (np.random.RandomState(3).uniform(size=(4, 4, 4, 1)) > 0.5).astype("float32")
    loc, scale = (p.numpy() for p in model.encode_params(x))
    eps = np.random.RandomState(4).normal(size=(2, 4, 3)).astype("float32")
    (g,) = model.latent_draws(x, eps=tf.constant(eps))
    np.testing.assert_allclose(g.z.numpy(), loc + scale * eps, rtol=1e-5, atol=1e-6)
    assert g.name == "z" and g.kl is None and g.kl_per_dim is None
    np.testing.assert_allclose(g.prior.log_prob(g.z).numpy(), -0.5 * (g.z.numpy() ** 2).sum(-1)
                               - 1.5 * np.log(2 * np.pi), rtol=1e-5)
    (drawn,) = model.latent_draws(x, k=6, seed=tf.constant([1, 1]))
    assert drawn.z.shape == (6, 4, 3)
    np.testing.assert_allclose(drawn.z.numpy(), model.encode(x).sample(6, seed=tf.constant([1, 1])).numpy(), rtol=1e-6)
    # with a batch's groups, their posterior is used (here one of other data)
    x2 = 1.0 - x
    groups = model.compute_terms(x2, seed=tf.constant([0, 1]))["groups"]
    (reused,) = model.latent_draws(x, eps=tf.constant(eps), groups=groups)
    loc2, scale2 = (p.numpy() for p in model.encode_params(x2))
    np.testing.assert_allclose(reused.z.numpy(), loc2 + scale2 * eps, rtol=1e-5, atol=1e-6)
    px = model.decode_groups(groups)
    np.testing.assert_allclose(px.log_prob(x2).numpy(), model.decode(groups[0].z).log_prob(x2).numpy(), rtol=1e-6)
    # standard noise: the replica's slice of the global batch's noise
    seed = tf.constant([5, 6], tf.int32)
    np.testing.assert_array_equal(model.standard_noise(4, seed).numpy(), tf.random.stateless_normal([4, 3], seed))
    np.testing.assert_array_equal(model.standard_noise(4, seed, samples=2).numpy(),
                                  tf.random.stateless_normal([2, 4, 3], seed))

    monkeypatch.setattr(tf.distribute, "get_replica_context", lambda: None)  # cross-replica: one replica
    np.testing.assert_array_equal(model.standard_noise(4, seed).numpy(), tf.random.stateless_normal([4, 3], seed))

    class Replica:
        num_replicas_in_sync, replica_id_in_sync_group = 2, 1

    monkeypatch.setattr(tf.distribute, "get_replica_context", lambda: Replica())
    full = tf.random.stateless_normal([8, 3], seed).numpy()
    np.testing.assert_array_equal(model.standard_noise(4, seed).numpy(), full[4:8])
    full_k = tf.random.stateless_normal([2, 8, 3], seed).numpy()
    np.testing.assert_array_equal(model.standard_noise(4, seed, samples=2).numpy(), full_k[:, 4:8])
    # the posterior's draw is this replica's share of the global batch's noise
    terms = model.compute_terms(x, seed=seed)
    np.testing.assert_allclose(terms["z"].numpy(), loc + scale * full[4:8], rtol=1e-5, atol=1e-6)
    # a posterior without ``reparameterize`` draws with q.sample and the seed
    from kvae.parts.contracts import Posterior
    from kvae.parts.posteriors import GaussianPosterior

    class NoNoise(GaussianPosterior):
        reparameterize = Posterior.reparameterize

    plain = kvae.VAE(input_shape=(4, 4, 1), latent_dim=3, hidden=(8,), seed=0, posterior=NoNoise(3, name="posterior"))
    q = plain.encode(x)
    np.testing.assert_allclose(plain.compute_terms(x, seed=seed)["z"].numpy(), q.sample(seed=seed).numpy(), rtol=1e-6)


def _fake_terms(kl_per_dim):
    kl_per_dim = tf.constant(kl_per_dim, tf.float32)
    return {"kl": tf.reduce_sum(kl_per_dim, -1), "kl_per_dim": kl_per_dim,
            "log_px_z": tf.constant([-10.0, -20.0, -30.0][:kl_per_dim.shape[0]])}


def test_transcription_free_bits_and_the_loss():
    """Per-dimension free bits: sum_d max-by-batch-mean(lambda, KL_d) (a dimension at exactly lambda keeps its
    KL); without per-dimension KLs the floor is lambda D on the batch-mean total; free_bits_total floors the
    batch-mean total at lambda; the loss is -log p(x|z) + beta * that + the regularisers."""
    per_dim = np.array([[0.25, 1.0, 0.5, 3.0], [0.25, 3.0, 0.5, 0.0], [0.25, 2.0, 0.5, 0.0]], np.float32)
    # batch means: 0.25, 2.0, 0.5, 1.0 (exact in float32)
    model = kvae.VAE(input_shape=(4, 4, 1), latent_dim=4, hidden=(8,), seed=0, free_bits_per_dim=0.5)
    terms = _fake_terms(per_dim)
    want = np.where(per_dim.mean(0) >= 0.5, per_dim, 0.5).sum(-1)
    np.testing.assert_allclose(model.kl_penalty(terms).numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(model.bound_loss(terms, 2.0).numpy(), [10, 20, 30] + 2.0 * want, rtol=1e-6)
    totals = per_dim.sum(-1)  # mean 3.75
    no_dims = dict(terms, kl_per_dim=None)
    np.testing.assert_allclose(model.kl_penalty(no_dims).numpy(), totals, rtol=1e-6)  # 3.75 >= 0.5 * 4
    model.free_bits_per_dim = 0.9375  # floor 3.75: exactly the mean, kept
    np.testing.assert_allclose(model.kl_penalty(no_dims).numpy(), totals, rtol=1e-6)
    model.free_bits_per_dim = 1.0  # floor 4 > 3.75
    np.testing.assert_allclose(model.kl_penalty(no_dims).numpy(), [4.0, 4.0, 4.0])
    model.free_bits_per_dim = 0.0
    np.testing.assert_allclose(model.kl_penalty(terms).numpy(), totals, rtol=1e-6)
    np.testing.assert_allclose(model.bound_loss(terms, 0.5).numpy(), [10, 20, 30] + 0.5 * totals, rtol=1e-6)
    total = kvae.VAE(input_shape=(4, 4, 1), latent_dim=4, hidden=(8,), seed=0, free_bits_total=3.75)
    np.testing.assert_allclose(total.kl_penalty(terms).numpy(), totals, rtol=1e-6)
    total.free_bits_total = 3.8
    np.testing.assert_allclose(total.kl_penalty(terms).numpy(), [3.8, 3.8, 3.8], rtol=1e-6)
    with tf.GradientTape() as tape:
        kl = tf.Variable(per_dim)
        model.free_bits_per_dim = 0.5
        floored = model.kl_penalty({"kl": tf.reduce_sum(kl, -1), "kl_per_dim": kl})
    grad = tape.gradient(floored, kl).numpy()
    np.testing.assert_array_equal(grad, np.broadcast_to(per_dim.mean(0) >= 0.5, per_dim.shape).astype(np.float32))


def test_transcription_regularisers_are_added_per_example():
    from kvae.parts.regularizers import LatentL2

    model = kvae.VAE(input_shape=(4, 4, 1), latent_dim=3, hidden=(8,), seed=0,
                     regularizers=[LatentL2(0.5), LatentL2(2.0, name="second")])
    x = (np.random.RandomState(5).uniform(size=(4, 4, 4, 1)) > 0.5).astype("float32")
    terms = model.compute_terms(x, seed=tf.constant([1, 2]))
    loss, regs = model.per_example_loss(terms, 3.0)
    sq = 0.5 * (terms["z"].numpy() ** 2).sum(-1)
    assert len(regs) == 2 and regs[0].dtype == tf.float32
    np.testing.assert_allclose(regs[0].numpy(), 0.5 * sq, rtol=1e-5)
    np.testing.assert_allclose(regs[1].numpy(), 2.0 * sq, rtol=1e-5)
    want = -terms["log_px_z"].numpy() + 3.0 * terms["kl"].numpy() + 2.5 * sq
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-5)


def test_transcription_an_objective_replaces_the_bound():
    model = kvae.VAE(input_shape=(4, 4, 1), latent_dim=3, hidden=(8,), seed=0, objective="iwae")
    x = (np.random.RandomState(6).uniform(size=(4, 4, 4, 1)) > 0.5).astype("float32")
    terms = model.compute_terms(x, seed=tf.constant([1, 2]))
    np.testing.assert_allclose(model.bound_loss(terms, 100.0).numpy(),
                               model.objective.per_example_loss(model, terms).numpy(), rtol=1e-6)


def _dropout_model(where, **kw):
    import keras

    enc = [keras.Input((4, 4, 4)), keras.layers.Flatten(), keras.layers.Dense(8, "tanh")]
    dec = [keras.Input((5,)), keras.layers.Dense(8, "tanh")]
    (enc if where == "encoder" else dec).append(keras.layers.Dropout(0.5))
    return kvae.VAE(input_shape=(4, 4, 1), latent_dim=2, num_classes=3, seed=0, encoder_network=keras.Sequential(enc),
                    decoder_network=keras.Sequential(dec), **kw)


def test_transcription_labels_and_the_training_flag_reach_encoder_and_decoder():
    """A conditional model: q(z|x, y) and p(x|z, y) see the labels; ``training`` reaches the encoder's and
    the decoder's dropout (and is off by default)."""
    x = (np.random.RandomState(7).uniform(size=(4, 4, 4, 1)) > 0.5).astype("float32")
    y, other = np.array([0, 1, 2, 1]), np.array([2, 0, 1, 0])
    seed = tf.constant([2, 5], tf.int32)
    model = _dropout_model("decoder")
    terms = model.compute_terms(x, y, seed=seed)
    loc, scale = (p.numpy() for p in model.encode_params(x, y))
    z = loc + scale * tf.random.stateless_normal([4, 2], seed).numpy()
    np.testing.assert_allclose(terms["z"].numpy(), z, rtol=1e-5, atol=1e-6)
    logits = model.decode_params(tf.constant(z, tf.float32), y)[0].numpy()
    np.testing.assert_allclose(terms["log_px_z"].numpy(), _bern(logits, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(terms["px"].log_prob(x).numpy(), _bern(logits, x), rtol=1e-4, atol=1e-4)
    assert terms["y"] is y and terms["training"] is False
    np.testing.assert_allclose(model.elbo(x, y, seed=seed).numpy(), (terms["log_px_z"] - terms["kl"]).numpy(),
                               rtol=1e-6)
    assert np.abs(model.elbo(x, other, seed=seed).numpy() - model.elbo(x, y, seed=seed).numpy()).max() > 1e-3
    eps = tf.random.stateless_normal([2, 4, 2], seed)
    (draws,) = model.latent_draws(x, y, eps=eps)
    np.testing.assert_allclose(draws.z.numpy(), loc + scale * eps.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.decode_groups(terms["groups"], y).log_prob(x).numpy(), _bern(logits, x),
                               rtol=1e-4, atol=1e-4)
    # dropout in the decoder: training=True changes log p(x|z) only; the default is inference
    np.testing.assert_array_equal(model.decode_groups(terms["groups"], y).mean().numpy(),
                                  model.decode_groups(terms["groups"], y).mean().numpy())
    trained = model.compute_terms(x, y, seed=seed, training=True)
    np.testing.assert_allclose(trained["z"].numpy(), z, rtol=1e-5, atol=1e-6)
    assert np.abs(trained["log_px_z"].numpy() - terms["log_px_z"].numpy()).max() > 1e-3
    assert not np.allclose(model.decode_groups(terms["groups"], y, training=True).mean().numpy(),
                           model.decode_groups(terms["groups"], y).mean().numpy())
    # dropout in the encoder: training=True changes the posterior
    enc = _dropout_model("encoder")
    a = enc.compute_terms(x, y, seed=seed)
    np.testing.assert_array_equal(a["z"].numpy(), enc.compute_terms(x, y, seed=seed)["z"].numpy())
    assert np.abs(enc.compute_terms(x, y, seed=seed, training=True)["z"].numpy() - a["z"].numpy()).max() > 1e-3
    np.testing.assert_array_equal(enc.latent_groups(x, y, seed=seed)[0].z.numpy(), a["z"].numpy())
    assert not np.allclose(enc.latent_groups(x, y, seed=seed, training=True)[0].z.numpy(), a["z"].numpy())
    d0 = enc.latent_draws(x, y, eps=eps)[0].z.numpy()
    np.testing.assert_array_equal(d0, enc.latent_draws(x, y, eps=eps)[0].z.numpy())
    assert not np.allclose(enc.latent_draws(x, y, eps=eps, training=True)[0].z.numpy(), d0)


def test_transcription_monte_carlo_terms_and_free_bits_edges():
    from scipy.stats import norm

    mc = _small(analytic_kl=False)
    x = (np.random.RandomState(8).uniform(size=(5, 4, 4, 1)) > 0.5).astype("float32")
    terms = mc.compute_terms(x, seed=tf.constant([1, 3]))
    loc, scale = (p.numpy() for p in mc.encode_params(x))
    z = terms["z"].numpy()
    per_dim = norm.logpdf(z, loc, scale) - norm.logpdf(z)
    np.testing.assert_allclose(terms["kl_per_dim"].numpy(), per_dim, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(terms["kl"].numpy(), per_dim.sum(-1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(terms["prior"].log_prob(z).numpy(), norm.logpdf(z).sum(-1), rtol=1e-5)
    # a Monte-Carlo KL per dimension can be negative: without free bits it is used as it is
    signed = _fake_terms([[-1.0, 0.5], [-2.0, 0.25]])
    model = kvae.VAE(input_shape=(4, 4, 1), latent_dim=2, hidden=(8,), seed=0)
    np.testing.assert_allclose(model.kl_penalty(signed).numpy(), [-0.5, -1.75])
    small = kvae.VAE(input_shape=(4, 4, 1), latent_dim=2, hidden=(8,), seed=0, free_bits_total=0.5)
    np.testing.assert_allclose(small.kl_penalty(_fake_terms([[0.25, 0.0], [0.25, 0.25]])).numpy(), [0.5, 0.5])
