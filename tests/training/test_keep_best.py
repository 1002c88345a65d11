"""Keeping the best epoch, early stopping and the learning-rate decay of ``kvae train``
(:class:`kvae.training.callbacks.KeepBest`, :func:`kvae.training.callbacks.exponential_lr`)."""
import json

import keras
import numpy as np
import pytest

from kvae.training.callbacks import KeepBest, exponential_lr
from kvae.errors import RunError

def _tiny(ema=False):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(0.1, use_ema=ema, ema_momentum=0.5), loss="mse")
    return model


def _drive(callback, model, values, start=0):
    """Epoch ends with the given validation losses; the weights are set to epoch-specific values
    first, so which epoch's weights were kept can be read back."""
    seen = []
    for epoch, value in enumerate(values, start):
        model.set_weights([np.full(w.shape, float(epoch), "float32") for w in model.get_weights()])
        callback.on_epoch_end(epoch, {"val_loss": value})
        seen.append(model.stop_training)
    return seen


def test_keeps_the_lowest_validation_epoch_and_stops_after_patience(tmp_path):
    model = _tiny()
    cb = KeepBest(str(tmp_path), patience=2)
    cb.set_model(model)
    cb.on_train_begin()
    stops = _drive(cb, model, [5.0, 3.0, 3.5, 2.9, 3.1, 3.0])
    assert stops == [False, False, False, False, False, True]  # best at epoch 3; epochs 4 and 5 waited
    cb.on_train_end()
    for w in model.get_weights():
        np.testing.assert_array_equal(w, 3.0)
    state = json.loads((tmp_path / "best.json").read_text())
    assert state["best_epoch"] == 3 and state["best"] == 2.9 and state["wait"] == 2 and state["stopped_epoch"] == 5


def test_the_negative_elbo_is_preferred_to_a_loss_bent_by_warm_up(tmp_path):
    model = _tiny()
    cb = KeepBest(str(tmp_path))
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_end(0, {"val_loss": 50.0, "val_neg_elbo": 100.0})  # beta = 0.5 during warm-up
    cb.on_epoch_end(1, {"val_loss": 90.0, "val_neg_elbo": 95.0})
    assert cb.state["best_epoch"] == 1 and cb.state["best"] == 95.0


def test_min_delta_and_non_finite_values_are_not_improvements(tmp_path):
    model = _tiny()
    cb = KeepBest(str(tmp_path), min_delta=0.5)
    cb.set_model(model)
    cb.on_train_begin()
    _drive(cb, model, [4.0, 3.6, float("nan"), 3.4])
    assert cb.state["best_epoch"] == 3 and cb.state["wait"] == 0  # 3.6 is within 0.5 of 4.0; NaN never wins
    assert cb.state["best"] == 3.4


def test_a_resumed_count_continues_and_a_replayed_epoch_is_not_counted_twice(tmp_path):
    model = _tiny()
    first = KeepBest(str(tmp_path), patience=3)
    first.set_model(model)
    first.on_train_begin()
    _drive(first, model, [2.0, 2.5, 2.6])  # best epoch 0, waited 2
    second = KeepBest(str(tmp_path), patience=3)
    second.set_model(model)
    second.on_train_begin()
    assert second.state["wait"] == 2 and second.state["best_epoch"] == 0
    stops = _drive(second, model, [2.6, 2.7], start=2)  # epoch 2 replayed, then epoch 3: the third wait
    assert stops == [False, True]
    assert second.state["wait"] == 3


def test_with_a_moving_average_the_averaged_weights_are_kept(tmp_path):
    model = _tiny(ema=True)
    x = np.random.RandomState(0).normal(size=(32, 3)).astype("float32")
    model.fit(x, x[:, :2], epochs=3, batch_size=8, verbose=0)  # builds the optimizer's averages
    averages = [v.numpy() for v in model.optimizer._model_variables_moving_average]
    for v in model.trainable_variables:  # mid-training, the raw weights differ from their averages
        v.assign(v + 1.0)
    raw = [v.numpy() for v in model.trainable_variables]
    assert max(np.abs(a - r).max() for a, r in zip(averages, raw)) > 1e-3
    cb = KeepBest(str(tmp_path))
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_end(0, {"val_loss": 1.0})
    for v, r in zip(model.trainable_variables, raw):  # the model's own weights are untouched by the save
        np.testing.assert_array_equal(v.numpy(), r)
    fresh = _tiny()
    fresh.load_weights(str(tmp_path / "best.weights.h5"))
    for v, a in zip(fresh.trainable_variables, averages):
        np.testing.assert_array_equal(v.numpy(), a)


def test_missing_monitor_and_corrupt_state_are_named(tmp_path):
    cb = KeepBest(str(tmp_path))
    cb.set_model(_tiny())
    cb.on_train_begin()
    with pytest.raises(RunError, match="val_neg_elbo or val_loss.*pass validation data"):
        cb.on_epoch_end(0, {"loss": 1.0})
    (tmp_path / "best.json").write_text("{not json")
    with pytest.raises(RunError, match="best.json is not valid JSON"):
        KeepBest(str(tmp_path)).on_train_begin()
    with pytest.raises(ValueError, match="patience"):
        KeepBest(str(tmp_path), patience=0)


def test_exponential_lr_is_a_function_of_the_epoch():
    sched = exponential_lr(0.01, 0.9)
    assert [sched.schedule(e) for e in (0, 1, 5)] == pytest.approx([0.01, 0.009, 0.01 * 0.9 ** 5])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        exponential_lr(0.01, 1.5)


def test_kvae_train_early_stopping_stops_after_n_epochs_without_improvement_and_keeps_the_best(tmp_path):
    import os

    from kvae.cli import main as cli
    from kvae.training.runs import load_run

    run, patience, epochs = str(tmp_path / "run"), 3, 60
    # 200 training digits and a large learning rate: the validation -ELBO turns up within a few dozen epochs
    assert cli.main(["train", "--model", "vae", "--dataset", "digits", "--limit", "200", "--hidden", "256",
                     "--latent-dim", "16", "--lr", "0.01", "--epochs", str(epochs), "--early-stopping",
                     str(patience), "--quiet", "--out", run]) == 0
    history = json.load(open(os.path.join(run, "history.json")))
    val = history["val_neg_elbo"]
    ran = len(history["loss"])
    best = 1 + int(np.argmin(val))  # 1-based; the first of equal minima (an improvement must be strict)
    assert ran < epochs, "the run did not stop early"
    assert ran == best + patience and history["stopped_epoch"] == ran
    assert history["best_epoch"] == best and history["best_val_loss"] == pytest.approx(min(val), rel=1e-6)
    assert history["steps"] == 2 * ran  # 200 examples, batch 100: no epoch after the stop
    # the run's model is the best epoch's weights, not the last epoch's
    model, _ = load_run(run)
    kept, _ = load_run(run)
    kept.load_weights(os.path.join(run, "best", "best.weights.h5"))
    for a, b in zip(model.get_weights(), kept.get_weights()):
        np.testing.assert_array_equal(a, b)
