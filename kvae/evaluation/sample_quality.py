"""Sample quality: how close generated images are to held-out ones, in a feature space.

* :func:`frechet_distance` (Heusel et al. 2017): ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})
  between Gaussians fitted to two feature sets.
* :func:`precision_recall` (Kynkäänniemi et al. 2019): each set's manifold is the union of balls
  around its points with radius the distance to the point's k-th nearest neighbour (k = 3) in the
  same set; precision = the fraction of generated points inside the real manifold, recall = the
  fraction of real points inside the generated one.
* Feature spaces: :class:`LeNetFeatures`, the 84 penultimate units of a LeNet-5 that kvae trained
  once on the static binarised MNIST training split and ships (``kvae/evaluation/weights/``; 28x28x1 images
  only).  That split has no labels, so the LeNet was trained to predict 20 k-means clusters of the
  training images (``apps/train_feature_lenet.py`` reproduces it).  "FID in a LeNet feature space"
  is therefore *not* comparable with Inception FID (no Inception weights are available offline).
  :class:`PCAFeatures`: a PCA of the training images (any shape), the raw-pixel counterpart.
"""
import os

import numpy as np

from kvae.errors import DataError, RunError

WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "lenet_binarized_mnist.weights.h5")
NUM_CLUSTERS = 20


IMAGINARY_TOLERANCE = 1e-3  # pytorch-fid's atol on the imaginary part of sqrtm's diagonal


def frechet_distance(a, b):
    """Fréchet distance between Gaussians fitted to features ``a`` [N, K] and ``b`` [M, K].

    Raises:
      DataError: sqrtm(S_a S_b) has an imaginary part above 1e-3 on its diagonal (as pytorch-fid,
        which raises then rather than keep the real part): the covariances are too singular.
    """
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    import warnings

    with warnings.catch_warnings():  # singular covariances (dead ReLU features) are expected
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(s_a @ s_b)
        if not np.isfinite(root).all():  # the usual jitter when the square root fails
            jitter = np.eye(len(s_a)) * 1e-6
            root = linalg.sqrtm((s_a + jitter) @ (s_b + jitter))
    if np.iscomplexobj(root):
        imaginary = float(np.max(np.abs(np.diagonal(root).imag)))
        if imaginary > IMAGINARY_TOLERANCE:
            raise DataError(f"frechet_distance: sqrtm(S_a S_b) has an imaginary part of {imaginary:.3g} on its "
                            f"diagonal (> {IMAGINARY_TOLERANCE}): the feature covariances are too singular "
                            f"({len(a)} and {len(b)} samples of {a.shape[1]} features)")
    root = np.real(root)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(root))


def _kth_neighbour_radius(x, k, chunk):
    """Distance of each row of x to its k-th nearest other row."""
    radius = np.empty(len(x))
    sq = np.sum(x ** 2, axis=1)
    for i in range(0, len(x), chunk):
        d = np.sqrt(np.maximum(sq[i:i + chunk, None] + sq[None, :] - 2.0 * x[i:i + chunk] @ x.T, 0.0))
        radius[i:i + chunk] = np.partition(d, k, axis=1)[:, k]  # index 0 is the point itself
    return radius


def _inside(points, centres, radius, chunk):
    """For each point: is it within radius[j] of some centre j?"""
    out = np.empty(len(points), bool)
    sq_c = np.sum(centres ** 2, axis=1)
    for i in range(0, len(points), chunk):
        p = points[i:i + chunk]
        d = np.sqrt(np.maximum(np.sum(p ** 2, axis=1)[:, None] + sq_c[None, :] - 2.0 * p @ centres.T, 0.0))
        out[i:i + chunk] = (d <= radius[None, :]).any(axis=1)
    return out


def precision_recall(real, fake, k=3, chunk=1024):
    """``{"precision", "recall"}`` of generated features ``fake`` against ``real`` (Kynkäänniemi et
    al. 2019), distances computed in chunks of ``chunk`` rows (memory O(chunk x N))."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    precision = _inside(fake, real, _kth_neighbour_radius(real, k, chunk), chunk).mean()
    recall = _inside(real, fake, _kth_neighbour_radius(fake, k, chunk), chunk).mean()
    return {"precision": float(precision), "recall": float(recall)}


def lenet(num_classes=NUM_CLUSTERS):
    """LeNet-5 for 28x28x1 images; the layer named ``features`` gives the 84 features."""
    import keras

    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(6, 5, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(16, 5, activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Flatten()(keras.layers.Conv2D(120, 5, activation="relu")(h))
    features = keras.layers.Dense(84, activation="relu", name="features")(h)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(features), name="lenet")


class LeNetFeatures:
    """The shipped LeNet's 84 features of 28x28x1 images in [0, 1]."""

    image_shape = (28, 28, 1)

    def __init__(self, weights=WEIGHTS):
        import keras

        if not os.path.isfile(weights):
            raise RunError(f"{weights} not found: run apps/train_feature_lenet.py")
        model = lenet()
        model.load_weights(weights)
        self.model = keras.Model(model.input, model.get_layer("features").output)

    def __call__(self, images, batch_size=1000):
        images = np.asarray(images, np.float32)
        if images.shape[1:] != self.image_shape:
            raise DataError(f"LeNet features need images of shape {self.image_shape}, got {images.shape[1:]}")
        return np.concatenate([self.model(images[i:i + batch_size], training=False).numpy()
                               for i in range(0, len(images), batch_size)])


class PCAFeatures:
    """A PCA (``num_components``, default 20) of flattened training images."""

    def __init__(self, train_images, num_components=20, seed=0):
        from sklearn.decomposition import PCA

        x = np.asarray(train_images, np.float32).reshape(len(train_images), -1)
        self.pca = PCA(n_components=num_components, random_state=seed).fit(x)

    def __call__(self, images):
        return self.pca.transform(np.asarray(images, np.float32).reshape(len(images), -1))


def evaluate(samples, held_out, train_images, seed=0):
    """``fid_lenet`` (28x28x1 images only, else None), ``precision`` / ``recall`` (in the LeNet space
    when available, else in the PCA space), ``fid_pca`` of ``samples`` against ``held_out``."""
    pca = PCAFeatures(train_images, seed=seed)
    out = {"fid_pca": frechet_distance(pca(held_out), pca(samples)), "fid_lenet": None}
    space = pca
    if tuple(np.shape(samples)[1:]) == LeNetFeatures.image_shape:
        space = LeNetFeatures()
        out["fid_lenet"] = frechet_distance(space(held_out), space(samples))
    out.update(precision_recall(space(held_out), space(samples)))
    out["precision_recall_space"] = "lenet" if out["fid_lenet"] is not None else "pca"
    return out
