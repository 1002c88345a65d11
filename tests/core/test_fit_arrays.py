"""``fit`` on numpy arrays with Keras' own options (docs/data.md): ``sample_weight`` and
``class_weight`` weight each example's loss as Keras defines (sum of w * loss over the batch size),
``validation_split`` holds out the last fraction, through kvae's ``fit`` override."""
import keras
import numpy as np
import pytest

import kvae


@pytest.fixture(scope="module")
def data(digits):
    x, y = digits["train"].arrays()
    return x[:64], y[:64]


def _update(x, **fit_kwargs):
    """The change of every weight after one plain-SGD step on the whole of ``x`` (one batch), from the
    same initial weights (the global seed) and with the same noise (the model's seed and step)."""
    keras.utils.set_random_seed(0)
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    model(x[:1])
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, batch_size=len(x), epochs=1, verbose=0, shuffle=False, **fit_kwargs)  # the same order: same noise
    assert int(model.optimizer.iterations.numpy()) == 1
    return [a - b for a, b in zip(model.get_weights(), before)]


def _assert_scaled(got, ref, factor):
    assert max(np.abs(r).max() for r in ref) > 1e-4  # the reference step did move the weights
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, factor * r, rtol=1e-4, atol=1e-7)


def test_sample_weight_scales_each_examples_loss(data):
    x, _ = data
    plain = _update(x)
    # weight 2 on every example: twice the loss, twice the SGD step (the same noise: same seed and step)
    _assert_scaled(_update(x, sample_weight=np.full(len(x), 2.0)), plain, 2.0)
    # weight 0 on every example: no gradient at all
    _assert_scaled(_update(x, sample_weight=np.zeros(len(x))), plain, 0.0)
    # weights are per example: the half-weighted batch is the average of the all-1 and all-0 steps only
    # if the loss is linear in the weights, example by example (Keras: sum(w * loss) / batch size)
    half = np.where(np.arange(len(x)) % 2 == 0, 1.0, 0.0)
    other = 1.0 - half
    a, b = _update(x, sample_weight=half), _update(x, sample_weight=other)
    for p, u, v in zip(plain, a, b):
        np.testing.assert_allclose(u + v, p, rtol=1e-4, atol=1e-7)
    assert max(np.abs(u - v).max() for u, v in zip(a, b)) > 1e-5  # and the two halves differ


def test_class_weight_is_the_sample_weight_of_each_examples_class(data):
    x, y = data
    weights = {c: float(c + 1) for c in range(10)}
    by_class = _update(x, y=y, class_weight=weights)
    by_example = _update(x, sample_weight=np.array([weights[int(c)] for c in y]))
    for a, b in zip(by_class, by_example):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    _assert_scaled(_update(x, y=y, class_weight={c: 3.0 for c in range(10)}), _update(x), 3.0)


def test_validation_split_holds_out_the_last_fraction(data):
    x, _ = data
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x, batch_size=16, epochs=2, verbose=0, validation_split=0.25)
    assert int(model.optimizer.iterations.numpy()) == 2 * 3  # 48 training examples, batches of 16
    assert len(history.history["val_loss"]) == 2
    # the last epoch's validation is an evaluation of the last quarter (same weights, same noise)
    held_out = model.evaluate(x[48:], batch_size=16, verbose=0, return_dict=True)
    assert held_out["loss"] == pytest.approx(history.history["val_loss"][-1], rel=1e-6)
    first = model.evaluate(x[:16], batch_size=16, verbose=0, return_dict=True)
    assert first["loss"] != pytest.approx(history.history["val_loss"][-1], rel=1e-3)
