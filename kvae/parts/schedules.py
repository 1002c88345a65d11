"""Schedules for the KL weight beta (KL warm-up / annealing), evaluated at the optimizer step.

A schedule is a serialisable callable ``schedule(step) -> float32 scalar``, like Keras'
learning-rate schedules; pass it as ``beta=`` to any model.  The current value is logged as
the ``beta`` metric.
"""
import keras
import tensorflow as tf

from kvae.errors import ConfigError


class BetaSchedule:
    """Base class: subclasses implement ``__call__(step)`` and ``get_config()``."""

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="kvae")
class LinearWarmup(BetaSchedule):
    """beta(t) = start + (target - start) * min(1, t / warmup_steps)  (Bowman et al. 2016; Sønderby et al. 2016)."""

    def __init__(self, target=1.0, warmup_steps=10000, start=0.0):
        if warmup_steps <= 0:
            raise ConfigError(f"warmup_steps must be positive, got {warmup_steps}")
        self.target, self.warmup_steps, self.start = float(target), int(warmup_steps), float(start)

    def __call__(self, step):
        frac = tf.minimum(tf.cast(step, tf.float32) / float(self.warmup_steps), 1.0)
        return self.start + (self.target - self.start) * frac

    def get_config(self):
        return {"target": self.target, "warmup_steps": self.warmup_steps, "start": self.start}


@keras.saving.register_keras_serializable(package="kvae")
class CyclicalAnnealing(BetaSchedule):
    """Cyclical annealing (Fu et al. 2019): in each cycle of ``cycle_steps``, beta rises linearly
    from 0 to ``target`` over the first ``ratio`` of the cycle, then stays at ``target``."""

    def __init__(self, target=1.0, cycle_steps=10000, ratio=0.5):
        if cycle_steps <= 0 or not 0 < ratio <= 1:
            raise ConfigError("cycle_steps must be positive and ratio in (0, 1]")
        self.target, self.cycle_steps, self.ratio = float(target), int(cycle_steps), float(ratio)

    def __call__(self, step):
        pos = tf.math.floormod(tf.cast(step, tf.float32), float(self.cycle_steps)) / float(self.cycle_steps)
        return self.target * tf.minimum(pos / self.ratio, 1.0)

    def get_config(self):
        return {"target": self.target, "cycle_steps": self.cycle_steps, "ratio": self.ratio}


def beta_value(beta, step):
    """beta as a float32 scalar tensor at ``step``: a number or a schedule."""
    if callable(beta):
        return tf.cast(beta(step), tf.float32)
    return tf.constant(float(beta), tf.float32)
