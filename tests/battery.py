"""The shared battery every kvae model runs (like keras-hub's model tests).

A model's test is a subclass of :class:`ModelBattery` that sets ``make_model`` (and, for
conditional models, ``labelled = True``).  Every model gets: build, the distributions' shapes,
two ``fit`` steps with finite metrics that changes the weights, the gradient reaching the
encoder through the reparameterised sample, a ``.keras`` save/load round trip with identical
outputs, ``log_likelihood`` shapes, and export parity (Keras = SavedModel = ONNX).
"""
import json
import os

import keras
import numpy as np
import tensorflow as tf


class ModelBattery:
    labelled = False
    input_shape = (8, 8, 1)
    batch = 16

    def make_model(self):
        raise AssertionError("subclasses set make_model")

    # -- helpers
    def _data(self, seed=0):
        rng = np.random.RandomState(seed)
        x = (rng.uniform(size=(self.batch,) + self.input_shape) > 0.5).astype("float32")
        y = rng.randint(0, 10, size=self.batch).astype("int32")
        return x, (y if self.labelled else None)

    def _compiled(self):
        model = self.make_model()
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        return model

    # -- the battery
    def test_builds_with_weights(self):
        model = self.make_model()
        assert model.built
        assert len(model.trainable_weights) > 0
        x, y = self._data()
        q = model.encode(x, y)
        assert tuple(q.batch_shape) == (self.batch,)
        assert tuple(q.event_shape) == (model.latent_dim,)
        px = model.decode(q.sample(seed=[1, 2]), y)
        assert tuple(px.event_shape) == tuple(model.data_shape)
        assert px.log_prob(x).shape == (self.batch,)

    def test_fit_two_steps_change_weights_and_stay_finite(self):
        # two steps: flow layers start at the identity (zero last layer), so their inner weights
        # only receive gradient from the second step on
        model = self._compiled()
        x, y = self._data()
        before = [w.numpy().copy() for w in model.trainable_weights]
        history = model.fit(x, y, batch_size=self.batch // 2, epochs=1, verbose=0)
        for name, values in history.history.items():
            assert np.all(np.isfinite(values)), name
        changed = [not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
        assert sum(changed) >= 0.8 * len(changed)

    def test_gradient_reaches_encoder(self):
        model = self.make_model()
        x, y = self._data()
        with tf.GradientTape() as tape:
            terms = model.compute_terms(x, y, training=True, seed=tf.constant([3, 4]))
            loss = tf.reduce_mean(model.per_example_loss(terms, 1.0)[0])
        grads = tape.gradient(loss, model.encoder_network.trainable_weights)
        assert all(g is not None for g in grads)
        assert max(float(tf.reduce_max(tf.abs(g))) for g in grads) > 0

    def test_save_load_round_trip(self, tmp_path):
        model = self._compiled()
        x, y = self._data()
        model.fit(x, y, batch_size=self.batch, epochs=1, verbose=0)
        path = os.path.join(tmp_path, "m.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        assert type(loaded) is type(model)
        for a, b in zip(loaded.encode_params(x, y), model.encode_params(x, y)):
            np.testing.assert_allclose(a, b, atol=1e-6)
        z = np.random.RandomState(1).normal(size=(self.batch, model.latent_dim)).astype("float32")
        for a, b in zip(loaded.decode_params(z, y), model.decode_params(z, y)):
            np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_allclose(loaded.decode(z, y).log_prob(x), model.decode(z, y).log_prob(x), atol=1e-4)
        np.testing.assert_allclose(loaded.prior_distribution().log_prob(z), model.prior_distribution().log_prob(z),
                                   atol=1e-5)
        labels = None if y is None else y[:4]
        np.testing.assert_allclose(loaded.sample(4, labels=labels, seed=5), model.sample(4, labels=labels, seed=5),
                                   atol=1e-6)
        as_json = lambda m: json.loads(json.dumps(m.get_config()))  # noqa: E731 (tuples vs lists)
        assert as_json(loaded) == as_json(model)

    def test_log_likelihood_shape_and_bound(self):
        model = self.make_model()
        x, y = self._data()
        if not model.has_density:
            import pytest

            from kvae.errors import ConfigError

            with pytest.raises(ConfigError, match="deterministic encoder"):
                model.log_likelihood(x, y, k=8)
            return
        ll = model.log_likelihood(x, y, k=8, batch_size=5)
        assert ll.shape == (self.batch,)
        assert np.all(np.isfinite(ll)) and np.all(ll.numpy() < 0)

    def test_export_parity(self, tmp_path):
        """Every endpoint agrees in Keras, the reloaded SavedModel and onnxruntime (<= 1e-5), and every
        ONNX file passes onnx.checker."""
        import onnx

        from kvae import export

        model = self._compiled()
        x, y = self._data()
        model.fit(x, y, batch_size=self.batch, epochs=1, verbose=0)  # trained weights, not the initial ones
        manifest = export.export(model, str(tmp_path / "bundle"))
        expected = {"encode", "decode", "reconstruct", "sample"} | ({"log_prob"} if model.has_density else set())
        assert set(manifest["parity"]) == expected
        for name, diffs in manifest["parity"].items():
            assert diffs["savedmodel_max_abs_diff"] <= 1e-5, (name, diffs)
            assert diffs["onnx_max_abs_diff"] <= 1e-5, (name, diffs)
            onnx.checker.check_model(onnx.load(str(tmp_path / "bundle" / manifest["endpoints"][name]["onnx"])))
