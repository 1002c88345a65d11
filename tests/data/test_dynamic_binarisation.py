"""Dynamically binarised data outside the training pipeline: :meth:`Split.arrays` (the fixed-seed
binarisation that evaluation, figures, the explorer and the validation pipeline see) and the input
preparation of :meth:`Split.dataset`, each against an independent numpy transcription:
``x = 1[u < p]``, ``u`` from ``numpy.random.RandomState(seed).uniform``, ``p`` the 8-bit intensity / 255."""
import json
import os

import matplotlib.image as mpimg
import numpy as np
import pytest

from kvae.cli import main as cli
from kvae.data import datasets as data

#: intensities 0, 26, 64, 128, 191, 230, 255: p = 0, 0.10, 0.25, 0.50, 0.75, 0.90, 1
LEVELS = np.array([0, 26, 64, 128, 191, 230, 255], np.uint8)


def binarised(images, seed=0):
    """The fixed-seed Bernoulli binarisation, transcribed: p = intensity / 255 (8-bit integers) or the
    value itself (floats in [0, 1]); a pixel is 1 when a uniform draw of RandomState(seed), in C order
    over the whole array, is below p."""
    p = images.astype(np.float32)
    if images.dtype.kind in "ui":
        p = p / np.float32(255.0)
    return (np.random.RandomState(seed).uniform(size=images.shape) < p).astype(np.float32)


def _intensities(n, shape=(28, 28, 1), seed=123):
    rng = np.random.RandomState(seed)  # not 0: the binarisation's own seed
    return rng.randint(0, 256, (n,) + shape).astype(np.uint8), rng.randint(0, 10, n).astype(np.int32)


def _level_images(n, dtype=np.uint8):
    """n images of 20 x 21 pixels: 60 pixels at each of the seven LEVELS (in [0, 1] for float dtypes)."""
    row = np.repeat(LEVELS, 60).reshape(20, 21, 1)
    images = np.broadcast_to(row, (n, 20, 21, 1))
    return np.ascontiguousarray(images if np.dtype(dtype).kind in "ui" else (images / 255.0).astype(dtype))


def _level_frequencies(x):
    """The frequency of 1 at each level of :func:`_level_images`."""
    return np.asarray(x).reshape(len(x), 7, 60).mean(axis=(0, 2))


def test_arrays_of_a_dynamic_split_is_the_fixed_seed_bernoulli_transcription():
    images, labels = _intensities(40)
    split = data.Split("toy", "test", images.copy(), labels.copy(), dynamic=True)
    x, y = split.arrays()
    assert x.dtype == np.float32 and x.shape == images.shape
    assert set(np.unique(x)) == {0.0, 1.0}
    np.testing.assert_array_equal(x, binarised(images, seed=0))
    x5, _ = split.arrays(seed=5)  # the seed is the binarisation's
    np.testing.assert_array_equal(x5, binarised(images, seed=5))
    assert np.mean(x5 != x) > 0.2
    # the labels are the split's, in its row order; the split itself is left as it was
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_array_equal(split.x, images)
    # the first n rows binarise the same alone (head(n): the explorer, the TensorBoard images)
    np.testing.assert_array_equal(split.head(7).arrays()[0], x[:7])


def test_arrays_pixels_are_one_with_the_frequency_of_their_intensity():
    """Bernoulli(intensity / 255): not x > 0.5, not Bernoulli(0.5), not 1 - p, not the undivided intensity."""
    split = data.Split("toy", "test", _level_images(50), np.zeros(50, np.int32), dynamic=True)
    x, _ = split.arrays()
    freq = _level_frequencies(x)  # 3000 pixels a level: standard error <= 0.0092
    assert freq[0] == 0.0 and freq[-1] == 1.0
    np.testing.assert_allclose(freq, LEVELS / 255.0, atol=0.03)


def test_float_data_already_in_unit_range_is_not_divided_again():
    images = _level_images(50, np.float32)
    split = data.Split("toy", "test", images, None, dynamic=True)
    x, y = split.arrays()
    assert y is None
    np.testing.assert_array_equal(x, binarised(images))
    np.testing.assert_allclose(_level_frequencies(x), LEVELS / 255.0, atol=0.03)
    ds = split.dataset(batch_size=50, shuffle=True)  # the training pipeline: one epoch
    np.testing.assert_allclose(_level_frequencies(next(iter(ds)).numpy()), LEVELS / 255.0, atol=0.03)


def test_dark_8_bit_images_are_intensities_whatever_their_largest_value():
    """A dynamic split's integer pixels are intensities / 255 even when none exceeds 1 (a head of dark images):
    intensity 1 is 1 with frequency 1/255, and head(n) binarises as the first n rows of the whole split."""
    images = np.zeros((40, 20, 21, 1), np.uint8)
    images[:, :10] = 1  # 210 pixels of intensity 1 an image
    images[20:, 10:] = 255
    split = data.Split("toy", "test", images, np.arange(40, dtype=np.int32), dynamic=True)
    x, _ = split.arrays()
    np.testing.assert_array_equal(x, binarised(images))
    head, _ = split.head(20).arrays()  # all <= 1
    np.testing.assert_array_equal(head, x[:20])
    assert head[:, :10].mean() < 0.02 and head[:, 10:].max() == 0.0  # 1/255 = 0.004, not 1
    drawn = next(iter(split.head(20).dataset(batch_size=20, shuffle=True))).numpy()  # the training pipeline
    assert drawn[:, :10].mean() < 0.02


@pytest.mark.parametrize("labels", [False, True])
def test_dataset_without_shuffling_yields_exactly_arrays(labels):
    images, y = _intensities(23, shape=(6, 5, 1))
    split = data.Split("toy", "valid", images, y, dynamic=True)
    batches = list(split.dataset(batch_size=5, shuffle=False, labels=labels))
    assert len(batches) == 5
    xs = np.concatenate([(b[0] if labels else b).numpy() for b in batches])
    np.testing.assert_array_equal(xs, binarised(images))
    if labels:
        np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), y)
    again = np.concatenate([(b[0] if labels else b).numpy() for b in split.dataset(5, shuffle=False, labels=labels)])
    np.testing.assert_array_equal(again, xs)  # the validation data are the same every epoch


def test_shuffled_pipeline_keeps_rows_and_labels_together_and_draws_bernoulli_of_intensity_over_255():
    """The training pipeline (shuffle=True): each image's id, written in pixels of intensity 0 or 255 (which
    binarise to 0 and 1 whatever the draw), comes with its own label, every image once an epoch; the other
    pixels are 1 with the frequency of their intensity / 255."""
    n = 64
    images = np.concatenate([_level_images(n), np.zeros((n, 1, 21, 1), np.uint8)], axis=1)  # a 21st row: the id
    bits = (np.arange(n)[:, None] >> np.arange(6)) & 1
    images[:, 20, :6, 0] = 255 * bits
    split = data.Split("toy", "train", images, np.arange(n, dtype=np.int32), dynamic=True)
    ds = split.dataset(batch_size=16, shuffle=True, labels=True, seed=3)
    xs, ys = zip(*[(bx.numpy(), by.numpy()) for bx, by in ds])
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert set(np.unique(x)) == {0.0, 1.0}
    ids = (x[:, 20, :6, 0].astype(int) << np.arange(6)).sum(axis=1)
    np.testing.assert_array_equal(ids, y)  # each row with its own label
    assert sorted(y) == list(range(n)) and not np.array_equal(y, np.arange(n))  # a permutation, shuffled
    np.testing.assert_allclose(_level_frequencies(x[:, :20]), LEVELS / 255.0, atol=0.035)  # 3840 pixels a level


TINY = ["--hidden", "16", "--latent-dim", "3", "--quiet"]


def test_cli_evaluate_reconstruct_and_the_explorer_see_the_transcribed_binarisation(monkeypatch, tmp_path):
    """``mnist`` (dynamic) with tensorflow-datasets stubbed: what ``kvae evaluate`` scores, the originals in
    ``kvae reconstruct``'s PNG and in the run's reconstructions.png, and the explorer's examples are the
    transcription of the split's intensities."""
    from kvae.evaluation import metrics, plotting
    from kvae.export.explorer import run_examples
    from kvae.training import runs

    images, labels = _intensities(120)
    monkeypatch.setattr(data, "_tfds_arrays", lambda name, split, data_dir: (images, labels))
    run = str(tmp_path / "run")
    assert cli.main(["train", "--dataset", "mnist", *TINY, "--epochs", "1", "--limit", "100", "--valid-limit", "40",
                     "--out", run]) == 0
    expected = binarised(images)
    seen = []
    real_evaluate = metrics.evaluate

    def spy(model, x, y=None, **kwargs):
        seen.append((np.array(x), None if y is None else np.array(y)))
        return real_evaluate(model, x, y, **kwargs)

    monkeypatch.setattr(metrics, "evaluate", spy)
    out = str(tmp_path / "e.json")
    assert cli.main(["evaluate", run, "--split", "test", "--k", "4", "--limit", "30", "--json", out]) == 0
    ((x, y),) = seen
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(y, labels)
    model, config = runs.load_run(run)
    reference = real_evaluate(model, expected[:30], labels[:30], k=4, seed=0)
    assert json.load(open(out))["nll"] == pytest.approx(reference["nll"], rel=1e-6)
    assert cli.main(["reconstruct", run, "--split", "test", "--n", "4", "--out", str(tmp_path / "r.png")]) == 0
    rec = model.reconstruct(expected[:4]).numpy()
    grid = plotting.image_grid(np.stack([expected[:4], rec], axis=1).reshape((8, 28, 28, 1)), ncol=8)
    # the originals are 0/1 (exact in the PNG); the colour map quantises the reconstructions to within 2/255
    np.testing.assert_allclose(mpimg.imread(str(tmp_path / "r.png"))[..., 0], grid, atol=2 / 255)
    ex, ey = run_examples(config, n=25)
    np.testing.assert_array_equal(ex, expected[:25])
    np.testing.assert_array_equal(ey, labels[:25])
    # the run's own figure: its first 32 validation images (of 40) and their reconstructions
    valid = expected[:32]
    pairs = np.stack([valid, model.reconstruct(valid).numpy()], axis=1).reshape((64, 28, 28, 1))
    figure = mpimg.imread(os.path.join(run, "reconstructions.png"))[..., 0]
    np.testing.assert_allclose(figure, plotting.image_grid(pairs, ncol=8), atol=2 / 255)
