"""The shared battery every kvae model runs (like keras-hub's model tests).

A model's test is a subclass of :class:`ModelBattery` that sets ``make_model`` (and, for
conditional models, ``labelled = True``).  Every model gets: build, the distributions' shapes,
two ``fit`` steps with finite metrics that changes the weights, the same weights at several
steps per call of the compiled step as at one, the gradient reaching the
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
        frozen = [w.path for b, w in zip(before, model.trainable_weights) if np.array_equal(b, w.numpy())]
        assert not frozen, f"trainable weights that received no update: {frozen}"

    def test_several_steps_per_call_train_the_same_weights(self):
        """``kvae train`` runs several steps per call of the compiled step (Keras' multi-step loop):
        three steps as calls of 2 and 1 end with the same weights (discriminators, codebooks and every
        other variable included) as three calls of one step."""
        x, y = self._data()
        weights = []
        for steps in (1, 2):
            keras.utils.set_random_seed(0)
            model = self.make_model()
            model.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=steps)
            model.fit(x, y, batch_size=6, epochs=1, verbose=0)  # 16 examples: batches of 6, 6 and 4
            assert int(model.optimizer.iterations.numpy()) == 3
            weights.append([(w.path, w.numpy()) for w in model.weights])  # paths differ by the layers' name suffix
        assert len(weights[0]) == len(weights[1])
        for (path, value), (_, other) in zip(*weights):
            np.testing.assert_allclose(other, value, atol=1e-5, rtol=1e-5, err_msg=path)

    def test_labels_reach_the_model(self):
        """Conditional models: changing only the label changes q(z|x, y) and p(x|z, y); the others
        ignore a label given to them."""
        model = self.make_model()
        x, y = self._data()
        z = np.random.RandomState(2).normal(size=(self.batch, model.latent_dim)).astype("float32")
        if not self.labelled:
            assert not model.conditional
            labels = np.arange(self.batch) % 10
            for a, b in zip(model.encode_params(x, labels), model.encode_params(x)):
                np.testing.assert_array_equal(a, b)
            for a, b in zip(model.decode_params(z, labels), model.decode_params(z)):
                np.testing.assert_array_equal(a, b)
            return
        other = (y + 1) % 10
        assert np.abs(model.encode_params(x, y)[0] - model.encode_params(x, other)[0]).max() > 1e-4
        assert np.abs(model.decode_params(z, y)[0] - model.decode_params(z, other)[0]).max() > 1e-4

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
        if not model.has_likelihood:
            import pytest

            from kvae.errors import ConfigError

            with pytest.raises(ConfigError, match="not a normalised density"):
                model.log_likelihood(x, y, k=8)
            return
        ll = model.log_likelihood(x, y, k=8, batch_size=5)
        assert ll.shape == (self.batch,)
        assert np.all(np.isfinite(ll)) and np.all(ll.numpy() < 0)

    def _reference(self, model, name, inputs):
        """Each endpoint's outputs computed from the model's own methods (not from the export code)."""
        x, y, eps, u = inputs.get("x"), inputs.get("labels"), inputs.get("eps"), inputs.get("uniform")
        if name == "encode":
            return [np.asarray(t) for t in model.encode_params(x, y)]
        if name == "decode":
            named = model.likelihood.named_params(model.decode_params(inputs["z"], y))
            return [np.asarray(v) for v in named.values()]
        if name == "images":  # E[x|z]; a PixelCNN decoder's sampler with the given pixel noise
            if u is None:
                return [np.asarray(model.decode(inputs["z"], y).mean())]
            return [np.asarray(model.likelihood.images(model.decode_params(inputs["z"], y), u))]
        if name == "reconstruct":
            return [np.asarray(model.reconstruct_from_noise(x, eps, y, u))]
        if name == "sample":
            return [np.asarray(model.sample_from_noise(eps, y, u, inputs.get("component_uniform")))]
        if name == "log_prob":
            return [np.asarray(model.log_prob_from_noise(x, eps, y))]
        raise AssertionError(name)

    def test_export_parity(self, tmp_path):
        """Every endpoint of the reloaded SavedModel and of onnxruntime agrees with the model's own methods
        (<= 1e-5), inputs fed by name, the number of outputs checked; every ONNX file passes onnx.checker."""
        import onnx
        import onnxruntime as ort

        from kvae.export import bundle as export

        model = self._compiled()
        x, y = self._data()
        model.fit(x, y, batch_size=self.batch, epochs=1, verbose=0)  # trained weights, not the initial ones
        manifest = export.export(model, str(tmp_path / "bundle"), check=False)
        expected = {"encode", "decode", "images", "reconstruct", "sample"} | ({"log_prob"} if model.has_density and model.has_likelihood else set())
        assert set(manifest["endpoints"]) == expected
        loaded = tf.saved_model.load(str(tmp_path / "bundle" / "savedmodel" / "1"))
        for name, spec in manifest["endpoints"].items():
            path = str(tmp_path / "bundle" / spec["onnx"])
            onnx.checker.check_model(onnx.load(path))
            signature = export.endpoints(model)[name][1]
            arrays = export.example_inputs(model, signature, n=3, k=4, seed=1)
            inputs = {s.name: a for s, a in zip(signature, arrays)}
            want = self._reference(model, name, inputs)
            outs = [o["name"] for o in spec["outputs"]]
            assert len(outs) == len(want), (name, outs)
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            assert sorted(i.name for i in session.get_inputs()) == sorted(inputs), name
            got_onnx = session.run([o["onnx_name"] for o in spec["outputs"]], inputs)
            got_sm = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
            assert sorted(got_sm) == sorted(outs), (name, sorted(got_sm))
            for out, ref, onnx_value in zip(outs, want, got_onnx):
                np.testing.assert_allclose(got_sm[out].numpy(), ref, atol=1e-5, err_msg=f"{name}/{out} SavedModel")
                # + 1e-6 relative: onnxruntime sums ~50-nat log-probs in its own order (float32 spacing 3.8e-6 at 50)
                np.testing.assert_allclose(onnx_value, ref, rtol=1e-6, atol=1e-5, err_msg=f"{name}/{out} ONNX")
