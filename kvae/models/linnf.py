"""VAE with planar/radial normalising flows in the posterior (Rezende & Mohamed 2015; pythae's
VAE_LinNF): :class:`kvae.parts.posteriors.PlanarRadialPosterior` (any model takes it as ``posterior=``)."""
import keras

from kvae.core.model import VariationalModel
from kvae.parts.posteriors import PlanarRadialPosterior


@keras.saving.register_keras_serializable(package="kvae")
class LinNFVAE(VariationalModel):
    """VAE whose posterior is a Gaussian followed by planar and radial flows.

    Args:
      flows: the flows applied to z_0, comma-separated ``planar``/``radial``/``iaf`` (e.g. ``planar,planar,radial``;
        ``iaf`` entries are gated IAF steps amortised by the encoder, mixable with the others).
    """

    fixed_options = ("posterior",)

    def __init__(self, input_shape, flows="planar,planar,planar,planar", posterior=None, **kwargs):
        latent_dim = kwargs.get("latent_dim", 32)
        posterior = posterior if posterior is not None else PlanarRadialPosterior(latent_dim, flows, name="posterior")
        super().__init__(input_shape, posterior=posterior, **kwargs)
        self._init_args["flows"] = flows if isinstance(flows, str) else ",".join(flows)
