"""Hamiltonian VAE (Caterini et al. 2018; pythae's HVAE): the base model with the HVAE bound of
:mod:`kvae.models.hvae.hamiltonian` as its objective (any other model takes ``objective="hvae"`` or a
:class:`kvae.models.hvae.hamiltonian.HamiltonianBound` layer)."""
import keras

from kvae.models.hvae.hamiltonian import HamiltonianBound
from kvae.models.iwae import _Bound


@keras.saving.register_keras_serializable(package="kvae")
class HVAE(_Bound):
    """HVAE: loss = -(log p(x, z_K) + log N(rho_K) - log q(z_0|x) - log N(gamma)), z_K and rho_K from
    K tempered leapfrog steps of U(z) = -log p(x, z) started at z_0 ~ q(z|x), rho_0 = gamma / sqrt(beta_0).

    Args:
      num_leapfrog: leapfrog steps K (3, as pythae).
      step_size: leapfrog step size (0.001, as pythae).
      beta_zero: initial inverse temperature beta_0 in (0, 1] (0.3, as pythae).
      learn_step_size: train the step size with the model.
      learn_beta_zero: train beta_0 with the model.
    """

    def __init__(self, input_shape, num_leapfrog=3, step_size=0.001, beta_zero=0.3, learn_step_size=False,
                 learn_beta_zero=False, objective=None, **kwargs):
        objective = objective or HamiltonianBound(num_leapfrog, step_size, beta_zero, learn_step_size,
                                                  learn_beta_zero)
        super().__init__(input_shape, objective=objective, **kwargs)
        self._init_args.update(dict(num_leapfrog=int(num_leapfrog), step_size=float(step_size),
                                    beta_zero=float(beta_zero), learn_step_size=bool(learn_step_size),
                                    learn_beta_zero=bool(learn_beta_zero)))
