"""Data sets and the input checks: every bad input gets a DataError naming the problem."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.data import datasets as data
from kvae.errors import DataError


def test_digits_splits_are_fixed_disjoint_binary_and_labelled(digits):
    sizes = {s: len(d) for s, d in digits.items()}
    assert sizes == {"train": 1257, "valid": 180, "test": 360}
    again = data.load("digits", "valid")
    np.testing.assert_array_equal(again.x, digits["valid"].x)
    # the splits are a partition of scikit-learn's digits: together they reassemble it exactly
    from sklearn.datasets import load_digits

    bunch = load_digits()
    whole = sorted(((bunch.images[i] >= 8).astype(np.uint8).tobytes(), int(bunch.target[i])) for i in range(1797))
    parts = sorted((d.x[i].tobytes(), int(d.y[i])) for d in digits.values() for i in range(len(d)))
    assert parts == whole
    for d in digits.values():
        assert d.input_shape == (8, 8, 1) and set(np.unique(d.x)) <= {0, 1} and d.num_classes == 10


def test_pipeline_batches_and_shuffles_each_epoch(digits):
    ds = digits["train"].dataset(batch_size=50, shuffle=True, labels=True, seed=1)
    assert int(ds.cardinality()) == -(-len(digits["train"]) // 50)
    first = [b[1].numpy() for b in ds.take(2)]
    ds.kvae_epoch.assign(1)  # what kvae.training.callbacks.DataEpoch does at the start of epoch 2
    second = [b[1].numpy() for b in ds.take(2)]
    assert first[0].shape == (50,) and not np.array_equal(first[0], second[0])
    ds.kvae_epoch.assign(0)  # epoch e's order is a function of (seed, e) only: a resumed run sees it again
    again = [b[1].numpy() for b in ds.take(2)]
    np.testing.assert_array_equal(first[0], again[0])
    epoch = np.concatenate([b[1].numpy() for b in ds])
    np.testing.assert_array_equal(np.sort(epoch), np.sort(digits["train"].y))  # each example once per epoch
    x, y = next(iter(ds))
    assert x.dtype == tf.float32 and x.shape == (50, 8, 8, 1)


class _SeenBatches(keras.callbacks.Callback):
    """Records the examples' ids (the last pixel holds the id) of every batch ``train_step`` sees."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append([])


def _id_model(n):
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), decoder="gaussian", seed=3)
    seen = _SeenBatches()
    original = model.train_step

    def train_step(batch):  # runs eagerly (run_eagerly=True): read the ids of the batch
        x = batch[0] if isinstance(batch, tuple) else batch
        seen.epochs[-1].append(np.rint(x.numpy()[:, -1, -1, 0] * n).astype(int))
        return original(batch)

    model.train_step = train_step
    model.compile(optimizer="adam", run_eagerly=True)
    return model, seen


def test_fit_on_arrays_batches_by_a_kvae_pipeline_in_an_order_keyed_by_seed_and_epoch():
    """numpy arrays given to fit go through kvae.data.batches: Keras' default batch size 32, every
    example once per epoch, epoch e's order that of the pipeline with the model's seed at epoch e
    (so it repeats across runs and on resume), and the tf.data autotuner off."""
    n = 70
    x = np.random.RandomState(0).uniform(size=(n, 8, 8, 1)).astype("float32")
    x[:, -1, -1, 0] = np.arange(n) / n
    model, seen = _id_model(n)
    model.fit(x, epochs=2, verbose=0, callbacks=[seen])
    assert [len(b) for b in seen.epochs[0]] == [32, 32, 6]
    for e, batches in enumerate(seen.epochs):
        order = np.concatenate(batches)
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
        reference = data.batches(x, batch_size=32, shuffle=True, seed=3)
        reference.kvae_epoch.assign(e)
        expected = np.concatenate([np.rint(b.numpy()[:, -1, -1, 0] * n).astype(int) for b in reference])
        np.testing.assert_array_equal(order, expected)
    assert not np.array_equal(np.concatenate(seen.epochs[0]), np.concatenate(seen.epochs[1]))
    model2, seen2 = _id_model(n)
    model2.fit(x, epochs=1, verbose=0, shuffle=False, batch_size=25, callbacks=[seen2])
    np.testing.assert_array_equal(np.concatenate(seen2.epochs[0]), np.arange(n))
    assert data.batches(x).options().autotune.enabled is False
    assert data.batches(x, shuffle=False).options().autotune.enabled is False


def test_fit_leaves_keras_options_it_does_not_cover_to_keras():
    """sample_weight and validation_split keep Keras' array handling (and still train)."""
    x = (np.random.RandomState(1).uniform(size=(40, 8, 8, 1)) > 0.5).astype("float32")
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=0)
    model.compile(optimizer="adam")
    h = model.fit(x, sample_weight=np.ones(40, "float32"), validation_split=0.25, batch_size=10, epochs=1, verbose=0)
    assert np.isfinite(h.history["val_loss"][0])


def test_dynamic_binarisation_resamples_each_epoch():
    keras.utils.set_random_seed(0)  # a seeded run must still see new pixels every epoch
    split = data.Split("toy", "train", np.full((4, 2, 2, 1), 128, np.uint8), np.arange(4), dynamic=True)
    ds = split.dataset(batch_size=4, shuffle=True)
    a, b = next(iter(ds)).numpy(), next(iter(ds)).numpy()
    assert set(np.unique(a)) <= {0.0, 1.0} and not np.array_equal(a, b)


def test_dynamic_binarisation_is_bernoulli_of_the_intensity():
    """Pixels of intensity p are 1 with frequency p over many draws (Bernoulli(x), not Bernoulli(0.5) or x > 0.5)."""
    levels = np.array([0, 26, 64, 128, 191, 230, 255], np.uint8)  # p = 0, 0.1, 0.25, 0.5, 0.75, 0.9, 1
    image = np.repeat(levels, 60).reshape(1, 20, 21, 1)
    split = data.Split("toy", "train", image, np.zeros(1, int), dynamic=True)
    ds = split.dataset(batch_size=1, shuffle=True)
    draws = np.concatenate([next(iter(ds)).numpy().reshape(-1, 60 * 7) for _ in range(40)])  # 40 epochs
    freq = draws.reshape(40, 7, 60).mean(axis=(0, 2))
    np.testing.assert_allclose(freq, levels / 255.0, atol=0.04)
    fixed_a, _ = split.arrays()
    fixed_b, _ = split.arrays()
    np.testing.assert_array_equal(fixed_a, fixed_b)


def test_binarized_mnist_from_a_local_file(tmp_path, monkeypatch):
    monkeypatch.delenv("KVAE_DATA_DIR", raising=False)
    rng = np.random.RandomState(0)
    np.savez(tmp_path / "binarized_mnist.npz", train=rng.randint(0, 2, (5, 784)).astype(np.uint8),
             valid=rng.randint(0, 2, (3, 784)).astype(np.uint8))
    split = data.load("binarized_mnist", "validation", data_dir=str(tmp_path))
    assert split.input_shape == (28, 28, 1) and len(split) == 3
    monkeypatch.setenv("KVAE_DATA_DIR", str(tmp_path))
    assert len(data.load("binarized_mnist", "train")) == 5
    with pytest.raises(DataError, match="no 'test' array"):
        data.load("binarized_mnist", "test")


def test_binarized_mnist_missing_offline_fails_fast_and_says_how_to_fix(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    probed, downloads = [], []
    monkeypatch.setattr(data, "_reachable", lambda host, timeout=5.0: probed.append(host) or False)  # offline
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", lambda *a, **k: downloads.append(a))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.delenv("KVAE_DATA_DIR", raising=False)
    with pytest.raises(DataError) as err:  # no data directory: the tensorflow-datasets fallback is tried
        data.load("binarized_mnist", "train")
    msg = str(err.value)
    assert "no data directory was given" in msg and "--data-dir" in msg and "KVAE_DATA_DIR" in msg
    # fast: the host is probed once and no download (minutes of retries offline) is attempted
    assert probed == ["www.cs.toronto.edu"] and downloads == []


def test_unknown_names_are_rejected():
    with pytest.raises(DataError, match="unknown data set"):
        data.load("cifar", "train")
    with pytest.raises(DataError, match="unknown split"):
        data.load("digits", "dev")


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 64), np.float32), r"shape \(64,\) but the model expects \(8, 8, 1\); reshape"),
    (np.full((4, 8, 8, 1), np.nan, np.float32), r"\d+ NaN and 0 infinite"),
    (np.full((4, 8, 8, 1), 255, np.uint8), r"outside \[0, 1\].*divide by 255"),
    (np.full((4, 8, 8, 1), 0.5, np.float32), "non-binary"),
    (np.array([["a"] * 64] * 4).reshape(4, 8, 8, 1), "not numeric"),
])
def test_fit_rejects_bad_data_before_training(bad, message):
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), seed=0)
    model.compile(optimizer="adam")
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(DataError, match=message):
        model.fit(bad, epochs=1, verbose=0)
    with pytest.raises(DataError, match=message):
        model.fit(tf.data.Dataset.from_tensor_slices(bad).batch(2), epochs=1, verbose=0)
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, model.weights))


def test_gaussian_decoder_accepts_real_values_but_not_inf():
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden=(8,), decoder="gaussian", seed=0)
    model.compile(optimizer="adam")
    model.fit(np.full((4, 8, 8, 1), 0.5, np.float32), epochs=1, verbose=0)
    x = np.zeros((4, 8, 8, 1), np.float32)
    x[2, 1, 1, 0] = np.inf
    with pytest.raises(DataError, match="infinite.*example 2"):
        model.fit(x, epochs=1, verbose=0)


def test_conditional_model_requires_labels_in_range():
    model = kvae.ConditionalVAE(input_shape=(8, 8, 1), num_classes=3, latent_dim=2, hidden=(8,), seed=0)
    model.compile(optimizer="adam")
    x = np.zeros((4, 8, 8, 1), np.float32)
    with pytest.raises(DataError, match="conditional"):
        model.fit(x, epochs=1, verbose=0)
    with pytest.raises(DataError, match=r"labels must be in 0..2"):
        model.fit(x, np.array([0, 1, 2, 3]), epochs=1, verbose=0)
    model.fit(x, keras.utils.to_categorical([0, 1, 2, 1], 3), epochs=1, verbose=0)  # one-hot works too


def test_keras_evaluate_checks_its_data_as_fit_does():
    """evaluate's steps are traced (no eager label check inside): its inputs are checked before, as fit's."""
    model = kvae.ConditionalVAE(input_shape=(8, 8, 1), num_classes=3, latent_dim=2, hidden=(8,), seed=0)
    model.compile(optimizer="adam")
    x = np.zeros((4, 8, 8, 1), np.float32)
    assert np.isfinite(model.evaluate(x, np.array([0, 1, 2, 1]), verbose=0)[0])
    with pytest.raises(DataError, match=r"^evaluation data: labels must be in 0..2; 1 are not \(first at index 1: 5\)"):
        model.evaluate(x, np.array([0, 5, 1, 2]), verbose=0)
    with pytest.raises(DataError, match=r"^evaluation data \(first batch\): labels must be in 0..2"):
        model.evaluate(tf.data.Dataset.from_tensor_slices((x, np.array([0, 1, 2, 3]))).batch(4), verbose=0)
    x[1, 2, 3, 0] = np.nan
    with pytest.raises(DataError, match="evaluation data"):
        model.evaluate(x, np.array([0, 1, 2, 1]), verbose=0)


def test_the_models_own_methods_refuse_labels_out_of_range():
    """encode, decode, sample, log_likelihood and the endpoints read labels through one_hot, which names
    labels outside 0..K-1 (tf.one_hot would give all-zero vectors: a condition never trained on)."""
    model = kvae.ConditionalVAE(input_shape=(8, 8, 1), num_classes=3, latent_dim=2, hidden=(8,), seed=0)
    x, z = np.zeros((3, 8, 8, 1), np.float32), np.zeros((3, 2), np.float32)
    np.testing.assert_array_equal(model.one_hot(np.array([[2], [0], [1]])), np.eye(3)[[2, 0, 1]])
    calls = [lambda y: model.encode(x, y), lambda y: model.decode(z, y), lambda y: model.sample(3, labels=y),
             lambda y: model.log_likelihood(x, y, k=2)]
    for call in calls:
        call(np.array([0, 2, 1]))
        with pytest.raises(DataError, match=r"^labels must be in 0..2; 1 are not \(first at index 1: 3\)$"):
            call(np.array([0, 3, 1]))
        with pytest.raises(DataError, match=r"^labels must be in 0..2; 2 are not \(first at index 0: -1\)$"):
            call(tf.constant([-1, 1, 7]))



def test_split_xy_takes_x_and_y_from_one_argument():
    from kvae.data import split_xy

    x, y = np.zeros((2, 3)), np.arange(2)
    assert split_xy((x, y))[0] is x and split_xy([x, y])[1] is y
    assert split_xy((x, y, "weights"), sizes=(2, 3))[1] is y  # sample weights dropped
    assert split_xy((x, y, "weights")) == ((x, y, "weights"), None)  # three elements only when asked
    pair = (x, y)
    assert split_xy(pair, "given")[0] is pair  # y given: x is x, whatever it holds
    assert split_xy(x) == (x, None) and split_xy((x,)) == ((x,), None)


def test_labels_given_inside_x_or_a_dataset_are_checked():
    model = kvae.ConditionalVAE(input_shape=(8, 8, 1), num_classes=3, latent_dim=2, hidden=(8,), seed=0)
    x, bad = np.zeros((4, 8, 8, 1), np.float32), np.array([3, 0, 1, 2])  # the first batch has a bad label
    for given in ((x, bad), (x, bad, np.ones(4)), tf.data.Dataset.from_tensor_slices((x, bad)).batch(2)):
        with pytest.raises(DataError, match=r"labels must be in 0..2"):
            data.check_inputs(model, given)

def test_validate_names_every_problem():
    v = data.validate
    v(np.zeros((2, 3, 3, 1), np.uint8), (3, 3, 1), "binary")  # valid: nothing raised
    v(np.zeros((2, 3)), None, None)
    cases = [
        (np.array(["a"]), None, None, r"^x: dtype <U1 is not numeric$"),
        (np.float32(1.0), None, None, r"^x: expected a batch of examples, got a scalar$"),
        (np.zeros((2, 9)), (3, 3, 1), None, r"each example has shape \(9,\) but the model expects \(3, 3, 1\); "
                                              r"reshape it with x.reshape\(\(-1,\) \+ \(3, 3, 1\)\)"),
        (np.zeros((2, 4)), (3, 3, 1), None, r"expects \(3, 3, 1\)$"),
        (np.array([[0.0, np.inf], [np.nan, np.nan]]), None, None,
         r"^x: 2 NaN and 1 infinite values \(first at index \(0, 1\), example 0\)"),
        (np.array([[0, 1, 1], [1, 1, 2]]), None, "binary", r"^x: 1 values outside \[0, 1\] \(min 0, max 2; first at "
                                                          r"index \(1, 2\), example 1\).*\(divide by 255 and binarise\)$"),
        (np.array([[1.0, -0.5]]), None, "binary", r"\(min -0.5, max 1.0; first at index \(0, 1\), example 0\); a "
                                                  r"Bernoulli decoder needs 0/1 data$"),
        (np.array([[0.0, -0.5]]), None, "binary", r"outside \[0, 1\] \(min -0.5, max 0.0; .*0/1 data$"),
        (np.array([[0, 1], [0.25, 1]]), None, "binary", r"^x: 1 non-binary values in \(0, 1\) \(first at index "
                                                      r"\(1, 0\), example 1\); a Bernoulli decoder needs 0/1 data: "
                                                      r"binarise \(e.g. x > 0.5, or Bernoulli sampling\) or use "
                                                      r"decoder='gaussian'$"),
        (np.array([[0, 255], [256, 3.5]]), None, "intensity", r"^x: 2 values that are not 8-bit intensities 0..255 "
                                                              r"\(first at index \(1, 0\), example 1\)$"),
        (np.array([[-1, 3]]), None, "intensity", r"not 8-bit intensities"),
    ]
    for value, shape, support, message in cases:
        with pytest.raises(kvae.errors.DataError, match=message):
            v(value, shape, support)
    v(np.zeros((0, 2)), None, "binary")  # an empty batch has no bad values
    v(np.array([[0, 255]]), None, "intensity")
    v(np.array([[0.5, 7.0]]), None, None)  # real-valued data: no range check


def test_a_named_directory_is_never_downloaded_into(tmp_path, monkeypatch):
    """With data_dir given, a missing binarized_mnist.npz (or a tensorflow-datasets set not prepared
    there) is an error at once: no tensorflow-datasets download, no temporary folder left behind."""
    import glob
    import tempfile

    def no_download(*args, **kwargs):
        raise AssertionError("tried tensorflow-datasets")

    monkeypatch.delenv("KVAE_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "_reachable", no_download)
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "tmp*tfds")))
    with pytest.raises(DataError, match="binarized_mnist not found: looked for .*binarized_mnist.npz"):
        data.load("binarized_mnist", "train", data_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"could not load 'mnist' .* does not exist \(a --data-dir is never downloaded"):
        data.load("mnist", "train", data_dir=str(tmp_path))
    (tmp_path / "mnist").mkdir()  # a folder that is not a prepared set: tensorflow-datasets says so, offline
    with pytest.raises(DataError, match=r"not prepared in .* \(a --data-dir is never downloaded"):
        data.load("mnist", "train", data_dir=str(tmp_path))
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "tmp*tfds"))) <= before


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_like_split_strings_cut_train_into_disjoint_50000_and_10000(monkeypatch, name):
    """The split strings kvae passes to tensorflow-datasets, read by tfds' own parser against the real sizes
    (train 60000, test 10000): train and valid partition tfds' train split, 50000 / 10000, no example in both."""
    from types import SimpleNamespace

    import tensorflow_datasets as tfds

    from kvae.data import datasets as kdata

    sizes = {"train": SimpleNamespace(name="train", num_examples=60000),
             "test": SimpleNamespace(name="test", num_examples=10000)}
    seen = {}

    def fake(dataset, tfds_split, data_dir):
        assert dataset == name
        (part,) = tfds.core.ReadInstruction.from_spec(tfds_split).to_absolute(sizes)
        ids = np.arange(sizes[part.splitname].num_examples)[part.from_:part.to]
        seen[tfds_split] = (part.splitname, ids)
        return np.broadcast_to(np.zeros((1, 28, 28, 1), np.uint8), (len(ids), 28, 28, 1)), ids % 10

    monkeypatch.setattr(kdata, "_tfds_arrays", fake)
    lengths = {split: len(kdata.load(name, split)) for split in ("train", "valid", "test")}
    assert lengths == {"train": 50000, "valid": 10000, "test": 10000}
    (train_split, train), (valid_split, valid) = seen["train[:50000]"], seen["train[50000:]"]
    assert train_split == valid_split == "train" and seen["test"][0] == "test"
    assert not set(train) & set(valid)
    assert sorted(set(train) | set(valid)) == list(range(60000))
