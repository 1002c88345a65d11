"""Keras 3 layers kvae's parts are made of: MADE and the PixelCNN's masked convolutions."""
from kvae.nn.made import MADE, input_order, made_masks

__all__ = ["MADE", "input_order", "made_masks"]
from kvae.nn.pixelcnn import MaskedConv2D, PixelCNNNetwork, ancestral_sample, causal_mask  # noqa: E402

__all__ += ["MaskedConv2D", "PixelCNNNetwork", "ancestral_sample", "causal_mask"]


def __getattr__(name):  # submodules as attributes (kvae.nn.<module>), imported on first use
    from kvae._lazy import submodule

    return submodule(__name__, name)
