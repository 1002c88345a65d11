"""Poincaré VAE (Mathieu et al. 2019): latent codes on the Poincaré ball of curvature -c, a wrapped
normal posterior and a wrapped normal prior at the origin (:mod:`kvae.models.poincare.geometry`); the KL is the
Monte-Carlo estimate log q(z|x) - log p(z) at the reparameterised sample.  The decoder reads z's
coordinates in the ball (pythae's default; Mathieu et al.'s gyroplane first layer is not included)."""
import keras

from kvae.models.poincare.geometry import WrappedNormalPosterior, WrappedNormalPrior
from kvae.core.model import VariationalModel


@keras.saving.register_keras_serializable(package="kvae")
class PoincareVAE(VariationalModel):
    """Poincaré VAE (Mathieu et al. 2019).

    Args:
      latent_dim: dimension of the ball (2 in the paper's MNIST figures).
      curvature: c > 0, the ball's curvature is -c (its radius 1 / sqrt(c)).
      prior_scale: sigma_0 of the prior N^W(0, sigma_0^2 I) in Mathieu et al.'s convention (eq. 5, as pvae's and
        pythae's): the standard deviation of lambda_0 log_0(z), i.e. of the hyperbolic distance's components.
      legacy_scale: kvae 0.1's convention, z = mu (+) exp_0(v), twice as wide at the same scales
        (:mod:`kvae.models.poincare.geometry`); models saved by kvae 0.1 load with it.
    """

    fixed_options = ("posterior", "prior", "analytic_kl")

    def __init__(self, input_shape, latent_dim=2, curvature=1.0, prior_scale=1.0, legacy_scale=False, **kwargs):
        kwargs.setdefault("posterior", WrappedNormalPosterior(latent_dim, curvature, legacy_scale=legacy_scale,
                                                              name="posterior"))
        kwargs.setdefault("prior", WrappedNormalPrior(latent_dim, curvature, prior_scale, legacy_scale=legacy_scale,
                                                      name="prior"))
        kwargs["analytic_kl"] = False
        super().__init__(input_shape, latent_dim=latent_dim, **kwargs)
        legacy_scale = bool(getattr(self.prior, "legacy_scale", legacy_scale))  # a loaded file's parts decide
        self._init_args.update(dict(curvature=float(curvature), prior_scale=float(prior_scale),
                                    legacy_scale=legacy_scale))
