r"""Sample-based divergences between distributions of latent codes.

* :func:`mmd`: maximum mean discrepancy (Gretton et al. 2012) with the unbiased U-statistic
  MMD^2 = mean_{i!=j} k(x_i, x_j) + mean_{i!=j} k(y_i, y_j) - 2 mean_{i,j} k(x_i, y_j),
  summed over a set of kernel bandwidths; InfoVAE's D(q(z) || p(z)) (Zhao et al.).
* kernels: RBF k(a, b) = exp(-||a - b||^2 / (2 s^2 D)), inverse multiquadratic
  k(a, b) = C / (C + ||a - b||^2) with C = 2 D s^2 (the scale WAE uses), and ``"infovae"``, the
  kernel of InfoVAE's reference code (Zhao et al., ``compute_kernel`` in mmd_vae.py):
  k(a, b) = exp(-mean_d (a_d - b_d)^2 / D) = exp(-||a - b||^2 / D^2) (times 1/s^2 in the exponent
  for a bandwidth s; s = 1 is the reference).  The reference code averages the kernel matrices
  (the biased V-statistic, ``unbiased=False``).  With k(a, a) = K0 (1 per bandwidth for these kernels),
  V = ((n - 1) / n) U_xx + ((m - 1) / m) U_yy - 2 mean_{i,j} k(x_i, y_j) + K0 (1 / n + 1 / m): the
  cross term is the same in both, so their gradients are not multiples of each other (they differ
  by O(1 / n) in the within-sample terms' weights).
"""
import tensorflow as tf

from kvae.errors import ConfigError

KERNELS = ("rbf", "imq", "infovae")


def _sq_dists(a, b):
    aa = tf.reduce_sum(a * a, -1)[:, None]
    bb = tf.reduce_sum(b * b, -1)[None, :]
    return tf.maximum(aa + bb - 2.0 * tf.matmul(a, b, transpose_b=True), 0.0)


def kernel_matrix(a, b, kernel="rbf", bandwidths=(1.0,)):
    """Sum over bandwidths of k(a_i, b_j), shape [len(a), len(b)]."""
    if kernel not in KERNELS:
        raise ConfigError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    a = tf.cast(a, tf.float32)
    b = tf.cast(b, tf.float32)
    d2 = _sq_dists(a, b)
    dim = tf.cast(tf.shape(a)[-1], tf.float32)
    total = tf.zeros_like(d2)
    for s in bandwidths:
        if kernel == "infovae":
            total += tf.exp(-d2 / (dim * dim * float(s) ** 2))
            continue
        scale = 2.0 * dim * float(s) ** 2
        total += tf.exp(-d2 / scale) if kernel == "rbf" else scale / (scale + d2)
    return total


def mmd(x, y, kernel="rbf", bandwidths=(1.0,), unbiased=True):
    """MMD^2 between samples x [n, D] and y [m, D] (unbiased U-statistic by default)."""
    kxx = kernel_matrix(x, x, kernel, bandwidths)
    kyy = kernel_matrix(y, y, kernel, bandwidths)
    kxy = kernel_matrix(x, y, kernel, bandwidths)
    n = tf.cast(tf.shape(x)[0], tf.float32)
    m = tf.cast(tf.shape(y)[0], tf.float32)
    if unbiased:
        sxx = (tf.reduce_sum(kxx) - tf.linalg.trace(kxx)) / (n * (n - 1.0))
        syy = (tf.reduce_sum(kyy) - tf.linalg.trace(kyy)) / (m * (m - 1.0))
    else:
        sxx = tf.reduce_mean(kxx)
        syy = tf.reduce_mean(kyy)
    return sxx + syy - 2.0 * tf.reduce_mean(kxy)
