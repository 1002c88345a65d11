"""Independent numpy/scipy transcriptions of ELBO pieces shared by several test files."""
import numpy as np
from scipy import stats


def numpy_one_sample_elbo(model, x, seed):
    """log p(x|z_0) + log p(z_0) - log q(z_0|x) in numpy/scipy for a Bernoulli decoder, a Gaussian posterior
    and N(0, I) prior, at the z_0 the model's noise of ``seed`` draws."""
    n = len(x)
    loc, scale = (t.numpy() for t in model.encode_params(x))
    z0 = loc + scale * model.standard_noise(n, seed).numpy()
    logits = model.decode_params(z0)[0].numpy().reshape(n, -1)
    log_px = (x.reshape(n, -1) * logits - np.logaddexp(0, logits)).sum(1)
    return log_px + stats.norm.logpdf(z0).sum(1) - stats.norm.logpdf(z0, loc, scale).sum(1)
