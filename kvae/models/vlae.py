"""Variational Lossy Autoencoder (Chen et al., ICLR 2017).

An autoregressive-flow prior (MAF over N(0, I)) plus a PixelCNN decoder whose receptive field is
deliberately *local* (6 masked 3x3 layers by default), so that global structure must go through
z while the decoder models local texture; free bits (0.01 nats per dimension) keep the latent in
use early in training.  Optionally an IAF posterior (``posterior="iaf"``) and weight averaging
(``keras.optimizers.Adamax(..., use_ema=True, ema_momentum=0.998)``, Polyak averaging as in the
paper).  Paper settings: latent 64, AF prior of 4 steps of 3-layer MADEs with 640 units,
PixelCNN with 12 filters conditioned on a 4-channel map from z concatenated to the image, a
ResNet encoder, Adamax 2e-3.
"""
import keras

from kvae.parts.likelihoods import PixelCNNLikelihood
from kvae.parts.priors import FlowPrior
from kvae.core.model import VariationalModel


@keras.saving.register_keras_serializable(package="kvae")
class VLAE(VariationalModel):
    """AF prior + local PixelCNN decoder + free bits; every part can still be replaced.  ``kvae train
    --model vlae`` (and ``kvae.training.runs.train``) trains it as the paper does unless told otherwise:
    Adamax 2e-3 with Polyak averaging 0.998 (``training_defaults``).

    Args:
      latent_dim: dimension of z (64 in the paper).
      network: encoder/decoder builder; ``"resnet"`` (:func:`kvae.parts.networks.resnet_encoder`; the
        paper's encoder is a ResNet whose widths it does not give, docs/vlae.md) or any other.
      prior: p(z); None builds the MAF prior from ``flow_steps`` and ``flow_hidden``.
      decoder: p(x|z); None builds the PixelCNN from the ``pixelcnn_*`` sizes.
      free_bits_per_dim: KL floor in nats per latent dimension (0.01 in the paper).
      flow_steps: steps of the autoregressive-flow prior.
      flow_hidden: hidden sizes of each MADE in the flow.
      pixelcnn_layers: masked convolution layers of the decoder (its receptive field grows with them).
      pixelcnn_kernel: kernel size of the masked convolutions.
      pixelcnn_filters: filters per PixelCNN layer.
      cond_channels: channels of the map from z that conditions the PixelCNN.
      conditioning: ``"input"`` (the map concatenated to the image at the PixelCNN's input, as the
        paper describes) or ``"every_layer"`` (every masked layer sees it through a 1x1 convolution).
    """

    training_defaults = {"optimizer": "adamax", "lr": 2e-3, "ema": 0.998}

    def __init__(self, input_shape, latent_dim=64, network="resnet", prior=None, decoder=None, free_bits_per_dim=0.01,
                 flow_steps=4, flow_hidden=(640, 640, 640), pixelcnn_layers=6, pixelcnn_kernel=3, pixelcnn_filters=12,
                 cond_channels=4, conditioning="input", **kwargs):
        if prior is None:
            prior = FlowPrior(latent_dim, num_steps=flow_steps, hidden_units=flow_hidden, name="prior")
        if decoder is None:
            decoder = PixelCNNLikelihood(input_shape, num_layers=pixelcnn_layers, kernel_size=pixelcnn_kernel,
                                         filters=pixelcnn_filters, cond_channels=cond_channels,
                                         conditioning=conditioning, name="likelihood")
        super().__init__(input_shape, latent_dim=latent_dim, network=network, prior=prior, decoder=decoder,
                         free_bits_per_dim=free_bits_per_dim, **kwargs)
        self._init_args.update(dict(
            flow_steps=int(flow_steps), flow_hidden=[int(h) for h in flow_hidden],
            pixelcnn_layers=int(pixelcnn_layers), pixelcnn_kernel=int(pixelcnn_kernel),
            pixelcnn_filters=int(pixelcnn_filters), cond_channels=int(cond_channels),
            conditioning=getattr(getattr(self.likelihood, "network", None), "conditioning", conditioning)))
