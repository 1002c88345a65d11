"""VAE-GAN (Larsen et al. 2016): the feature-space reconstruction, the three updates each on its own
loss, and the discriminator's own optimizer touching only its own weights."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.parts.regularizers import _fold


def _model(**kw):
    options = dict(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), discriminator_hidden=(12, 10), gamma=0.5,
                   adversarial_weight=0.3, discriminator_lr=0.05, seed=5)
    options.update(kw)
    return kvae.VAEGAN(**options)


def _x(seed=0, n=8):
    return (np.random.RandomState(seed).uniform(size=(n, 8, 8, 1)) > 0.5).astype("float32")


def _leaky(a):
    return np.where(a > 0, a, 0.2 * a)


def test_features_and_losses_against_numpy():
    """Dis_l is the discriminator's hidden layer l written out in numpy; the decoder's loss is
    gamma/2 ||Dis_l(x) - Dis_l(x~)||^2 + w [softplus(-T(x~)) + softplus(-T(x_p))], the encoder's KL + L_llike."""
    model = _model(feature_layer=0)
    dis = model.regularizer_layers[0]
    x = _x()
    seed = tf.constant([3, 4], tf.int32)
    terms = model.compute_terms(x, training=False, seed=seed)
    (w1, b1), (w2, b2), (w3, b3) = [(d.kernel.numpy(), d.bias.numpy()) for d in dis.discriminator.layers[::2]]

    def feats(images):
        return _leaky(images.reshape(len(images), -1) @ w1 + b1)

    def logits(images):
        return (_leaky(feats(images) @ w2 + b2) @ w3 + b3)[:, 0]

    x_rec = terms["px"].mean().numpy()
    z_p = terms["prior"].sample(8, seed=_fold(seed, 19))
    x_gen = model.decode(z_p).mean().numpy()
    feature = 0.5 * ((feats(x) - feats(x_rec)) ** 2).sum(1)
    np.testing.assert_allclose(dis.features(x).numpy(), feats(x), rtol=1e-5, atol=1e-6)
    loss, regs = model.per_example_loss(terms, 1.0)
    gan = 0.3 * (np.logaddexp(0, -logits(x_rec)) + np.logaddexp(0, -logits(x_gen)))
    np.testing.assert_allclose(regs[0].numpy(), gan, rtol=1e-4)
    np.testing.assert_allclose(loss.numpy(), 0.5 * feature + gan, rtol=1e-4)
    np.testing.assert_allclose(model.objective.encoder_loss(model, terms).numpy(), terms["kl"].numpy() + feature,
                               rtol=1e-4)


def test_one_fit_step_routes_each_loss_to_its_network_and_the_discriminator_steps_itself():
    """One SGD step of fit: encoder and posterior move by -lr grad(KL + L_llike), decoder by
    -lr grad(gamma L_llike + GAN), the discriminator by its own Adam on its BCE (not the model's step)."""
    keras.utils.set_random_seed(0)
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    dis = model.regularizer_layers[0]
    x = _x(1)
    variables = model.trainable_variables
    own = {id(v) for v in dis.own_variables}
    before = [v.numpy().copy() for v in variables]
    seed = model.noise_seed()
    with tf.GradientTape(persistent=True) as tape:
        terms = model.compute_terms(x, training=True, seed=seed)
        decoder_loss = tf.reduce_mean(model.per_example_loss(terms, 1.0)[0])
        encoder_loss = tf.reduce_mean(model.objective.encoder_loss(model, terms))
    g_dec, g_enc = tape.gradient(decoder_loss, variables), tape.gradient(encoder_loss, variables)
    inference = {id(v) for v in model.encoder_network.trainable_variables + model.posterior.trainable_variables}
    model.fit(x, batch_size=8, epochs=1, shuffle=False, verbose=0)
    checked = moved_dis = 0
    for v, w0, gd, ge in zip(variables, before, g_dec, g_enc):
        if id(v) in own:
            moved_dis += int(np.abs(v.numpy() - w0).max() > 0)
            continue
        g = ge if id(v) in inference else gd
        np.testing.assert_allclose(v.numpy(), w0 - 0.1 * g.numpy(), atol=2e-6, err_msg=v.path)
        checked += 1
    assert checked >= 6 and moved_dis == len(own)  # the discriminator moved, by its own optimizer


def test_discriminator_step_changes_only_its_weights_and_lowers_its_loss():
    model = _model()
    dis = model.regularizer_layers[0]
    x = _x(2, 16)
    terms = model.compute_terms(x, training=False, seed=tf.constant([1, 2], tf.int32))
    x_rec = terms["px"].mean()
    x_gen = dis.generated(terms)

    def bce():
        lr = dis.logits(x).numpy()
        lf = np.concatenate([dis.logits(x_rec).numpy(), dis.logits(x_gen).numpy()])
        return np.logaddexp(0, -lr).mean() + 2 * np.logaddexp(0, lf).mean()

    start = bce()
    others = [v.numpy().copy() for v in model.model_variables]
    for _ in range(20):
        dis.after_step(model, terms)
    assert bce() < start - 0.1
    for v, w in zip(model.model_variables, others):
        np.testing.assert_array_equal(v.numpy(), w, err_msg=v.path)


def test_vae_gan_needs_its_discriminator_and_a_valid_feature_layer():
    with pytest.raises(kvae.errors.ConfigError, match="ImageDiscriminator"):
        kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), objective=kvae.parts.objectives.VAEGANObjective())
    with pytest.raises(ValueError, match="feature_layer"):
        _model(feature_layer=2)


def test_command_line_train_and_export(tmp_path):
    import json
    import os

    from kvae.cli import main as cli

    run, bundle = str(tmp_path / "run"), str(tmp_path / "bundle")
    assert cli.main(["train", "--model", "vae-gan", "--dataset", "digits", "--epochs", "1", "--latent-dim", "4",
                     "--discriminator-hidden", "32,16", "--quiet", "--out", run]) == 0
    history = json.load(open(os.path.join(run, "history.json")))
    assert "gan" in history and np.isfinite(history["gan"][-1])
    assert cli.main(["export", run, "--out", bundle, "--explorer-examples", "0"]) == 0
    manifest = json.load(open(os.path.join(bundle, "manifest.json")))
    assert all(p["onnx_max_abs_diff"] <= 1e-5 for p in manifest["parity"].values())
