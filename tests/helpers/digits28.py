"""A bundled stand-in for binarised MNIST: scikit-learn's 8x8 digits enlarged to 28x28 and binarised.

For tests whose logic needs 28x28 binary digit images (a 784-input model, the LeNet features, the
``binarized_mnist`` file format) but not MNIST itself: they run everywhere, without the data file.
"""
import os

import numpy as np

MNIST_FILE = "binarized_mnist.npz"


def images():
    """All 1797 digits as uint8 {0, 1} arrays of shape (1797, 28, 28, 1), and their labels (1797,)."""
    from scipy import ndimage
    from sklearn.datasets import load_digits

    digits = load_digits()
    big = ndimage.zoom(digits.images / 16.0, (1, 3.5, 3.5), order=1)  # 8 x 3.5 = 28, bilinear
    return (big > 0.5).astype(np.uint8)[..., None], digits.target.astype(np.int64)


def write_npz(directory):
    """Write ``binarized_mnist.npz`` (train 1197, valid 300, test 300 rows of 784) into ``directory``; returns it."""
    x = images()[0].reshape(-1, 784)
    np.savez(os.path.join(directory, MNIST_FILE), train=x[:1197], valid=x[1197:1497], test=x[1497:])
    return directory
