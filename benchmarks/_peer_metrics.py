"""Figures computed identically for kvae and pythae in ``peer_pythae.py`` (numpy only: imported by
the kvae side and by ``_pythae_worker.py`` inside the peer environment)."""
import numpy as np


def bernoulli_error(x, mean, eps=1e-6):
    """Mean over images of -log p(x | E[x|z]), the Bernoulli log-likelihood of binary images x [N, D]
    under their reconstruction probabilities ``mean`` [N, D] (clipped to [eps, 1 - eps]), summed over
    pixels, in nats."""
    mean = np.clip(np.asarray(mean, np.float64), eps, 1 - eps)
    x = np.asarray(x, np.float64)
    return float(-(x * np.log(mean) + (1 - x) * np.log1p(-mean)).sum(axis=1).mean())
