"""``--precision mixed_float16``: Keras wraps the optimizer in a LossScaleOptimizer at ``compile`` and
``train_step`` scales each loss it differentiates once (the bound, and PIWAE's / VAE-GAN's encoder loss on the
split path); the optimizer unscales every gradient once.  One SGD step from the same weights with the same
noise moves every weight as the float32 step does, up to float16 rounding in the networks (a loss scaled twice,
or a gradient left scaled, moves it 2^15 times as far)."""
import keras
import numpy as np
import pytest

import kvae


def _build(factory, policy):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        return factory()
    finally:
        keras.mixed_precision.set_global_policy(previous)


FACTORIES = {
    "vae": lambda: kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(32,), seed=0),
    "piwae": lambda: kvae.PIWAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(32,), num_samples=4, num_groups=2,
                                seed=0),
    "vae-gan": lambda: kvae.VAEGAN(input_shape=(8, 8, 1), latent_dim=4, hidden=(32,), seed=0),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_mixed_float16_step_moves_the_weights_as_the_float32_step(name):
    x = (np.random.RandomState(0).uniform(size=(32, 8, 8, 1)) > 0.5).astype("float32")
    f32 = _build(FACTORIES[name], "float32")
    f16 = _build(FACTORIES[name], "mixed_float16")
    f32(x[:2]), f16(x[:2])
    assert f16.encoder_network.layers[-1].compute_dtype == "float16"
    f16.set_weights(f32.get_weights())
    lr = 0.05
    f32.compile(optimizer=keras.optimizers.SGD(lr))
    f16.compile(optimizer=keras.optimizers.SGD(lr))
    assert isinstance(f16.optimizer, keras.optimizers.LossScaleOptimizer)  # "loss scaling is automatic"
    f16.optimizer.build(f16.trainable_variables)
    scale = float(f16.optimizer.dynamic_scale.numpy())
    assert scale >= 2.0 ** 10  # large enough that a doubled or missing scale is unmistakable
    before = [v.numpy().astype(np.float64) for v in f32.trainable_variables]
    f32.fit(x, batch_size=32, epochs=1, verbose=0, shuffle=False)
    f16.fit(x, batch_size=32, epochs=1, verbose=0, shuffle=False)
    assert int(f16.optimizer.iterations.numpy()) == 1  # the step was applied, not skipped as non-finite
    own = {id(v) for v in f32.model_variables}
    moved = 0
    for v32, v16, w0 in zip(f32.trainable_variables, f16.trainable_variables, before):
        if id(v32) not in own:  # the VAE-GAN's discriminator: its own Adam, not the loss-scaled optimizer
            continue
        d32 = v32.numpy().astype(np.float64) - w0
        d16 = v16.numpy().astype(np.float64) - w0
        if np.linalg.norm(d32) < 1e-6:
            assert np.linalg.norm(d16) < 1e-5, v32.path
            continue
        moved += 1
        assert np.linalg.norm(d16 - d32) <= 0.05 * np.linalg.norm(d32), (v32.path, np.linalg.norm(d16),
                                                                         np.linalg.norm(d32))
    assert moved >= 4
