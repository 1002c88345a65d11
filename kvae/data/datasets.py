"""Named data sets as numpy arrays (:func:`load`, :class:`Split`) and their ``tf.data`` pipelines
(:meth:`Split.dataset`, built by :func:`kvae.data.pipelines.batches`).

=================  =====================================================  ==========  =======
name               source                                                 shape       labels
=================  =====================================================  ==========  =======
``digits``         scikit-learn's bundled 8x8 digits, binarised (>= 8/16)  (8, 8, 1)   yes
``binarized_mnist`` static binarisation: ``binarized_mnist.npz`` in         (28, 28, 1) no
                   ``data_dir`` / ``$KVAE_DATA_DIR``, else tensorflow-datasets
``mnist``          tensorflow-datasets, re-binarised every epoch           (28, 28, 1) yes
``fashion_mnist``  tensorflow-datasets, grey levels in [0, 1]               (28, 28, 1) yes
``dsprites``       procedural dSprites (:mod:`kvae.data.factors`), rendered on   (64, 64, 1) factors
                   demand from factor indices
=================  =====================================================  ==========  =======

Splits are ``train``, ``valid`` and ``test``.  For ``digits`` they are a fixed-seed split
(1257 / 180 / 360); for ``mnist`` and ``fashion_mnist`` ``valid`` is the last 10000 training
images.  Dynamically binarised data (``mnist``) is re-sampled each epoch in the training
pipeline and binarised once with a fixed seed for evaluation.  ``dsprites`` splits are a fixed
permutation of the 737,280-image grid (test: the first 10000, valid: the next 10000, train: the
rest); a split holds factor indices (``Split.factors``) and renders images only when read, so the
training pipeline renders each batch and the full set never sits in memory.
"""
import dataclasses
import os

import numpy as np
import tensorflow as tf

from kvae.data.checks import check_inputs, validate  # noqa: F401
from kvae.data.pipelines import _bernoulli_sampler, batches
from kvae.errors import DataError

SPLITS = ("train", "valid", "test")
_ALIASES = {"validation": "valid", "val": "valid"}
MNIST_FILE = "binarized_mnist.npz"


@dataclasses.dataclass
class Split:
    """One split of a data set: images ``x`` (N, H, W, C), optional labels ``y`` (N,).

    A split of a factor data set (:mod:`kvae.data.factors`) has ``x = None``, ground-truth factor
    indices ``factors`` (N, F) and the data set ``source`` that renders them (``source.images``)."""

    name: str
    split: str
    x: np.ndarray
    y: np.ndarray = None
    binary: bool = True
    dynamic: bool = False  # x holds intensities, binarised by sampling
    factors: np.ndarray = None
    source: object = None

    @property
    def input_shape(self):
        return tuple(self.source.image_shape) if self.x is None else tuple(self.x.shape[1:])

    @property
    def num_classes(self):
        return None if self.y is None else int(self.y.max()) + 1

    def __len__(self):
        return int(len(self.factors) if self.x is None else self.x.shape[0])

    def head(self, n):
        """The first ``n`` examples as a split of their own."""
        cut = (lambda a: None if a is None else a[:n])
        return dataclasses.replace(self, x=cut(self.x), y=cut(self.y), factors=cut(self.factors))

    def images(self):
        """``x``, rendered from the factors for a factor data set."""
        return self.source.images(self.factors) if self.x is None else self.x

    def arrays(self, seed=0):
        """``x`` as float32 in [0, 1] (fixed-seed binarisation for dynamic data) and ``y``."""
        x = _unit_range(self.images(), self.dynamic)
        if self.dynamic:
            x = (np.random.RandomState(seed).uniform(size=x.shape) < x).astype(np.float32)
        return x, self.y

    def dataset(self, batch_size=100, shuffle=True, labels=False, seed=0, drop_remainder=False):
        """A ``tf.data`` pipeline of batches of x or (x, y) (:func:`batches`).

        With ``shuffle=True`` the order of epoch e is a fixed function of (``seed``, e), keyed by the
        epoch counter ``dataset.kvae_epoch``, so a run resumed at epoch e sees the same batches as an
        uninterrupted one.  Dynamically binarised data draws new pixels every epoch; factor data
        sets render each batch from its factor indices."""
        rendered = self.x is None  # rows are factor vectors, rendered batch by batch
        if rendered:
            x, y = self.factors, self.y
        elif self.dynamic and shuffle:
            x, y = _unit_range(self.x, True), self.y
        else:
            x, y = self.arrays()
        if labels and y is None:
            raise DataError(f"data set {self.name!r} has no labels")
        shape = (None,) + self.input_shape

        def render(f):
            images = tf.numpy_function(lambda a: self.source.images(a).astype(np.float32), [f], tf.float32)
            return tf.ensure_shape(images, shape)

        # dynamic binarisation draws new pixels every epoch (a generator outside the pipeline)
        binarise = _bernoulli_sampler(seed) if self.dynamic and shuffle else None
        return batches(x, y if labels else None, batch_size, shuffle=shuffle, seed=seed,
                       drop_remainder=drop_remainder, render=render if rendered else None, transform=binarise)


def _unit_range(x, intensities):
    """``x`` as float32 in [0, 1]: divided by 255 when it holds 8-bit intensities, i.e. values above 1, or
    (``intensities``: a dynamic split's pixel probabilities) any integer array, whatever its largest value."""
    unit = np.asarray(x).astype(np.float32)
    if (intensities and np.asarray(x).dtype.kind in "ui") or unit.max(initial=0.0) > 1.0:
        unit = unit / np.float32(255.0)
    return unit


def _split_name(split):
    split = _ALIASES.get(split, split)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def _digits(split, data_dir=None):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images >= 8).astype(np.uint8)[..., None]
    y = bunch.target.astype(np.int32)
    order = np.random.RandomState(0).permutation(len(x))
    parts = {"test": order[:360], "valid": order[360:540], "train": order[540:]}
    idx = parts[split]
    return Split("digits", split, x[idx], y[idx], binary=True)


def data_dirs(data_dir=None):
    """Where kvae looks for local data files: ``data_dir``, then ``$KVAE_DATA_DIR``."""
    dirs = [d for d in (data_dir, os.environ.get("KVAE_DATA_DIR")) if d]
    return [os.path.abspath(os.path.expanduser(d)) for d in dirs]


# Where tensorflow-datasets downloads each data set from; probed before a download so that an
# offline machine fails in seconds with a clear message instead of retrying for minutes.
_TFDS_HOSTS = {"binarized_mnist": "www.cs.toronto.edu", "mnist": "storage.googleapis.com",
               "fashion_mnist": "storage.googleapis.com"}


def _reachable(host, timeout=5.0):
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _new_empty_tfds_temp_dirs(before):
    """Remove the empty ``tmp*tfds`` folders tensorflow-datasets made since ``before`` (a set)."""
    import glob
    import tempfile

    for path in set(glob.glob(os.path.join(tempfile.gettempdir(), "tmp*tfds"))) - before:
        try:
            os.rmdir(path)  # only if empty
        except OSError:
            pass


def _tfds_arrays(name, tfds_split, data_dir):
    """Arrays of one tensorflow-datasets split: from tensorflow-datasets' data directory ``data_dir``
    when given (never downloading: it must hold the prepared set), else from its default cache or
    downloaded."""
    import glob
    import tempfile

    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "tmp*tfds")))
    try:
        if data_dir is not None and not os.path.isdir(os.path.join(data_dir, name)):
            raise DataError(f"{os.path.join(data_dir, name)} does not exist (a --data-dir is never "
                            "downloaded into)")
        import tensorflow_datasets as tfds

        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared():
            if data_dir is not None:
                raise DataError(f"it is not prepared in {builder.data_dir} (a --data-dir is never "
                                "downloaded into)")
            host = _TFDS_HOSTS.get(name)
            if host and not _reachable(host):
                raise ConnectionError(f"it is not in the local cache {builder.data_dir} and {host} cannot be reached")
            builder.download_and_prepare()
        data = tfds.as_numpy(builder.as_dataset(split=tfds_split, batch_size=-1))
    except Exception as err:  # offline, blocked download, corrupt cache: all end here
        _new_empty_tfds_temp_dirs(before)
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise DataError(
            f"could not load {name!r} through tensorflow-datasets ({type(err).__name__}: {reason}); "
            "connect to the internet once to download it, or prepare it with "
            f"`tfds build {name}` on a machine that is online and copy ~/tensorflow_datasets"
        ) from None
    return data["image"], data.get("label")


def _binarized_mnist(split, data_dir=None):
    looked = []
    for d in data_dirs(data_dir):
        path = os.path.join(d, MNIST_FILE)
        looked.append(path)
        if os.path.isfile(path):
            try:
                with np.load(path) as f:
                    if split not in f.files:
                        raise DataError(
                            f"{path} has no {split!r} array (it has {', '.join(f.files)}); "
                            f"the static binarised MNIST file holds train, valid and optionally test")
                    arr = f[split]
            except DataError:
                raise
            except Exception as err:
                raise DataError(f"{path} is not a readable .npz file: {err}") from None
            if arr.ndim != 2 or arr.shape[1] != 784:
                raise DataError(f"{path}: array {split!r} has shape {arr.shape}, expected (N, 784)")
            validate(arr, None, "binary", name=f"{path}: array {split!r}")  # the raw array, before any cast
            return Split("binarized_mnist", split, arr.reshape(-1, 28, 28, 1).astype(np.uint8), binary=True)
    where = ", ".join(looked) if looked else "no data directory was given"
    if data_dir is not None:  # a directory was named: no fallback to a download
        raise DataError(f"binarized_mnist not found: looked for {MNIST_FILE} in [{where}]. Provide the file "
                        "(arrays train, valid[, test], uint8 N x 784) with --data-dir DIR or KVAE_DATA_DIR=DIR")
    tfds_split = {"train": "train", "valid": "validation", "test": "test"}[split]
    try:
        x, _ = _tfds_arrays("binarized_mnist", tfds_split, None)
    except DataError as err:
        raise DataError(
            f"binarized_mnist not found: looked for {MNIST_FILE} in [{where}] and {err}. "
            f"Provide the file (arrays train, valid[, test], uint8 N x 784) with --data-dir DIR "
            f"or KVAE_DATA_DIR=DIR") from None
    x = np.asarray(x)
    validate(x, None, "binary", name=f"tensorflow-datasets binarized_mnist/{split}")
    return Split("binarized_mnist", split, x.astype(np.uint8).reshape(-1, 28, 28, 1), binary=True)


def _tfds_mnist_like(name, binary, dynamic):
    def load(split, data_dir=None):
        tfds_split = {"train": "train[:50000]", "valid": "train[50000:]", "test": "test"}[split]
        x, y = _tfds_arrays(name, tfds_split, data_dir)
        x, y = np.asarray(x), np.asarray(y)
        validate(x, (28, 28, 1), "intensity", name=f"tensorflow-datasets {name}/{split}")
        return Split(name, split, x.astype(np.uint8), y.astype(np.int32), binary=binary, dynamic=dynamic)

    return load


DSPRITES_LATENTS = ("label_shape", "label_scale", "label_orientation", "label_x_position", "label_y_position")


def _tfds_dsprites(data_dir=None):
    """The real dSprites (images and factor indices) from tensorflow-datasets' local cache, or None
    when it is not prepared there (kvae never downloads 737,280 images unasked: prepare it with
    ``tfds build dsprites`` once)."""
    try:
        import tensorflow_datasets as tfds

        builder = tfds.builder("dsprites", data_dir=data_dir)
        if not builder.is_prepared():
            return None
        data = tfds.as_numpy(builder.as_dataset(split="train", batch_size=-1))
    except Exception:  # no tfds, a broken cache: the procedural renderer stands in
        return None
    return data["image"], np.stack([data[k] for k in DSPRITES_LATENTS], axis=1)


#: how dSprites is obtained: "auto" (tensorflow-datasets' cache when prepared, else procedural),
#: "tfds" (only the real one) or "procedural"; set with $KVAE_DSPRITES
DSPRITES_SOURCE_ENV = "KVAE_DSPRITES"


_SOURCES = {}


def _dsprites_source(data_dir=None):
    """The dSprites factor data set (``source.kind`` says which), built once per process."""
    mode = os.environ.get(DSPRITES_SOURCE_ENV, "auto")
    if (mode, data_dir) not in _SOURCES:
        _SOURCES[(mode, data_dir)] = _make_dsprites_source(mode, data_dir)
    return _SOURCES[(mode, data_dir)]


def _make_dsprites_source(mode, data_dir):
    from kvae.data.factors import ArrayFactors, DSprites

    if mode not in ("auto", "tfds", "procedural"):
        raise DataError(f"${DSPRITES_SOURCE_ENV} must be auto, tfds or procedural, got {mode!r}")
    real = None if mode == "procedural" else _tfds_dsprites(data_dir)
    if real is None:
        if mode == "tfds":
            raise DataError("the real dSprites is not in tensorflow-datasets' cache: run `tfds build dsprites` "
                            f"once on a machine that is online, or set ${DSPRITES_SOURCE_ENV}=procedural")
        return DSprites()
    images, factors = real
    grid = DSprites()
    try:
        return ArrayFactors(images, factors, grid.factor_sizes, grid.factor_names, grid.factor_values,
                            kind="tensorflow-datasets")
    except ValueError as err:
        raise DataError(f"tensorflow-datasets' dsprites does not match the dSprites grid: {err}") from None


def _factor_split(name):
    def load(split, data_dir=None):
        from kvae.data.factors import FACTOR_DATASETS

        source = _dsprites_source() if name == "dsprites" else FACTOR_DATASETS[name]()
        order = np.random.RandomState(0).permutation(len(source))
        rows = {"test": order[:10000], "valid": order[10000:20000], "train": order[20000:]}[split]
        return Split(name, split, None, binary=True, factors=source.factors_of(rows), source=source)

    return load


# the loaders of the registry's "dataset" entries (``kvae.registry.names("dataset")``)
_mnist = _tfds_mnist_like("mnist", binary=True, dynamic=True)
_fashion_mnist = _tfds_mnist_like("fashion_mnist", binary=False, dynamic=False)
_dsprites = _factor_split("dsprites")


def load(name, split="train", data_dir=None):
    """Load one split of a named data set (``kvae.registry.names("dataset")``) as a :class:`Split`."""
    from kvae import registry
    from kvae.errors import ConfigError

    try:
        loader = registry.get("dataset", name)
    except ConfigError:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(registry.names('dataset'))}") from None
    return loader(_split_name(split), data_dir)
