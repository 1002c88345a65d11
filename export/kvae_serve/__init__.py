"""kvae_serve: run kvae bundles with onnxruntime and numpy only (no TensorFlow).

    from kvae_serve import Bundle
    bundle = Bundle("path/to/bundle")
    images = bundle.sample(16, seed=0)          # [16, H, W, C]
    params = bundle.decode(z)                   # {"probs": ...} or {"loc": ..., "scale": ...}
    q = bundle.encode(x)                        # {"loc": ..., "scale": ...}
    x_hat = bundle.reconstruct(x, seed=0)
"""
#: the one version of kvae-serve: setup.cfg and the HTTP server header read it
__version__ = "0.3.0"

from .bundle import Bundle, BundleError  # noqa: E402

__all__ = ["Bundle", "BundleError"]
