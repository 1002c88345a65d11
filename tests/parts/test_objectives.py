"""The importance-weighted objectives against numpy transcriptions, PIWAE's gradient routing
against an independent GradientTape, and every new model name through the CLI to an export."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp
from scipy.stats import norm

from kvae.core.terms import Terms
import kvae
import kvae.parts.likelihoods
from kvae.parts import objectives

LOG_W = np.array([[-3.0, -10.0, 0.5], [-2.0, -11.0, 0.1], [-7.0, -9.5, 2.0], [-2.5, -30.0, 0.0],
                  [-4.0, -10.5, 1.0], [-1.0, -12.0, -1.0]], np.float32)  # [S = 6, B = 3]


def np_iwae(log_w, groups=1):
    g = log_w.reshape(groups, -1, log_w.shape[1])
    return np.mean(logsumexp(g, axis=1) - np.log(g.shape[1]), axis=0)


@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_iwae_bound_is_the_grouped_logsumexp(groups):
    np.testing.assert_allclose(objectives.iwae_bound(tf.constant(LOG_W), groups).numpy(), np_iwae(LOG_W, groups),
                               rtol=1e-6)
    if groups == 6:  # K = 1: the mean log-weight (the Monte-Carlo ELBO)
        np.testing.assert_allclose(np_iwae(LOG_W, 6), LOG_W.mean(0), rtol=1e-6)


def stubbed(objective):
    """The objective with log_weights replaced by the fixed LOG_W."""
    objective.log_weights = lambda model, terms: tf.constant(LOG_W)
    return objective


def _empty_terms():
    return Terms(x=None, y=None, groups=(), px=None, log_px_z=None)


def test_each_objective_is_its_formula_on_fixed_log_weights():
    terms = _empty_terms()
    np.testing.assert_allclose(stubbed(objectives.IWAEBound(6)).per_example_loss(None, terms),
                               -(logsumexp(LOG_W, axis=0) - np.log(6)), rtol=1e-6)
    np.testing.assert_allclose(stubbed(objectives.MIWAEBound(3, 2)).per_example_loss(None, terms),
                               -np.mean([logsumexp(LOG_W[:3], 0) - np.log(3), logsumexp(LOG_W[3:], 0) - np.log(3)], 0),
                               rtol=1e-6)
    beta = 0.3
    np.testing.assert_allclose(stubbed(objectives.CIWAEBound(6, beta)).per_example_loss(None, terms),
                               -(beta * LOG_W.mean(0) + (1 - beta) * (logsumexp(LOG_W, 0) - np.log(6))), rtol=1e-6)
    piwae = stubbed(objectives.PIWAEBound(2, 3))
    np.testing.assert_allclose(piwae.per_example_loss(None, terms), -(logsumexp(LOG_W, 0) - np.log(6)), rtol=1e-6)
    np.testing.assert_allclose(piwae.encoder_loss(None, terms), -np_iwae(LOG_W, 3), rtol=1e-6)
    assert objectives.IWAEBound(4).encoder_loss(None, _empty_terms()) is None


def test_log_weights_are_log_p_x_z_plus_log_p_z_minus_log_q():
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), seed=0)
    x = (np.random.RandomState(0).uniform(size=(4, 8, 8, 1)) > 0.5).astype("float32")
    seed = tf.constant([5, 6], tf.int32)
    terms = model.compute_terms(x, seed=seed)
    log_w = objectives.IWAEBound(7).log_weights(model, terms).numpy()
    eps = model.standard_noise(4, tf.cast(tf.random.experimental.stateless_fold_in(seed, 2711), tf.int32),
                               samples=7).numpy()
    loc, scale = (t.numpy() for t in model.encode_params(x))
    z = loc + scale * eps  # [7, 4, 3]
    logits = model.likelihood.named_params(model.decode_params(z))["logits"].numpy().astype(np.float64)
    log_px = np.sum(x * logits - np.logaddexp(0, logits), axis=(2, 3, 4))  # Bernoulli(sigmoid(logits))
    want = log_px + norm.logpdf(z).sum(-1) - norm.logpdf(z, loc, scale).sum(-1)
    np.testing.assert_allclose(log_w, want, rtol=1e-4, atol=1e-3)
    assert np.std(log_w, axis=0).min() > 0  # seven different samples per example


def test_piwae_steps_the_encoder_on_miwae_and_the_decoder_on_iwae():
    keras.utils.set_random_seed(0)
    model = kvae.PIWAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), num_samples=2, num_groups=3, seed=4)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x = (np.random.RandomState(1).uniform(size=(8, 8, 8, 1)) > 0.5).astype("float32")
    variables = model.trainable_variables
    before = [v.numpy().copy() for v in variables]
    seed = model.noise_seed()  # step 0's seed, the one fit's first step uses
    with tf.GradientTape(persistent=True) as tape:
        terms = model.compute_terms(x, training=True, seed=seed)
        log_w = model.objective.log_weights(model, terms)
        iwae = -tf.reduce_mean(objectives.iwae_bound(log_w))
        miwae = -tf.reduce_mean(objectives.iwae_bound(log_w, 3))
    inference = {id(v) for v in model.encoder_network.trainable_variables + model.posterior.trainable_variables}
    g_iwae, g_miwae = tape.gradient(iwae, variables), tape.gradient(miwae, variables)
    model.fit(x, batch_size=8, epochs=1, shuffle=False, verbose=0)
    routed = 0
    for v, w0, gi, gm in zip(variables, before, g_iwae, g_miwae):
        g = gm if id(v) in inference else gi
        np.testing.assert_allclose(v.numpy(), w0 - 0.1 * g.numpy(), atol=2e-6, err_msg=v.path)
        if id(v) in inference:
            routed += 1
            assert np.abs(gi.numpy() - gm.numpy()).max() > 1e-6  # the two bounds' gradients differ here
    assert routed >= 4


def test_objectives_need_a_density_and_valid_settings():
    with pytest.raises(kvae.errors.ConfigError, match="IWAEBound needs a posterior with a density"):
        kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), posterior="deterministic", objective="iwae")
    with pytest.raises(kvae.errors.ConfigError, match="elbo_weight must be in"):
        objectives.CIWAEBound(3, 1.5)
    with pytest.raises(kvae.errors.ConfigError, match="unknown objective 'iwea'"):
        objectives.get("iwea")
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), objective="miwae", seed=0)
    assert isinstance(model.objective, objectives.MIWAEBound) and model.objective.num_groups == 8


@pytest.mark.parametrize("name,options", [("iwae", ["--num-samples", "3"]),
                                          ("miwae", ["--num-samples", "2", "--num-groups", "2"]),
                                          ("ciwae", ["--elbo-weight", "0.25"]),
                                          ("piwae", ["--num-samples", "2", "--num-groups", "2"])])
def test_every_bound_trains_saves_and_exports_from_the_cli(tmp_path, name, options, assert_bundle_parity):
    import json

    from kvae.cli import main as cli

    run, bundle = str(tmp_path / "run"), str(tmp_path / "bundle")
    assert cli.main(["train", "--model", name, "--dataset", "digits", "--epochs", "1", "--hidden", "16",
                     "--latent-dim", "2", "--limit", "200", "--out", run, "--quiet", *options]) == 0
    config = json.load(open(os.path.join(run, "config.json")))
    model = keras.saving.load_model(os.path.join(run, "model.keras"))
    assert type(model).__name__ == name.upper()
    assert model.objective.num_samples == int(options[options.index("--num-samples") + 1]) if "--num-samples" in \
        options else model.objective.elbo_weight == 0.25
    assert config["model"] == name
    assert cli.main(["export", run, "--out", bundle]) == 0
    assert_bundle_parity(bundle)


def test_any_model_takes_an_objective_from_the_cli(tmp_path):
    from kvae.cli import main as cli

    run = str(tmp_path / "run")
    assert cli.main(["train", "--model", "vae", "--objective", "ciwae", "--dataset", "digits", "--epochs", "1",
                     "--hidden", "16", "--latent-dim", "2", "--limit", "100", "--out", run, "--quiet"]) == 0
    model = keras.saving.load_model(os.path.join(run, "model.keras"))
    assert isinstance(model.objective, objectives.CIWAEBound) and model.objective.elbo_weight == 0.5


def test_log_weights_draw_m_times_k_samples_and_fresh_noise_without_a_seed():
    model = kvae.VAE(input_shape=(4, 4, 1), latent_dim=2, hidden=(8,), seed=0)
    x = (np.random.RandomState(2).uniform(size=(3, 4, 4, 1)) > 0.5).astype("float32")
    seeded = model.compute_terms(x, seed=tf.constant([1, 2]))
    miwae = objectives.MIWAEBound(2, 3)
    a = miwae.log_weights(model, seeded).numpy()
    assert a.shape == (6, 3) and len(np.unique(a.round(5))) == 18
    np.testing.assert_array_equal(a, miwae.log_weights(model, seeded).numpy())  # a function of the seed
    other = objectives.MIWAEBound(2, 3).log_weights(model, model.compute_terms(x, seed=tf.constant([1, 3]))).numpy()
    assert not np.allclose(a, other)
    unseeded = model.compute_terms(x)
    b, c = (miwae.log_weights(model, unseeded).numpy() for _ in range(2))
    assert b.shape == (6, 3) and not np.allclose(b, c)
    np.testing.assert_allclose(miwae.per_example_loss(model, seeded).numpy(), -np_iwae(a, 3), rtol=1e-5)
    np.testing.assert_allclose(objectives.IWAEBound(6).per_example_loss(model, seeded).numpy(), -np_iwae(a, 1),
                               rtol=1e-5)
    ciwae = objectives.CIWAEBound(6, 0.25)
    np.testing.assert_allclose(ciwae.per_example_loss(model, seeded).numpy(),
                               -(0.25 * a.mean(0) + 0.75 * np_iwae(a, 1)), rtol=1e-5)
    piwae = objectives.PIWAEBound(2, 3)
    np.testing.assert_allclose(piwae.per_example_loss(model, seeded).numpy(), -np_iwae(a, 1), rtol=1e-5)
    np.testing.assert_allclose(piwae.encoder_loss(model, seeded).numpy(), -np_iwae(a, 3), rtol=1e-5)


def test_get_builds_objectives_from_names_configs_and_layers():
    assert objectives.get(None) is None and objectives.get("elbo") is None
    layer = objectives.CIWAEBound(4, 0.75)
    assert objectives.get(layer) is layer
    named = objectives.get("piwae")
    assert isinstance(named, objectives.PIWAEBound) and (named.num_samples, named.num_groups) == (8, 8)
    rebuilt = objectives.get(keras.saving.serialize_keras_object(layer))
    assert isinstance(rebuilt, objectives.CIWAEBound) and (rebuilt.num_samples, rebuilt.elbo_weight) == (4, 0.75)
    with pytest.raises(kvae.errors.ConfigError, match="objective must be a name or an Objective layer, got int"):
        objectives.get(3)
    from kvae import registry

    names = ", ".join(registry.names("objective"))
    assert "ciwae, " in names
    with pytest.raises(kvae.errors.ConfigError) as err:
        objectives.get("x")
    assert str(err.value) == f"unknown objective 'x'; choose elbo, {names} or pass an objective layer"
    with pytest.raises(kvae.errors.ConfigError, match="IWAEBound needs a normalised p\\(x\\|z\\).*MSSSIMLikelihood"):
        kvae.VAE(input_shape=(16, 16, 1), latent_dim=2, hidden=(8,),
                 decoder=kvae.parts.likelihoods.MSSSIMLikelihood((16, 16, 1)), objective="iwae")
    with pytest.raises(kvae.errors.ConfigError, match="MIWAEBound needs a posterior with a density.*Deterministic"):
        kvae.VAE(input_shape=(4, 4, 1), latent_dim=2, hidden=(8,), posterior="deterministic", objective="miwae")


def test_vae_gan_objective_is_the_feature_space_reconstruction():
    """L_llike = 1/2 ||Dis_l(x) - Dis_l(E[x|z])||^2 per example (Dis_l transcribed from the discriminator's
    own Dense weights and LeakyReLU(0.2)); the decoder pays gamma L_llike, the encoder KL + L_llike."""
    model = kvae.VAEGAN(input_shape=(4, 4, 1), latent_dim=2, hidden=(8,), gamma=0.3, discriminator_hidden=(6, 5),
                        feature_layer=0, seed=0)
    x = (np.random.RandomState(3).uniform(size=(3, 4, 4, 1)) > 0.5).astype("float32")
    terms = model.compute_terms(x, seed=tf.constant([1, 2]))
    dis = model.objective.discriminator(model)
    assert dis is model.regularizer_layers[0]
    kernel, bias = (w.numpy() for w in dis.discriminator.layers[0].weights)

    def features(images):
        h = images.reshape(len(images), -1) @ kernel + bias
        return np.where(h > 0, h, 0.2 * h)

    want = 0.5 * ((features(x) - features(terms["px"].mean().numpy())) ** 2).sum(-1)
    np.testing.assert_allclose(model.objective.feature_loss(model, terms).numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.objective.per_example_loss(model, terms).numpy(), 0.3 * want, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(model.objective.encoder_loss(model, terms).numpy(), terms["kl"].numpy() + want,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(kvae.errors.ConfigError,
                       match=r"^the VAE-GAN objective needs an ImageDiscriminator regulariser \(kvae.VAEGAN adds one\)$"):
        kvae.VAE(input_shape=(4, 4, 1), latent_dim=2, hidden=(8,), objective=objectives.VAEGANObjective())


def _dropout_model(where):
    enc = [keras.Input((4, 4, 4)), keras.layers.Flatten(), keras.layers.Dense(8, "tanh")]
    dec = [keras.Input((5,)), keras.layers.Dense(8, "tanh")]
    (enc if where == "encoder" else dec).append(keras.layers.Dropout(0.5))
    return kvae.VAE(input_shape=(4, 4, 1), latent_dim=2, num_classes=3, seed=0, encoder_network=keras.Sequential(enc),
                    decoder_network=keras.Sequential(dec))


def test_log_weights_reuse_the_batch_posteriors_labels_and_training_flag():
    """With dropout in the encoder, the log-weights use the batch's own posteriors (not a second, differently
    dropped-out encoding) and its labels; with dropout in the decoder, the batch's training flag."""
    x = (np.random.RandomState(4).uniform(size=(4, 4, 4, 1)) > 0.5).astype("float32")
    y = np.array([0, 2, 1, 2])
    seed = tf.constant([7, 1], tf.int32)
    model = _dropout_model("encoder")
    terms = model.compute_terms(x, y, seed=seed, training=True)
    log_w = objectives.IWAEBound(3).log_weights(model, terms).numpy()
    q = terms["groups"][0].q.distribution
    loc, scale = q.loc.numpy(), q.scale.numpy()
    eps = model.standard_noise(4, tf.cast(tf.random.experimental.stateless_fold_in(seed, 2711), tf.int32),
                               samples=3).numpy()
    z = loc + scale * eps
    logits = model.decode_params(z, y)[0].numpy().astype(np.float64)
    log_px = np.sum(x * logits - np.logaddexp(0, logits), axis=(2, 3, 4))
    want = log_px + norm.logpdf(z).sum(-1) - norm.logpdf(z, loc, scale).sum(-1)
    np.testing.assert_allclose(log_w, want, rtol=1e-4, atol=1e-3)
    dec = _dropout_model("decoder")
    train, infer = dec.compute_terms(x, y, seed=seed, training=True), dec.compute_terms(x, y, seed=seed)
    bound = objectives.IWAEBound(3)
    np.testing.assert_array_equal(bound.log_weights(dec, infer).numpy(), bound.log_weights(dec, infer).numpy())
    assert not np.allclose(bound.log_weights(dec, train).numpy(), bound.log_weights(dec, train).numpy())
