r"""Regularisers: terms added to any model's training loss.

Contract: a :class:`Regularizer` is a Keras layer (so its weights train and save with the
model); ``reg.penalty(terms)`` receives the dict of
:meth:`kvae.models.VariationalModel.compute_terms` (``x``, ``q``, ``z``, ``px``, ``kl``, ...) and
returns the penalty per example (shape [B]) or a scalar, in nats, already multiplied by its
weight.  Its mean is logged as a metric under the layer's name.  Two hooks let regularisers
with state of their own join in: ``build_for(model)`` creates weights once the model's parts
exist, and ``after_step(model, terms)`` runs after the model's optimizer step inside the same
``train_step`` (for example to step a discriminator with its own optimizer).
"""
import keras
import tensorflow as tf


class Regularizer(keras.layers.Layer):
    """Base class; subclasses implement ``penalty(terms)``."""

    def __init__(self, weight=1.0, **kwargs):
        super().__init__(**kwargs)
        self.weight = float(weight)

    def build_for(self, model):
        """Create weights that depend on the model (latent size, data shape). Default: none."""
        self.built = True

    def after_step(self, model, terms):
        """Called in ``train_step`` after the model's update. Default: nothing to do."""
        return None

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


@keras.saving.register_keras_serializable(package="kvae")
class LatentL2(Regularizer):
    r"""weight * 1/2 ||z||^2 on the sampled code (the RAE's latent penalty, Ghosh et al. 2020)."""

    def __init__(self, weight=1.0, name="latent_l2", **kwargs):
        super().__init__(weight=weight, name=name, **kwargs)

    def penalty(self, terms):
        z = tf.cast(terms["z"], tf.float32)
        return self.weight * 0.5 * tf.reduce_sum(tf.square(z), axis=-1)
