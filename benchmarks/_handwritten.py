"""The hand-written baselines' shared half: a ``keras.Model`` that trains some of a kvae model's
layers on an objective written directly in TensorFlow (``per_example_loss(x, eps)``, eps ~ N(0, I)
[B, latent_dim] keyed by the optimizer step), and the check that it computes kvae's loss."""
import numpy as np


def keras_model(model, parts, per_example_loss, name):
    """A Keras model training ``parts`` (Keras layers of ``model``) on the mean of ``per_example_loss``."""
    import keras
    import tensorflow as tf

    class HandWritten(keras.Model):
        def __init__(self):
            super().__init__(name=name)
            self.parts = parts
            self.tracker = keras.metrics.Mean(name="loss")

        @property
        def metrics(self):
            return [self.tracker]

        def call(self, x):
            return model.encoder_network(x)

        def per_example_loss(self, x, eps):
            return per_example_loss(x, eps)

        def train_step(self, data):
            x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
            x = tf.cast(x, tf.float32)
            seed = tf.cast(tf.random.experimental.stateless_fold_in(tf.constant([1, 0], tf.int64),
                                                                    self.optimizer.iterations), tf.int32)
            eps = tf.random.stateless_normal([tf.shape(x)[0], model.latent_dim], seed)
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(per_example_loss(x, eps))
            variables = self.trainable_variables
            self.optimizer.apply(tape.gradient(loss, variables), variables)
            self.tracker.update_state(loss)
            return {"loss": self.tracker.result()}

    return HandWritten()


def loss_parity(model, baseline, x, seed=(3, 4)):
    """max |kvae per-example loss - baseline per-example loss| on the same weights and noise, and the
    mean |kvae loss| (its scale)."""
    import tensorflow as tf

    seed = tf.constant(seed, tf.int32)
    terms = model.compute_terms(x, training=True, seed=seed)
    ours, _ = model.per_example_loss(terms, 1.0)
    theirs = baseline.per_example_loss(tf.constant(x), model.standard_noise(len(x), seed))
    return float(np.abs(ours.numpy() - theirs.numpy()).max()), float(np.abs(ours.numpy()).mean())
