"""The ladder VAE against independent transcriptions (numpy / scipy) and the shared battery."""
import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import norm

import kvae
from kvae.models.lvae.gaussians import normal_kl, precision_weighted, residual

RNG = np.random.RandomState(0)


def small(**kw):
    return kvae.LadderVAE(input_shape=(8, 8, 1), groups=2, channels=8, latent_channels=2, blocks=1, seed=0, **kw)


def binary(n, shape=(8, 8, 1), seed=0):
    return (np.random.RandomState(seed).uniform(size=(n, *shape)) > 0.5).astype("float32")


def test_precision_weighted_merge_is_the_numpy_formula():
    mu1, mu2 = RNG.normal(size=(2, 5))
    s1, s2 = RNG.uniform(0.2, 2.0, size=(2, 5))
    mu, sigma = precision_weighted(*(tf.constant(a, tf.float32) for a in (mu1, s1, mu2, s2)))
    var = 1.0 / (s1 ** -2 + s2 ** -2)
    np.testing.assert_allclose(sigma.numpy(), np.sqrt(var), rtol=1e-5)
    np.testing.assert_allclose(mu.numpy(), (mu1 / s1 ** 2 + mu2 / s2 ** 2) * var, rtol=1e-5, atol=1e-6)
    # the product of the two Gaussian densities is proportional to the merged one (grid check)
    grid = np.linspace(-6, 6, 20001)
    prod = norm.pdf(grid, mu1[0], s1[0]) * norm.pdf(grid, mu2[0], s2[0])
    prod /= np.trapezoid(prod, grid)
    np.testing.assert_allclose(prod, norm.pdf(grid, mu.numpy()[0], sigma.numpy()[0]), atol=1e-4)


def test_residual_normal_and_closed_form_kl():
    dm, ds, mp, sp = RNG.normal(size=4), RNG.uniform(0.5, 1.5, 4), RNG.normal(size=4), RNG.uniform(0.5, 1.5, 4)
    mu, sigma = residual(*(tf.constant(a, tf.float32) for a in (dm, ds, mp, sp)))
    np.testing.assert_allclose(mu.numpy(), mp + dm, rtol=1e-6)
    np.testing.assert_allclose(sigma.numpy(), sp * ds, rtol=1e-6)
    mq, sq = RNG.normal(size=4), RNG.uniform(0.3, 2, 4)
    draws = RNG.normal(size=(400000, 4)) * sq + mq  # Monte Carlo of E_q[log q - log p]
    mc = (norm.logpdf(draws, mq, sq) - norm.logpdf(draws, mp, sp)).mean(0)
    got = normal_kl(*(tf.constant(a, tf.float32) for a in (mq, sq, mp, sp))).numpy()
    np.testing.assert_allclose(got, mc, atol=0.02)


def test_each_groups_kl_is_the_closed_form_of_its_q_and_p_and_the_mc_estimate():
    model = small()
    x = binary(4)
    terms = model.compute_terms(x, seed=tf.constant([3, 4]))
    assert [g.name for g in terms.groups] == ["z2", "z1"]
    total = 0
    for g in terms.groups:
        q, p = g.q.distribution, g.prior.distribution
        want = normal_kl(q.loc, q.scale, p.loc, p.scale).numpy().reshape(4, -1).sum(-1)
        np.testing.assert_allclose(g.kl.numpy(), want, rtol=1e-5)
        # Monte Carlo of E_q[log q(z) - log p(z)] with z drawn from this group's q (the groups above fixed)
        z = q.sample(20000, seed=[5, 6]).numpy()
        mc = (norm.logpdf(z, q.loc.numpy(), q.scale.numpy()) - norm.logpdf(z, p.loc.numpy(), p.scale.numpy()))
        np.testing.assert_allclose(mc.reshape(20000, 4, -1).sum(-1).mean(0), want, rtol=0.05, atol=0.05)
        total = total + want
    np.testing.assert_allclose(terms.kl.numpy(), total, rtol=1e-5)


def test_lower_groups_posterior_merges_bottom_up_and_top_down_prior():
    model = small()
    x = binary(3)
    hat = model.encode_params(x)
    eps = tf.random.stateless_normal([3, model.latent_dim], [1, 2])
    walked, _ = model.walk(hat=hat, eps=eps)
    bottom = model._split(hat[0])[1], model._split(hat[1])[1]
    mu_p, sigma_p = walked[1]["p"]
    want = precision_weighted(*bottom, mu_p, sigma_p)
    for a, b in zip(walked[1]["q"], want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    np.testing.assert_allclose(walked[0]["q"][0].numpy(), model._split(hat[0])[0].numpy())  # top: bottom-up alone


def test_prior_sampler_joint_matches_the_conditionals():
    """Ancestral draws of p(z): the bottom group given the top is N(mu_p(z_top), sigma_p(z_top)^2), so
    its standardised residuals are N(0, 1); log p(z) of the prior distribution is the sum of the
    conditionals' log-densities."""
    model = small()
    prior = model.prior_distribution()
    z = prior.sample(4000, seed=[7, 8])
    walked, _ = model.walk(z=z)
    top, bottom = model._split(z)
    mu, sigma = walked[1]["p"]
    r = ((bottom - mu) / sigma).numpy().ravel()
    assert abs(r.mean()) < 0.02 and abs(r.std() - 1) < 0.02
    mu_top, s_top = walked[0]["p"]
    want = (norm.logpdf(top.numpy(), mu_top.numpy(), s_top.numpy()).reshape(4000, -1).sum(-1)
            + norm.logpdf(bottom.numpy(), mu.numpy(), sigma.numpy()).reshape(4000, -1).sum(-1))
    np.testing.assert_allclose(prior.log_prob(z).numpy(), want, rtol=1e-4)


def test_importance_weights_run_every_draw_through_the_hierarchy():
    """log_prob_from_noise equals logmeanexp over draws of log p(x|z) + log p(z) - log q(z|x), each term
    from the model's distributions over the whole code."""
    model = small()
    x = binary(3)
    eps = np.random.RandomState(1).normal(size=(6, 3, model.latent_dim)).astype("float32")
    q = model.encode(x)
    z = q.from_noise(eps)
    log_w = (model.decode(z).log_prob(x) + model.prior_distribution().log_prob(z) - q.log_prob(z)).numpy()
    want = np.log(np.mean(np.exp(log_w - log_w.max(0)), 0)) + log_w.max(0)
    np.testing.assert_allclose(model.log_prob_from_noise(x, eps).numpy(), want, rtol=1e-4)


def test_log_likelihood_runs_the_bottom_up_pass_once_per_batch_with_the_same_values():
    """The importance draws of a batch share its bottom-up pass (importance_context): computed once per
    batch, used by every chunk of draws, and the values are those of recomputing it in every chunk."""
    from kvae.core.importance import chunked_log_likelihood

    model = small()
    x = binary(5, seed=2)
    counted = {"context": 0, "weights": 0}

    def counting(name, fn):
        def call(*args):
            counted[name] += 1
            return fn(*args)
        return call

    model._importance_context = counting("context", model._importance_context)
    model._log_weights = counting("weights", model._log_weights)
    got = model.log_likelihood(x, k=7, batch_size=2, seed=4, max_elements=1).numpy()
    assert counted == {"context": 3, "weights": 21}  # batches of 2, 2, 1; 7 chunks of one draw each
    per_chunk = chunked_log_likelihood(lambda xb, yb, m, s: model.log_weights_from_noise(xb, yb, k=m, seed=s), x,
                                       None, 7, model._seed(4), 2, lambda b: 1).numpy()
    np.testing.assert_allclose(got, per_chunk, rtol=0, atol=1e-5)
    assert np.abs(np.diff(got)).max() > 1e-3
    hat = model.importance_context(x)  # and the draws do read the context they are given
    moved = model.log_weights_from_noise(x, k=2, seed=[1, 2], context=(hat[0] + 1.0, hat[1]))
    assert np.abs(moved - model.log_weights_from_noise(x, k=2, seed=[1, 2], context=hat)).min() > 1e-3


def test_a_subclass_overriding_log_weights_without_context_still_evaluates():
    """An override of log_weights_from_noise written before ``context`` (a VAE's or a ladder's) keeps
    working: it is called without it, and a ladder's draws then encode x themselves."""
    calls = []

    class OldVAE(kvae.VAE):
        def log_weights_from_noise(self, x, y=None, eps=None, k=None, seed=None, training=False, groups=None):
            calls.append("vae")
            return super().log_weights_from_noise(x, y, eps=eps, k=k, seed=seed, training=training, groups=groups)

    class OldLadder(kvae.LadderVAE):
        def log_weights_from_noise(self, x, y=None, eps=None, k=None, seed=None, training=False, groups=None):
            calls.append("ladder")
            return super().log_weights_from_noise(x, y, eps=eps, k=k, seed=seed, training=training, groups=groups)

    x = binary(3)
    pairs = [(OldVAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=0),
              kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=0)),
             (OldLadder(input_shape=(8, 8, 1), groups=2, channels=8, latent_channels=2, blocks=1, seed=0), small())]
    for old, plain in pairs:
        old(x[:1]), plain(x[:1])
        plain.set_weights(old.get_weights())
        np.testing.assert_allclose(old.log_likelihood(x, k=4, seed=1), plain.log_likelihood(x, k=4, seed=1), atol=1e-5)
    assert calls and set(calls) == {"vae", "ladder"}


def test_residual_merge_and_free_bits_per_group_train():
    import keras

    model = small(merge="residual", free_bits_per_group=0.5)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(binary(16), epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_free_bits_per_group_floor_each_groups_batch_mean_kl():
    """kl_penalty = sum_l max(lambda, E_batch KL_l) per group: a group under the floor contributes
    the constant lambda (no gradient), one above it its own KL."""
    import tensorflow as tf

    x = binary(8)
    plain = small()
    terms = plain.compute_terms(x, training=True, seed=tf.constant([1, 2]))
    kls = [g.kl.numpy() for g in terms.groups]
    means = sorted(k.mean() for k in kls)
    lam = float(np.mean(means))  # between the two groups' batch means
    model = small(free_bits_per_group=lam)
    model.set_weights(plain.get_weights())
    with tf.GradientTape(persistent=True) as tape:
        terms = model.compute_terms(x, training=True, seed=tf.constant([1, 2]))
        penalty = model.kl_penalty(terms)
        penalty_sum = tf.reduce_sum(penalty)
        over = max(terms.groups, key=lambda g: float(tf.reduce_mean(g.kl)))
        over_kl = tf.reduce_sum(over.kl)
    want = sum(k if k.mean() >= lam else np.full_like(k, lam) for k in kls)
    np.testing.assert_allclose(penalty.numpy(), want, rtol=1e-5)
    # the penalty's gradient is the gradient of the group above the floor alone
    variables = model.trainable_variables
    got = tape.gradient(penalty_sum, variables)
    ref = tape.gradient(over_kl, variables)
    for g, r, v in zip(got, ref, variables):
        g = np.zeros(v.shape) if g is None else g.numpy()
        r = np.zeros(v.shape) if r is None else r.numpy()
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    assert any(np.any(r.numpy()) for r in ref if r is not None)


@pytest.mark.parametrize("layer", [1, 2])
def test_sample_from_layer_keeps_the_groups_above(layer):
    model = small()
    codes, _ = model.codes_from_layer(layer, rows=2, cols=3, seed=0)
    top = len(codes)
    for i, z in enumerate(codes):  # top group first: groups above `layer` are i < top - layer
        z = z.numpy().reshape(2, 3, -1)
        if i < top - layer:
            np.testing.assert_array_equal(z[:, 0], z[:, 1])  # fixed within a row
            assert not np.allclose(z[0, 0], z[1, 0])  # one prior draw per row
        else:
            assert not np.allclose(z[0, 0], z[0, 1])  # drawn anew in every column
    images = model.sample_from_layer(layer, rows=2, cols=3, seed=0).numpy().reshape(2, 3, -1)
    assert not np.allclose(images[0, 0], images[0, 1])
    with pytest.raises(kvae.errors.ConfigError):
        model.sample_from_layer(3, 1, 1)


def test_command_line_train_layer_grid_export_and_tf_free_runtime(tmp_path):
    """kvae train --model lvae on digits, kvae sample --layer 1 writes the grid, kvae export passes
    parity (read from the manifest) and the TF-free runtime samples and scores like Keras."""
    import json
    import subprocess
    import sys

    from PIL import Image

    run, bundle, grid = tmp_path / "run", tmp_path / "bundle", tmp_path / "layer1.png"

    def kvae_cli(*args):
        result = subprocess.run([sys.executable, "-m", "kvae.cli", *args], capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-2000:]

    kvae_cli("train", "--model", "lvae", "--dataset", "digits", "--epochs", "1", "--groups", "2", "--channels", "8",
             "--latent-channels", "2", "--blocks", "1", "--quiet", "--out", str(run))
    kvae_cli("sample", str(run), "--layer", "1", "--n", "3", "--out", str(grid))
    image = np.asarray(Image.open(grid).convert("L"), np.float32) / 255.0
    # the grid of the run's own sample_from_layer(1): 3 rows of 8 columns at --seed's default 0
    from kvae.evaluation.plotting import image_grid
    from kvae.training.runs import load_run

    model, _ = load_run(str(run))
    want = image_grid(model.sample_from_layer(1, rows=3, cols=8, seed=0).numpy(), ncol=8)
    np.testing.assert_allclose(image, want, atol=2 / 255)
    assert np.abs(image_grid(model.sample_from_layer(1, rows=3, cols=8, seed=1).numpy(), ncol=8) - want).max() > 0.1
    kvae_cli("export", str(run), "--out", str(bundle))
    parity = json.load(open(bundle / "manifest.json"))["parity"]
    assert {"encode", "decode", "sample", "log_prob", "reconstruct"} <= set(parity)
    for endpoint, diffs in parity.items():
        assert max(diffs.values()) <= 1e-5, (endpoint, diffs)
    code = ("import json, sys, numpy as np; from kvae_serve import Bundle; b = Bundle(sys.argv[1]); "
            "print(json.dumps({'tf': 'tensorflow' in sys.modules, 'shape': list(np.asarray(b.sample(4, seed=0)).shape)}))")
    out = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"tf": False, "shape": [4, 8, 8, 1]}
