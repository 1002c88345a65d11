"""PNG figures of what people look at: image grids (samples, reconstructions) and KL per dimension."""
import math
import os

import numpy as np


def image_grid(images, ncol=None, pad=1, min_size=256):
    """Tile images [N, H, W, C] (values in [0, 1]) into one [rows*H, cols*W] or RGB array,
    upscaled by an integer factor (nearest) so the grid is at least ``min_size`` pixels wide."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    ncol = ncol or int(math.ceil(math.sqrt(n)))
    nrow = int(math.ceil(n / ncol))
    grid = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), np.float32)
    for i in range(n):
        r, col = divmod(i, ncol)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = images[i]
    scale = max(1, int(math.ceil(min_size / grid.shape[1])))
    grid = np.kron(grid, np.ones((scale, scale, 1), np.float32))
    return grid[..., 0] if c == 1 else grid


def save_image_grid(images, path, ncol=None, title=None):
    """Write :func:`image_grid` of ``images`` to the PNG file ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if title is None:
        plt.imsave(path, image_grid(images, ncol=ncol), cmap="gray", vmin=0.0, vmax=1.0)
        return path
    # one screen pixel per grid pixel (a smaller axes would drop rows and columns of this
    # nearest-neighbour image); at least 512 pixels wide so the title fits
    grid = image_grid(images, ncol=ncol, min_size=512)
    dpi, title_inches = 100, 0.4
    width, height = grid.shape[1] / dpi, grid.shape[0] / dpi
    fig = plt.figure(figsize=(width, height + title_inches), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, height / (height + title_inches)))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    fig.suptitle(title, fontsize=9, y=1.0 - 0.1 * title_inches / (height + title_inches), va="top")
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def save_kl_per_dim(kl_per_dim, path, threshold=None, title="KL per latent dimension"):
    """Bar chart of the average KL(q(z_d|x) || p(z_d)) for each latent dimension d, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kl = np.asarray(kl_per_dim, np.float64)
    fig, ax = plt.subplots(figsize=(max(4, 0.18 * len(kl) + 2), 3))
    ax.bar(np.arange(len(kl)), kl, color="steelblue")
    if threshold is not None:
        ax.axhline(threshold, color="red", lw=0.8, ls="--")
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL (nats)")
    ax.set_title(f"{title} (total {kl.sum():.2f} nats)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_latent_traversal(model, x, y, path, span=3.0, steps=9, max_dims=16):
    """Decode the code of one example with each latent dimension swept over [-span, span] (one row
    per dimension, the dimensions with the largest posterior spread first is left to the reader)."""
    import numpy as np

    z0 = model.posterior_means(np.asarray(x[:1], np.float32), None if y is None else y[:1])[0]
    dims = min(model.latent_dim, max_dims)
    values = np.linspace(-span, span, steps, dtype=np.float32)
    codes = np.repeat(z0[None, :], dims * steps, axis=0)
    for d in range(dims):
        codes[d * steps:(d + 1) * steps, d] = values
    labels = None if not model.conditional else np.full(len(codes), int(np.asarray(y)[0]))
    dist = model.decode(codes, labels)
    try:
        images = dist.mean().numpy()
    except NotImplementedError:
        images = dist.sample(seed=[0, 0]).numpy()
    return save_image_grid(images, path, ncol=steps, title=f"latent traversals: rows = z0..z{dims - 1}, {-span}..{span}")
