"""tf.distribute: N replicas apply the same update as one device on the same global batch.

Runs in a subprocess because logical CPU devices must be configured before TensorFlow starts.
SGD (not Adam) makes the check sensitive to loss scaling: Adam's first step is invariant to a
constant factor on the gradient, SGD's is not.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np, kvae

    def make(kind):
        if kind == "vae":
            m = kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(32,), seed=3)
        elif kind == "factorvae":  # a second optimizer (the discriminator's) inside train_step
            m = kvae.FactorVAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(32,), discriminator_hidden=(16,),
                               discriminator_lr=0.05, seed=3)
            m.regularizer_layers[0].optimizer = keras.optimizers.SGD(0.05)
            m.regularizer_layers[0].optimizer.build(m.regularizer_layers[0].own_variables)
        elif kind == "piwae":  # [S, B, D] noise sliced per replica; two losses routed to two parameter sets
            m = kvae.PIWAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(32,), num_samples=3, num_groups=2, seed=3)
        elif kind == "vqvae":  # the codebook's moving averages: counts and sums all-reduced across replicas,
            # dead entries restarted at vectors of the all-gathered global batch
            m = kvae.VQVAE(input_shape=(8, 8, 1), grid=(2, 2), embedding_dim=2, num_embeddings=8, hidden=(32,),
                           decay=0.8, restart_threshold=0.5, seed=3)
        elif kind == "rhvae":  # the metric sums over the global batch: centroids and factors all-gathered
            m = kvae.RHVAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(32,), num_leapfrog=1, fixed_point_steps=2,
                           step_size=0.1, metric_hidden=(8,), seed=3)
        elif kind == "skip":  # skip_nonfinite_updates: the finite steps go through the cross-replica cond
            m = kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(32,), seed=3, skip_nonfinite_updates=True)
        elif kind == "lvae":  # two latent groups: the top-down pass, per-group noise slices of the global batch
            m = kvae.LadderVAE(input_shape=(8, 8, 1), groups=2, channels=8, latent_channels=2, blocks=1, seed=3)
        else:  # flow prior + IAF posterior: Monte-Carlo KL, bijector caches, two flows
            m = kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(32,), seed=3,
                         posterior=kvae.parts.posteriors.IAFPosterior(4, num_steps=1, hidden_units=(8,), context_size=4),
                         prior=kvae.parts.priors.FlowPrior(4, num_steps=1, hidden_units=(8,)))
        m.compile(optimizer=keras.optimizers.SGD(0.05))
        return m

    x = (np.random.RandomState(0).uniform(size=(32, 8, 8, 1)) > 0.5).astype("float32")
    out = {}
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])  # one per process: collective keys
    for kind in sys.argv[1:]:
        keras.utils.set_random_seed(0)
        ref = make(kind)
        w0 = [w.copy() for w in ref.get_weights()]
        h1 = ref.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0).history
        with strategy.scope():
            m = make(kind)
            m.set_weights(w0)
        h2 = m.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0).history
        out[kind] = {
            "replicas": strategy.num_replicas_in_sync,
            "max_weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(ref.get_weights(), m.get_weights())),
            "max_update": max(float(np.abs(a - b).max()) for a, b in zip(ref.get_weights(), w0)),
            "metrics_1": {k: v[-1] for k, v in h1.items()}, "metrics_2": {k: v[-1] for k, v in h2.items()},
        }
    print("RESULT " + json.dumps(out))
''')


def _run(*kinds):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *kinds], capture_output=True, text=True, env=env,
                          timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def results():
    return _run("vae", "flows", "factorvae", "piwae", "vqvae", "rhvae", "lvae", "skip")


@pytest.mark.parametrize("kind", ["vae", "flows", "factorvae", "piwae", "vqvae", "rhvae", "lvae", "skip"])
def test_two_replicas_apply_the_single_device_update(results, kind):
    r = results[kind]
    assert r["replicas"] == 2
    assert r["max_update"] > 1e-3  # the step did something
    assert r["max_weight_diff"] < 1e-5, r


@pytest.mark.parametrize("kind", ["vae", "flows", "factorvae", "piwae", "rhvae", "lvae", "skip"])
def test_metrics_are_aggregated_across_replicas(results, kind):
    m1, m2 = results[kind]["metrics_1"], results[kind]["metrics_2"]
    assert set(m1) == set(m2)
    for key in m1:
        assert abs(m1[key] - m2[key]) < 1e-3 * max(1.0, abs(m1[key])), (key, m1[key], m2[key])


def test_mixed_precision_keeps_probabilities_in_float32_and_trains():
    import keras
    import numpy as np
    import tensorflow as tf

    import kvae

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(32,), seed=0,
                         posterior=kvae.parts.posteriors.IAFPosterior(4, num_steps=1, hidden_units=(8,), context_size=4))
        assert model.encoder_network.layers[-1].compute_dtype == "bfloat16"
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        x = (np.random.RandomState(0).uniform(size=(32, 8, 8, 1)) > 0.5).astype("float32")
        history = model.fit(x, batch_size=16, epochs=4, verbose=0).history
        terms = model.compute_terms(x, seed=tf.constant([1, 2]))
        assert terms["log_px_z"].dtype == tf.float32 and terms["kl"].dtype == tf.float32
        assert np.all(np.isfinite(history["loss"])) and history["loss"][-1] < history["loss"][0]
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_xla_compiled_steps_match_the_uncompiled_ones():
    """Same weights and the same noise give the same update with and without XLA.  (XLA's random
    kernels draw another stream, so the noise is fixed here by a deterministic function.)"""
    import keras
    import numpy as np
    import tensorflow as tf

    import kvae

    def fixed_noise(batch_size, seed):
        grid = tf.cast(tf.range(batch_size)[:, None] * 4 + tf.range(4)[None, :], tf.float32)
        return tf.sin(grid * 1.7) + tf.cast(seed[0] % 7, tf.float32) * 0.01

    x = (np.random.RandomState(0).uniform(size=(32, 8, 8, 1)) > 0.5).astype("float32")
    results = []
    for jit in (False, True):
        model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(32,), seed=0)
        model.standard_noise = fixed_noise
        if results:
            model.set_weights(results[0][1])
        weights = [w.copy() for w in model.get_weights()]
        model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=jit)
        model.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0)
        results.append((model.get_weights(), weights))
    assert max(float(np.abs(a - b).max()) for a, b in zip(results[0][0], results[1][0])) < 1e-4
