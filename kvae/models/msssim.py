"""MS-SSIM VAE (Snell et al. 2017, "Learning to generate images with perceptual similarity
metrics"; pythae's MSSSIM_VAE):

    loss = (1 - MS-SSIM(x, E[x|z])) + beta KL(q(z|x) || p(z)),   z ~ q(z|x),

the pixel-wise reconstruction term replaced by the multi-scale structural similarity of the
decoder's mean image (:mod:`kvae.nn.ssim`; TensorFlow's ``tf.image.ssim_multiscale``), per example.
The decoder term is a score, not a density: the model has no NLL or ELBO (``has_likelihood`` is
False), ``kvae evaluate`` reports the score and the KL.  pythae averages one MS-SSIM over the
whole batch and multiplies the coarsest luminance term into every scale; kvae follows Wang et
al.'s per-image formula.
"""
import keras

from kvae.parts.likelihoods import MSSSIMLikelihood
from kvae.core.model import VariationalModel


@keras.saving.register_keras_serializable(package="kvae")
class MSSSIMVAE(VariationalModel):
    """VAE whose reconstruction term is 1 - MS-SSIM (Snell et al. 2017).

    Args:
      beta: weight of the KL (pythae's default 1; the score lies in [0, 1] per image, so smaller
        values keep more information in z).
      power_factors: weight of each MS-SSIM scale; None picks the most scales that fit the image
        (:func:`kvae.nn.ssim.default_scales`: 4 on 28x28, 2 on 8x8).
      filter_size: Gaussian window in pixels (None: the largest that fits the coarsest scale).
      filter_sigma: the window's standard deviation.
      positive: ``"shift"`` maps each scale's term v to (v + 1) / 2 before its power (pythae's
        training form, finite gradients); ``"relu"`` clips at 0 as ``tf.image.ssim_multiscale``.
    """

    fixed_options = ("decoder",)

    def __init__(self, input_shape, beta=1.0, power_factors=None, filter_size=None, filter_sigma=1.5, positive="shift",
                 decoder=None, **kwargs):
        if decoder is None or isinstance(decoder, str):
            decoder = MSSSIMLikelihood(tuple(input_shape), power_factors=power_factors, filter_size=filter_size,
                                       filter_sigma=filter_sigma, positive=positive, name="likelihood")
        super().__init__(input_shape, beta=beta, decoder=decoder, **kwargs)
        self._init_args.update(dict(power_factors=list(decoder.power_factors), filter_size=decoder.filter_size,
                                    filter_sigma=decoder.filter_sigma, positive=decoder.positive))
