"""β-VAE with a controlled capacity (Burgess et al. 2018, "Understanding disentangling in β-VAE"):

    loss = -log p(x|z) + gamma |E_batch KL(q(z|x) || p(z)) - C(t)|,   C(t) = C_max min(1, t / T),

the KL target C rising linearly from 0 to ``capacity`` nats over ``capacity_steps`` optimizer steps,
so that the code's information grows gradually.  (The batch-mean KL is compared with C, as in the
authors' description; under tf.distribute, each replica's share of the batch.)"""
import keras
import tensorflow as tf

from kvae.parts.schedules import LinearWarmup, beta_value
from kvae.core.model import VariationalModel


@keras.saving.register_keras_serializable(package="kvae")
class AnnealedCapacityBetaVAE(VariationalModel):
    """β-VAE with capacity annealing (Burgess et al. 2018; pythae's DisentangledBetaVAE).

    Args:
      latent_dim: dimension of z (10 in the paper's dSprites experiments).
      gamma: weight of |KL - C| (1000 in the paper).
      capacity: the final KL target C_max in nats (25 in the paper).
      capacity_steps: optimizer steps over which C rises from 0 to C_max (100000 in the paper).
    """

    fixed_options = ("beta", "kl_warmup_steps", "free_bits_per_dim", "free_bits_total", "objective")

    def __init__(self, input_shape, latent_dim=10, gamma=1000.0, capacity=25.0, capacity_steps=100000, **kwargs):
        super().__init__(input_shape, latent_dim=latent_dim, beta=float(gamma), **kwargs)
        self.gamma, self.capacity, self.capacity_steps = float(gamma), float(capacity), int(capacity_steps)
        self._init_args.update(dict(gamma=self.gamma, capacity=self.capacity, capacity_steps=self.capacity_steps))
        self._init_args.pop("beta")
        self.capacity_schedule = LinearWarmup(target=self.capacity, warmup_steps=max(1, self.capacity_steps))

    def current_capacity(self):
        """C(t) at the optimizer's step."""
        optimizer = getattr(self, "optimizer", None)
        return beta_value(self.capacity_schedule, 0 if optimizer is None else optimizer.iterations)

    def bound_loss(self, terms, beta):
        """-log p(x|z) + gamma |E_batch KL - C(t)| per example."""
        gap = tf.abs(tf.reduce_mean(terms["kl"]) - tf.cast(self.current_capacity(), tf.float32))
        return -terms["log_px_z"] + self.gamma * gap * tf.ones_like(terms["kl"])
