"""PNG figures show every pixel of their image grids."""
import matplotlib.image as mpimg
import numpy as np

from kvae.evaluation import plotting


def test_a_titled_grid_is_drawn_pixel_for_pixel(tmp_path):
    rng = np.random.default_rng(0)
    images = (rng.uniform(size=(90, 64, 64, 1)) > 0.5).astype("float32")  # 10 rows of 9, like a traversal
    path = str(tmp_path / "grid.png")
    plotting.save_image_grid(images, path, ncol=9, title="latent traversals")
    png = mpimg.imread(path)
    grid = plotting.image_grid(images, ncol=9, min_size=512)
    assert png.shape[1] == grid.shape[1]  # no rescaling of the grid
    np.testing.assert_allclose(png[-grid.shape[0]:, :, 0], grid, atol=1 / 255)  # under the title, the grid itself
    small = plotting.image_grid(images[:4, :8, :8], ncol=2, min_size=512)
    assert small.shape[1] >= 512  # small grids are upscaled so the title fits
