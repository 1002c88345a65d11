"""The importance-weighted family: IWAE (Burda et al. 2016) and MIWAE, CIWAE, PIWAE (Rainforth et
al. 2018), each the base model with an objective from :mod:`kvae.parts.objectives` (any other model takes
the same objectives through ``objective=``)."""
import keras

from kvae.parts import objectives
from kvae.core.model import VariationalModel


class _Bound(VariationalModel):
    """A model whose objective is set by its own options (the config stores those, not the layer)."""

    fixed_options = ("objective",)

    def get_config(self):
        config = super().get_config()
        config.pop("objective")
        return config


@keras.saving.register_keras_serializable(package="kvae")
class IWAE(_Bound):
    """IWAE: loss = -log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x) (Burda et al. 2016).

    Args:
      num_samples: importance samples K per example in training (5 or 50 in the paper).
    """

    def __init__(self, input_shape, num_samples=5, objective=None, **kwargs):
        super().__init__(input_shape, objective=objective or objectives.IWAEBound(num_samples), **kwargs)
        self._init_args["num_samples"] = int(num_samples)


@keras.saving.register_keras_serializable(package="kvae")
class MIWAE(_Bound):
    """MIWAE: the mean of M independent IWAE_K bounds (Rainforth et al. 2018).

    Args:
      num_samples: importance samples K per bound.
      num_groups: number of bounds M averaged (M K samples per example).
    """

    def __init__(self, input_shape, num_samples=8, num_groups=8, objective=None, **kwargs):
        super().__init__(input_shape, objective=objective or objectives.MIWAEBound(num_samples, num_groups), **kwargs)
        self._init_args["num_samples"], self._init_args["num_groups"] = int(num_samples), int(num_groups)


@keras.saving.register_keras_serializable(package="kvae")
class CIWAE(_Bound):
    """CIWAE: beta ELBO + (1 - beta) IWAE_K on the same K samples (Rainforth et al. 2018).

    Args:
      num_samples: importance samples K.
      elbo_weight: the ELBO's weight beta in [0, 1].
    """

    def __init__(self, input_shape, num_samples=5, elbo_weight=0.5, objective=None, **kwargs):
        super().__init__(input_shape, objective=objective or objectives.CIWAEBound(num_samples, elbo_weight), **kwargs)
        self._init_args["num_samples"], self._init_args["elbo_weight"] = int(num_samples), float(elbo_weight)


@keras.saving.register_keras_serializable(package="kvae")
class PIWAE(_Bound):
    """PIWAE: decoder and prior trained on IWAE_{MK}, encoder and posterior on MIWAE_{M,K}, from the
    same M K samples (Rainforth et al. 2018).

    Args:
      num_samples: importance samples K per MIWAE bound.
      num_groups: number of bounds M (the IWAE bound uses all M K samples).
    """

    def __init__(self, input_shape, num_samples=8, num_groups=8, objective=None, **kwargs):
        super().__init__(input_shape, objective=objective or objectives.PIWAEBound(num_samples, num_groups), **kwargs)
        self._init_args["num_samples"], self._init_args["num_groups"] = int(num_samples), int(num_groups)
