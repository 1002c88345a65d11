"""Codes of a factor data set's grid positions (:mod:`kvae.data.factors`), each rendered and encoded
once: what the disentanglement metrics (:mod:`kvae.evaluation.disentanglement`) share.

At disentanglement_lib's sizes the metrics draw 2,905,000 images (β-VAE metric: 15,000 points of
2 x 64; FactorVAE metric: 10,000 for the variances and 15,000 batches of 64; 15,000 i.i.d.), while
dSprites has 737,280 positions: about 723,000 of them are drawn (737,280 (1 - e^(-2,905,000 /
737,280))), so each is rendered and encoded once instead of four times on average.
"""
import time

import numpy as np


class CachedCodes:
    """``factors [n, F] -> codes [n, D]`` of a factor data set, each grid position rendered and
    encoded once (on first request).

    The codes are those ``represent`` gives the position's image, so the cache changes no result when
    ``represent`` is a function of each image alone (kvae's posterior means; a stochastic code would
    be drawn once per position instead of once per draw).  Memory: one code per grid position in
    the dtype ``represent`` returns (dSprites, 32 float32 dimensions: 94 MB); the codes are returned
    as float64 (exactly those values).

    Args:
      data: a factor data set (``index``, ``factors_of``, ``images``, ``len``).
      represent: images -> codes ``[n, D]``.
      batch_size: positions rendered and encoded together.

    Attributes:
      requested: images asked for so far (with repeats); ``encoded``: rendered and encoded.
      seconds: ``{"render", "encode"}`` wall-clock seconds spent in each.
    """

    def __init__(self, data, represent, batch_size=2048):
        self.data, self.represent, self.batch_size = data, represent, int(batch_size)
        self.known = np.zeros(len(data), bool)
        self.codes = None  # [len(data), D], allocated at the first encoding
        self.requested = self.encoded = 0
        self.seconds = {"render": 0.0, "encode": 0.0}

    def __call__(self, factors):
        position = self.data.index(factors)
        self.requested += len(position)
        missing = np.unique(position[~self.known[position]])
        for start in range(0, len(missing), self.batch_size):
            part = missing[start:start + self.batch_size]
            t0 = time.perf_counter()
            images = self.data.images(self.data.factors_of(part))
            t1 = time.perf_counter()
            z = np.asarray(self.represent(images))
            self.seconds["render"] += t1 - t0
            self.seconds["encode"] += time.perf_counter() - t1
            if self.codes is None:
                self.codes = np.zeros((len(self.data), z.shape[1]), np.result_type(z.dtype, np.float32))
            self.codes[part], self.known[part] = z, True
            self.encoded += len(part)
        return self.codes[position].astype(np.float64)
