"""skip_nonfinite_updates: a step whose gradients are not finite changes nothing but the step count.

The NaN enters through the batch (one pixel), past ``fit``'s data check, by calling the compiled
step directly: the gradients of every weight that sees that pixel are NaN.
"""
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import kvae


def _batches():
    x = (np.random.RandomState(0).uniform(size=(16, 8, 8, 1)) > 0.5).astype("float32")
    bad = x.copy()
    bad[3, 2, 2, 0] = np.nan
    return x, bad


def _model(skip):
    m = kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(16,), seed=3, skip_nonfinite_updates=skip)
    m.compile(optimizer=keras.optimizers.Adam(0.01))
    m.optimizer.build(m.trainable_variables)
    return m


def _state(m):
    return [v.numpy().copy() for v in m.weights] + [v.numpy().copy() for v in m.optimizer.variables]


def test_a_nonfinite_step_changes_nothing_but_the_step_count():
    x, bad = _batches()
    m = _model(skip=True)
    step = tf.function(m.train_step)
    before = _state(m)
    logs = step((tf.constant(bad),))
    after = _state(m)
    assert int(m.optimizer.iterations.numpy()) == 1
    assert float(logs["skipped_updates"]) == 1.0
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if not np.array_equal(a, b)]
    iterations_index = len(m.weights) + [id(v) for v in m.optimizer.variables].index(id(m.optimizer.iterations))
    assert changed == [iterations_index]  # only the step count moved

    assert float(logs["loss"]) == 0.0  # the skipped step's NaN entered no metric (an empty mean)
    logs = step((tf.constant(x),))
    assert float(logs["skipped_updates"]) == 1.0  # the epoch's count: the finite step adds 0
    alone = _model(skip=True)
    alone.set_weights(before[:len(m.weights)])
    alone.optimizer.iterations.assign(1)  # the noise is keyed by the step
    first = tf.function(alone.train_step)((tf.constant(x),))
    assert float(logs["loss"]) == pytest.approx(float(first["loss"]), rel=1e-6)  # the finite step's loss alone
    assert int(m.optimizer.iterations.numpy()) == 2
    assert all(np.all(np.isfinite(w)) for w in m.get_weights())
    # the finite step is the one a fresh model's first step would be from the same weights, except
    # for Adam's step count (2 here): compare with a model whose optimizer also counted one step
    ref = _model(skip=False)
    for v, w in zip(ref.weights, before[:len(ref.weights)]):
        v.assign(w)
    ref.optimizer.iterations.assign(1)
    tf.function(ref.train_step)((tf.constant(x),))
    for a, b in zip(m.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_without_the_option_the_same_step_poisons_the_weights():
    _, bad = _batches()
    m = _model(skip=False)
    tf.function(m.train_step)((tf.constant(bad),))
    assert not all(np.all(np.isfinite(w)) for w in m.get_weights())
    assert "skipped_updates" not in [t.name for t in m.metrics]


def test_the_option_is_saved_and_off_by_default(tmp_path):
    m = _model(skip=True)
    path = str(tmp_path / "m.keras")
    m.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.skip_nonfinite_updates is True
    assert kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,)).skip_nonfinite_updates is False


def test_the_mixed_precision_optimizer_keeps_its_own_skipping():
    """With a LossScaleOptimizer the model does not skip for it: the optimizer must see the
    non-finite step to lower its loss scale."""
    _, bad = _batches()
    m = kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(16,), seed=3, skip_nonfinite_updates=True)
    m.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.01)))
    m.optimizer.build(m.trainable_variables)
    scale = float(m.optimizer.dynamic_scale.numpy())
    tf.function(m.train_step)((tf.constant(bad),))
    assert float(m.optimizer.dynamic_scale.numpy()) == scale / 2
    assert all(np.all(np.isfinite(w)) for w in m.get_weights())


SCRIPT = textwrap.dedent('''
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np, kvae
    x = (np.random.RandomState(0).uniform(size=(16, 8, 8, 1)) > 0.5).astype("float32")
    bad = x.copy()
    bad[12, 2, 2, 0] = np.nan  # in the second replica's half of the global batch only
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        m = kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(16,), seed=3, skip_nonfinite_updates=True)
        m.compile(optimizer=keras.optimizers.SGD(0.05))
        m.optimizer.build(m.trainable_variables)
    w0 = [w.copy() for w in m.get_weights()]

    @tf.function
    def run(batch):
        return strategy.run(m.train_step, args=((batch,),))

    out = {}
    for name, data in (("bad", bad), ("good", x)):
        batch = next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(data).batch(16))))
        logs = run(batch)
        skipped = [float(v) for v in strategy.experimental_local_results(logs["skipped_updates"])]
        w = m.get_weights()
        out[name] = {"skipped": skipped, "iterations": int(m.optimizer.iterations.numpy()),
                     "max_change": max(float(np.max(np.abs(a - b))) for a, b in zip(w, w0)),
                     "finite": all(bool(np.all(np.isfinite(a))) for a in w)}
        w0 = [a.copy() for a in w]
    print(json.dumps(out))
''')


def test_two_replicas_skip_together_when_one_sees_a_nan():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["bad"] == {"skipped": [1.0, 1.0], "iterations": 1, "max_change": 0.0, "finite": True}
    assert out["good"]["skipped"] == [1.0, 1.0]  # the epoch's count, on each replica
    assert out["good"]["iterations"] == 2 and out["good"]["finite"] and out["good"]["max_change"] > 0


@pytest.mark.parametrize("make", [
    lambda: kvae.LadderVAE(input_shape=(8, 8, 1), groups=2, channels=8, latent_channels=2, blocks=1, seed=3,
                           skip_nonfinite_updates=True),
    lambda: kvae.VQVAE(input_shape=(8, 8, 1), grid=(2, 2), embedding_dim=2, num_embeddings=8, hidden=(16,), seed=3,
                       skip_nonfinite_updates=True),
], ids=["lvae", "vqvae"])
def test_families_with_their_own_metrics_skip_and_log_finite_values(make):
    x, bad = _batches()
    m = make()
    m.compile(optimizer=keras.optimizers.Adam(0.01))
    m.optimizer.build(m.trainable_variables)
    # VQ-VAE's moving-average codebook is a forward-pass update: here the codes stay finite (the NaN
    # reaches only log p(x|z)) and the codebook takes its step; every weight the optimizer owns stays
    forward = {id(v) for v in m.weights if "quantizer" in v.path}
    before = [v.numpy().copy() for v in m.weights if id(v) not in forward]
    step = tf.function(m.train_step)
    logs = step((tf.constant(bad),))
    assert float(logs["skipped_updates"]) == 1.0
    for a, b in zip(before, [v.numpy() for v in m.weights if id(v) not in forward]):
        np.testing.assert_array_equal(a, b)
    logs = step((tf.constant(x),))
    assert all(np.isfinite(float(v)) for v in logs.values()), logs
    assert any(not np.array_equal(a, b) for a, b in zip(before, [v.numpy() for v in m.weights if id(v) not in forward]))


def test_the_moving_average_codebook_ignores_a_batch_with_nonfinite_codes():
    m = kvae.VQVAE(input_shape=(8, 8, 1), grid=(2, 2), embedding_dim=2, num_embeddings=8, hidden=(16,), seed=3)
    q = m.posterior.quantizer
    state = [v.numpy().copy() for v in (q.codebook, q.ema_count, q.ema_sum)]
    z_e = np.random.RandomState(1).normal(size=(4, 2)).astype("float32")
    z_e[2, 1] = np.nan
    q.ema_update(tf.constant(z_e), tf.constant([0, 1, 2, 3]))
    for a, v in zip(state, (q.codebook, q.ema_count, q.ema_sum)):
        np.testing.assert_array_equal(a, v.numpy())
    z_e[2, 1] = 0.5  # the same batch made finite moves it
    q.ema_update(tf.constant(z_e), tf.constant([0, 1, 2, 3]))
    assert not np.array_equal(state[1], q.ema_count.numpy())
