"""Data with ground-truth factors of variation, for the disentanglement metrics.

A *factor data set* is a finite grid of discrete factors and a renderer:

* ``factor_names``, ``factor_sizes`` (number of values of each factor), ``factor_values`` (the value
  of each index, one array per factor), ``image_shape``;
* ``sample_factors(n, rng)``: ``[n, F]`` factor indices, each factor uniform and independent;
* ``images(factors)``: the images of given factor indices, float32 in [0, 1], ``[n, *image_shape]``;
* ``sample_with_fixed(n, k, rng)``: ``n`` factor vectors sharing one random value of factor ``k``,
  the others free (what the β-VAE and FactorVAE metrics draw);
* ``index(factors)`` / ``factors_of(index)``: row-major position of a factor vector in the grid.

:class:`DSprites` is the dSprites grid (Matthey et al. 2017, https://github.com/deepmind/dsprites-dataset):
shape (square, ellipse, heart) x scale (6 values in [0.5, 1]) x orientation (40 values in
[0, 2 pi]) x x-position (32 in [0, 1]) x y-position (32 in [0, 1]) = 737,280 binary 64 x 64 images.
kvae renders it procedurally (no download): each pixel centre is tested against the shape's implicit
equation after translating, rotating and scaling, so any factor vector is rendered on demand and the
full set never sits in memory.  It differs from the original's raster in detail: sprites have a
half-width of ``9 * scale`` pixels, centres lie on a 32-point grid over [13, 51] pixels in each
direction, and the heart is the curve ``(u^2 + v^2 - 1)^3 = u^2 v^3``.
"""
import numpy as np

from kvae.errors import DataError


class FactorData:
    """Base class: a grid of discrete factors and an image renderer (see the module docstring)."""

    factor_names = ()
    factor_sizes = ()
    image_shape = ()

    @property
    def num_factors(self):
        return len(self.factor_sizes)

    def __len__(self):
        return int(np.prod(self.factor_sizes))

    def sample_factors(self, n, rng):
        """``[n, F]`` int64 factor indices, every factor uniform and independent."""
        return np.stack([rng.integers(0, s, size=n) for s in self.factor_sizes], axis=1).astype(np.int64)

    def sample_with_fixed(self, n, k, rng):
        """``n`` factor vectors that share one (random) value of factor ``k``."""
        factors = self.sample_factors(n, rng)
        factors[:, k] = rng.integers(0, self.factor_sizes[k])
        return factors

    def index(self, factors):
        """Row-major grid position of each factor vector ``[n, F]`` -> ``[n]``."""
        return np.ravel_multi_index(tuple(np.asarray(factors).T), self.factor_sizes)

    def factors_of(self, index):
        """Factor indices ``[n, F]`` of grid positions ``[n]``."""
        return np.stack(np.unravel_index(np.asarray(index), self.factor_sizes), axis=1).astype(np.int64)

    def images(self, factors):
        """The images of factor indices ``[n, F]``: each factor data set defines its renderer."""
        raise NotImplementedError(f"{type(self).__name__} does not define images(factors)")


class FactorGrid(FactorData):
    """A toy factor data set whose "image" of a factor vector is the vector itself, each factor
    scaled to [0, 1]: ``[n, F]`` float32.  For checking metrics on codes with a known answer."""

    def __init__(self, factor_sizes=(3, 4, 5)):
        self.factor_sizes = tuple(int(s) for s in factor_sizes)
        self.factor_names = tuple(f"factor_{k}" for k in range(len(self.factor_sizes)))
        self.factor_values = tuple(np.linspace(0.0, 1.0, s) for s in self.factor_sizes)
        self.image_shape = (len(self.factor_sizes),)

    def images(self, factors):
        factors = np.asarray(factors)
        return (factors / np.maximum(np.array(self.factor_sizes) - 1, 1)).astype(np.float32)


class DSprites(FactorData):
    """The dSprites grid, rendered procedurally (module docstring)."""

    factor_names = ("shape", "scale", "orientation", "x", "y")
    factor_sizes = (3, 6, 40, 32, 32)
    kind = "procedural"
    image_shape = (64, 64, 1)
    half_width = 9.0  # pixels at scale 1
    centre_range = (13.0, 51.0)  # pixel centres of x/y = 0 and 1

    def __init__(self):
        self.factor_values = (np.arange(3), np.linspace(0.5, 1.0, 6), np.linspace(0.0, 2 * np.pi, 40),
                              np.linspace(0.0, 1.0, 32), np.linspace(0.0, 1.0, 32))

    def images(self, factors, chunk=512):
        """uint8 {0, 1} images ``[n, 64, 64, 1]`` of factor indices ``[n, 5]``."""
        factors = np.asarray(factors)
        if factors.ndim != 2 or factors.shape[1] != 5:
            raise DataError(f"dSprites factors must have shape [n, 5], got {list(factors.shape)}")
        bad = (factors < 0) | (factors >= np.array(self.factor_sizes))
        if bad.any():
            i, k = np.argwhere(bad)[0]
            raise DataError(f"dSprites factor {self.factor_names[k]} must be in 0..{self.factor_sizes[k] - 1}; "
                            f"{int(bad.sum())} values are not (first at row {i}: {factors[i, k]})")
        out = np.zeros((len(factors), 64, 64, 1), np.uint8)
        for start in range(0, len(factors), chunk):
            out[start:start + chunk, ..., 0] = self._render(factors[start:start + chunk])
        return out

    def _render(self, f):
        # every sprite lies within 13 px of its centre (9 px half-width x sqrt 2 at scale 1): test the
        # pixels of a 28 x 28 window around it only
        lo, hi = self.centre_range
        cx = (lo + (hi - lo) * self.factor_values[3][f[:, 3]]).astype(np.float32)
        cy = (lo + (hi - lo) * self.factor_values[4][f[:, 4]]).astype(np.float32)
        x0 = np.clip(np.floor(cx).astype(np.int64) - 14, 0, 64 - 28)
        y0 = np.clip(np.floor(cy).astype(np.int64) - 14, 0, 64 - 28)
        window = np.arange(28, dtype=np.float32) + 0.5  # pixel centres
        dx = (x0[:, None] + window[None, :] - cx[:, None])[:, None, :]  # columns: x
        dy = (y0[:, None] + window[None, :] - cy[:, None])[:, :, None]  # rows: y (downwards)
        theta = self.factor_values[2][f[:, 2]].astype(np.float32)[:, None, None]
        radius = (self.half_width * self.factor_values[1][f[:, 1]]).astype(np.float32)[:, None, None]
        cos, sin = np.cos(theta) / radius, np.sin(theta) / radius
        u = cos * dx + sin * dy
        v = cos * dy - sin * dx
        # each shape's test on its own sprites only
        inside = np.empty(u.shape, bool)
        squares, ellipses, hearts = (f[:, 0] == 0), (f[:, 0] == 1), (f[:, 0] == 2)
        if squares.any():
            inside[squares] = np.maximum(np.abs(u[squares]), np.abs(v[squares])) <= 0.8
        if ellipses.any():
            inside[ellipses] = u[ellipses] ** 2 + 4.0 * v[ellipses] ** 2 <= 1.0
        if hearts.any():  # heart: point down, centred
            hu, hv = 1.2 * u[hearts], -1.2 * v[hearts] + 0.15
            inside[hearts] = (hu ** 2 + hv ** 2 - 1.0) ** 3 - hu ** 2 * hv ** 3 <= 0.0
        out = np.zeros((len(f), 64, 64), np.uint8)
        rows = y0[:, None, None] + np.arange(28)[None, :, None]
        cols = x0[:, None, None] + np.arange(28)[None, None, :]
        out[np.arange(len(f))[:, None, None], rows, cols] = inside
        return out


#: the factor data sets by name (what ``kvae.data.load`` offers with factors)
class ArrayFactors(FactorData):
    """A factor data set held as arrays: one image per grid position, e.g. the real dSprites from
    tensorflow-datasets.  Rows may come in any order; they are checked to cover the grid exactly
    once and put in row-major grid order.  Binary images are kept bit-packed (1 bit per pixel:
    dSprites' 737,280 images of 64 x 64 take 377 MB instead of 3 GB).

    Args:
      images: ``[N, *image_shape]`` images (uint8 {0, 1} when ``binary``).
      factors: ``[N, F]`` integer factor indices of each image.
      factor_sizes: the grid: the number of values of each factor.
      factor_names: the factors' names.
      factor_values: each factor's values (default: the indices).
      kind: where the arrays came from (reported with results, e.g. "tensorflow-datasets").
    """

    def __init__(self, images, factors, factor_sizes, factor_names=None, factor_values=None, binary=True,
                 kind="arrays"):
        images, factors = np.asarray(images), np.asarray(factors)
        self.factor_sizes = tuple(int(s) for s in factor_sizes)
        self.factor_names = tuple(factor_names or (f"factor_{k}" for k in range(len(self.factor_sizes))))
        self.factor_values = tuple(factor_values or (np.arange(s) for s in self.factor_sizes))
        self.image_shape = tuple(images.shape[1:])
        self.kind, self.binary = kind, bool(binary)
        if factors.ndim != 2 or factors.shape != (len(images), len(self.factor_sizes)):
            raise DataError(f"factors must have shape [{len(images)}, {len(self.factor_sizes)}] (one row per image), "
                            f"got {list(factors.shape)}")
        bad = (factors < 0) | (factors >= np.array(self.factor_sizes))
        if bad.any():
            i, k = np.argwhere(bad)[0]
            raise DataError(f"factor {self.factor_names[k]} must be in 0..{self.factor_sizes[k] - 1}; "
                            f"{int(bad.sum())} values are not (first at row {i}: {factors[i, k]})")
        if len(images) != len(self):
            raise DataError(f"the grid {self.factor_sizes} has {len(self)} positions, got {len(images)} images")
        position = self.index(factors)
        counts = np.bincount(position, minlength=len(self))
        if (counts != 1).any():
            missing, repeated = np.flatnonzero(counts == 0), np.flatnonzero(counts > 1)
            raise DataError(f"the images do not cover the factor grid once each: {len(missing)} positions missing "
                            f"(first {self.factors_of(missing[:1]).tolist() if len(missing) else None}), "
                            f"{len(repeated)} repeated")
        order = np.argsort(position)
        if self.binary:
            if images.max(initial=0) > 1:
                raise DataError("binary images must hold only 0 and 1")
            self._packed = np.packbits(images[order].reshape(len(images), -1).astype(np.uint8), axis=1)
        else:
            self._images = images[order]

    def images(self, factors):
        factors = np.asarray(factors)
        rows = self.index(factors)
        if self.binary:
            size = int(np.prod(self.image_shape))
            flat = np.unpackbits(self._packed[rows], axis=1, count=size)
            return flat.reshape((len(rows),) + self.image_shape)
        return self._images[rows]


FACTOR_DATASETS = {"dsprites": DSprites}
