import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

MNIST_FILE = "binarized_mnist.npz"


def pytest_addoption(parser):
    parser.addoption("--data-dir", default=None,
                     help="directory holding binarized_mnist.npz (default: $KVAE_DATA_DIR, then ../shared/data)")


def _data_dir(config):
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [config.getoption("--data-dir"), os.environ.get("KVAE_DATA_DIR"),
                  os.path.join(here, "..", "..", "shared", "data")]
    for d in candidates:
        if d and os.path.isfile(os.path.join(d, MNIST_FILE)):
            return os.path.abspath(d)
    return None


@pytest.fixture(scope="session")
def mnist_dir(pytestconfig):
    """Directory with the static binarised MNIST file; tests that need it are skipped without it, and
    fail instead when ``KVAE_REQUIRE_DATA`` is set (as in CI, ``.ci/run``)."""
    d = _data_dir(pytestconfig)
    if d is None:
        message = f"{MNIST_FILE} not found: pass --data-dir or set KVAE_DATA_DIR"
        if os.environ.get("KVAE_REQUIRE_DATA"):
            pytest.fail(f"KVAE_REQUIRE_DATA is set but {message}", pytrace=False)
        pytest.skip(message)
    return d


@pytest.fixture(scope="session")
def digits28_dir(tmp_path_factory):
    """A directory holding a ``binarized_mnist.npz`` made of scikit-learn's digits at 28x28
    (tests/helpers/digits28.py): the file format and image size of binarised MNIST, always available."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers"))
    import digits28

    return digits28.write_npz(str(tmp_path_factory.mktemp("digits28")))


@pytest.fixture(scope="session")
def digits():
    from kvae.data import datasets as data

    return {s: data.load("digits", s) for s in ("train", "valid", "test")}


@pytest.fixture(autouse=True)
def _same_random_state_for_every_test():
    """Every test starts from the same global random state (Python, numpy, TensorFlow and Keras'
    unseeded initialisers), so its numbers do not depend on which tests ran before it in the same
    process: pytest-xdist spreads the suite over worker processes in an order that varies."""
    import keras

    keras.utils.set_random_seed(20261202)


@pytest.fixture
def assert_bundle_parity():
    """``check(bundle_dir, tol=1e-5)``: the manifest ``kvae export`` wrote records, for every endpoint, the largest
    |Keras - SavedModel| and |Keras - ONNX| on its check inputs, each <= tol; returns the manifest."""
    import json
    import math
    import os

    def check(bundle_dir, tol=1e-5):
        with open(os.path.join(bundle_dir, "manifest.json")) as f:
            manifest = json.load(f)
        parity = manifest.get("parity")
        assert parity is not None, f"{bundle_dir}: the manifest records no parity (exported with --no-check?)"
        assert set(parity) == set(manifest["endpoints"]), (sorted(parity), sorted(manifest["endpoints"]))
        for name, diffs in parity.items():
            for key in ("savedmodel_max_abs_diff", "onnx_max_abs_diff"):
                assert math.isfinite(diffs[key]) and diffs[key] <= tol, (bundle_dir, name, key, diffs[key])
        return manifest

    return check
