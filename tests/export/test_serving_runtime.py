"""kvae_serve's runtime against echo bundles (tests/helpers/echo_bundle.py): ONNX graphs that return
their inputs, so what the runtime validated, converted, fed and fetched is read back exactly.  No
TensorFlow here; the real models' parity is in test_export.py and the battery."""
import json
import os
import re
import shutil
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers"))
from echo_bundle import seal, write_echo_bundle  # noqa: E402
from kvae_serve import Bundle, BundleError  # noqa: E402

SHAPE, D = (2, 2, 1), 3
PIXELS = 4


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    root = tmp_path_factory.mktemp("echo")
    return {"plain": write_echo_bundle(str(root / "plain")),
            "cond": write_echo_bundle(str(root / "cond"), num_classes=5, needs_uniform=True, density=True)}


def raises(message):
    """pytest.raises for a BundleError whose whole message is ``message`` (exact, not a substring)."""
    return pytest.raises(BundleError, match="^" + re.escape(message) + "$")


def copy_of(path, tmp_path, edit=None):
    """A copy of a bundle with its manifest edited by ``edit(manifest)`` and sealed again (bundle.sha256
    recomputed, as a careful editor would: the checks behind the digest are what is tested)."""
    dest = str(tmp_path / "copy")
    shutil.copytree(path, dest)
    if edit is not None:
        file = os.path.join(dest, "manifest.json")
        manifest = json.load(open(file))
        edit(manifest)
        json.dump(manifest, open(file, "w"))
        seal(dest)
    return dest


# -- loading -------------------------------------------------------------------------------------------

def test_load_reads_the_model_facts_and_lists_endpoints(echo):
    plain, cond = Bundle(echo["plain"]), Bundle(echo["cond"])
    assert plain.path == echo["plain"]
    assert (plain.input_shape, plain.latent_dim, plain.num_classes, plain.needs_uniform) == (SHAPE, D, None, False)
    assert (cond.input_shape, cond.latent_dim, cond.num_classes, cond.needs_uniform) == (SHAPE, D, 5, True)
    assert type(plain.latent_dim) is int and type(cond.needs_uniform) is bool
    assert plain.endpoints == ["decode", "encode", "log_prob", "reconstruct", "sample"]
    assert cond.endpoints == ["decode", "encode", "log_prob", "reconstruct", "sample", "sample_density"]


def test_load_names_each_broken_bundle(echo, tmp_path):
    missing = str(tmp_path / "nowhere")
    with raises(f"{missing}/manifest.json not found: export a model with `kvae export RUN_DIR --out {missing}`"):
        Bundle(missing)
    bad_json = copy_of(echo["plain"], tmp_path)
    with open(os.path.join(bad_json, "manifest.json"), "w") as f:
        f.write("{not json")
    seal(bad_json)
    with pytest.raises(BundleError, match=r"^\S+/copy/manifest.json is not valid JSON: Expecting property name"):
        Bundle(bad_json)
    shutil.rmtree(bad_json)
    path = copy_of(echo["plain"], tmp_path, lambda m: m.update(format="kvae-bundle/2"))
    with raises(f"{path}/manifest.json: unknown bundle format 'kvae-bundle/2'"):
        Bundle(path)
    shutil.rmtree(path)
    path = copy_of(echo["plain"], tmp_path, lambda m: m.pop("endpoints"))
    with raises(f"{path}/manifest.json: 'endpoints' is missing or not an object (corrupt bundle)"):
        Bundle(path)
    shutil.rmtree(path)
    path = copy_of(echo["plain"], tmp_path)
    with open(os.path.join(path, "manifest.json"), "w") as f:
        f.write("[1, 2]")
    seal(path)
    with raises(f"{path}/manifest.json: unknown bundle format [1, 2]"):
        Bundle(path)
    shutil.rmtree(path)
    path = copy_of(echo["plain"], tmp_path)
    os.remove(os.path.join(path, "onnx", "decode.onnx"))
    with raises(f"{path}/onnx/decode.onnx is missing from the bundle"):
        Bundle(path)


def test_every_file_is_verified_unless_verification_is_off(echo, tmp_path):
    path = copy_of(echo["plain"], tmp_path, lambda m: m.pop("files"))
    with raises(f"{path}/onnx/encode.onnx has no sha256 entry in the manifest: the bundle cannot be verified"):
        Bundle(path)
    shutil.rmtree(path)
    path = copy_of(echo["plain"], tmp_path, lambda m: m["files"].pop("onnx/sample.onnx"))
    with raises(f"{path}/onnx/sample.onnx has no sha256 entry in the manifest: the bundle cannot be verified"):
        Bundle(path)
    shutil.rmtree(path)
    path = copy_of(echo["plain"], tmp_path, lambda m: m["files"].update({"onnx/encode.onnx": "0" * 64}))
    with raises(f"{path}/onnx/encode.onnx does not match the sha256 in the manifest (corrupt bundle)"):
        Bundle(path)
    z = np.ones((1, D), np.float32)
    np.testing.assert_array_equal(Bundle(path, verify=False).decode(z)["probs"], z)  # verify=False: loads


def test_sessions_are_cpu_quiet_and_made_once(echo):
    b = Bundle(echo["plain"])
    session = b._session("decode")
    assert session is b._session("decode")
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().log_severity_level == 3
    served = Bundle(echo["plain"], threads=1, spinning=False)._session("decode").get_session_options()
    assert served.intra_op_num_threads == 1
    assert served.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"


# -- run: the raw input checked, then converted and fed by name ----------------------------------------

def test_run_feeds_every_input_by_name_converted_to_the_spec_dtype(echo):
    b = Bundle(echo["cond"])
    x = np.arange(8, dtype=np.float64).reshape(2, *SHAPE)  # float64 in, float32 fed
    eps = np.arange(6, dtype=np.int64).reshape(2, D) + 100  # integers are accepted as numbers
    labels = np.array([4, 0], np.int64)  # int64 in, int32 fed
    u = np.full((2, *SHAPE), 0.5)
    out = b.run("reconstruct", uniform=u, labels=labels, eps=eps, x=x)  # keyword order does not matter
    assert list(out) == ["images"] and out["images"].dtype == np.float32
    want = np.concatenate([x.reshape(2, -1), eps, labels[:, None], u.reshape(2, -1)], axis=1)
    np.testing.assert_array_equal(out["images"], want)


def test_run_returns_each_output_under_its_manifest_name(echo):
    b = Bundle(echo["plain"])
    z = np.array([[1.0, -2.0, 3.0]], np.float32)
    out = b.run("decode", z=z)
    assert list(out) == ["probs", "logits"]
    np.testing.assert_array_equal(out["probs"], z)
    np.testing.assert_array_equal(out["logits"], -z)


def test_run_fetches_outputs_by_their_onnx_names_not_their_order(echo, tmp_path):
    def swap(m):
        outs = m["endpoints"]["decode"]["outputs"]
        outs[0]["onnx_name"], outs[1]["onnx_name"] = outs[1]["onnx_name"], outs[0]["onnx_name"]
    b = Bundle(copy_of(echo["plain"], tmp_path, swap))
    z = np.array([[1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_array_equal(b.run("decode", z=z)["probs"], -z)
    np.testing.assert_array_equal(b.run("decode", z=z)["logits"], z)


def test_run_without_onnx_names_takes_the_graph_outputs_in_order(echo, tmp_path):
    def drop(m):
        for o in m["endpoints"]["decode"]["outputs"]:
            del o["onnx_name"]
    b = Bundle(copy_of(echo["plain"], tmp_path, drop))
    z = np.array([[1.0, 2.0, 3.0]], np.float32)
    out = b.run("decode", z=z)
    np.testing.assert_array_equal(out["probs"], z)
    np.testing.assert_array_equal(out["logits"], -z)


def test_a_manifest_that_disagrees_with_its_graph_fails_at_load(echo, tmp_path):
    z = np.zeros((1, D), np.float32)
    def one_unnamed(m):
        m["endpoints"]["decode"]["outputs"] = [{"name": "probs"}]
    with raises("decode: the ONNX graph returns echo:0, negated:0, the manifest lists probs (corrupt bundle)"):
        Bundle(copy_of(echo["plain"], tmp_path, one_unnamed))  # without onnx names: one listed, two returned
    shutil.rmtree(tmp_path / "copy")
    b = Bundle(copy_of(echo["plain"], tmp_path, lambda m: m["endpoints"]["decode"]["outputs"].pop()))
    np.testing.assert_array_equal(b.run("decode", z=z + 1)["probs"], z + 1)  # named: a listed subset is fetched
    shutil.rmtree(tmp_path / "copy")
    with raises("decode: the ONNX graph returns echo:0, negated:0, the manifest lists probs, logits (corrupt bundle)"):
        Bundle(copy_of(echo["plain"], tmp_path,
                       lambda m: m["endpoints"]["decode"]["outputs"][1].update(onnx_name="gone:0")))
    shutil.rmtree(tmp_path / "copy")
    swapped = copy_of(echo["plain"], tmp_path)  # a graph whose input is not the manifest's (z vs x)
    shutil.copy(os.path.join(swapped, "onnx", "encode.onnx"), os.path.join(swapped, "onnx", "decode.onnx"))
    with raises(f"{swapped}/onnx/decode.onnx does not match the sha256 in the manifest (corrupt bundle)"):
        Bundle(swapped)
    with raises("decode: the ONNX graph takes x, the manifest lists z (corrupt bundle)"):
        Bundle(swapped, verify=False)


def test_run_names_unknown_missing_and_extra_inputs(echo):
    b = Bundle(echo["cond"])
    z = np.zeros((2, D), np.float32)
    with raises("unknown endpoint 'train'; the bundle has decode, encode, log_prob, reconstruct, sample, "
                "sample_density"):
        b.run("train", z=z)
    with raises("sample: missing input(s) labels, uniform"):
        b.run("sample", eps=z)
    with raises("decode takes no input(s) extra, more; it takes z, labels"):
        b.run("decode", z=z, labels=[0, 1], extra=z, more=1)
    with raises("decode takes no input 'x'"):
        b._check("decode", "x", z)


def test_shapes_dtypes_and_values_are_named(echo):
    b = Bundle(echo["cond"])
    with raises("decode: z must have shape [N, 3] float32, got [2, 4]"):
        b._check("decode", "z", np.zeros((2, 4)))
    with raises("decode: z must have shape [N, 3] float32, got [3]"):
        b._check("decode", "z", np.zeros(3))
    with raises("log_prob: eps must have shape [K, N, 3] float32, got [2, 3]"):
        b._check("log_prob", "eps", np.zeros((2, 3)))
    with raises("encode: x must have shape [N, 2, 2, 1] float32, got [1, 2, 1, 2]"):
        b._check("encode", "x", np.zeros((1, 2, 1, 2)))
    with raises("decode: z must hold numbers ([N, 3] float32), got dtype <U1"):
        b._check("decode", "z", np.array([["a", "b", "c"]]))
    with raises("decode: z must hold numbers ([N, 3] float32), got dtype bool"):
        b._check("decode", "z", np.zeros((1, 3), bool))
    with raises("decode: labels must hold integers ([N] int32), got dtype float64"):
        b._check("decode", "labels", np.array([1.0]))
    with pytest.raises(BundleError, match=r"^decode: z must be an array of shape \[N, 3\] float32: .*inhomogeneous"):
        b._check("decode", "z", [[1, 2, 3], [4]])
    z = np.zeros((3, D))
    z[1, 2], z[2, 0] = np.nan, -np.inf
    with raises("decode: z holds 2 NaN/inf values (first at index (1, 2))"):
        b._check("decode", "z", z)
    with raises("decode: z holds values too large for float32"):
        b._check("decode", "z", np.array([[0.0, -1e39, 0.0]]))
    big = np.finfo(np.float32).max
    assert b._check("decode", "z", np.array([[big, -float(big), 0.0]])).dtype == np.float32  # the edge passes
    with raises("decode: labels holds values outside int32"):
        b._check("decode", "labels", np.array([2 ** 31]))
    with raises("decode: labels must be in 0..4; 1 are not (first at index 0: 5)"):
        b._check("decode", "labels", np.array([5]))
    with raises("decode: labels holds values outside int32"):
        b._check("decode", "labels", np.array([-2 ** 31 - 1]))
    with raises("decode: labels must be in 0..4; 2 are not (first at index 1: 5)"):
        b._check("decode", "labels", np.array([0, 5, -1]))
    with raises("decode: labels must be in 0..4; 1 are not (first at index 0: -1)"):
        b._check("decode", "labels", np.array([-1, 4]))
    np.testing.assert_array_equal(b._check("decode", "labels", np.array([0, 4], np.uint8)), [0, 4])
    assert b._check("decode", "labels", np.array([0, 4], np.uint8)).dtype == np.int32
    with raises("sample: uniform must be uniform noise in [0, 1]"):
        b._check("sample", "uniform", np.full((1, *SHAPE), 1.5))
    with raises("sample: uniform must be uniform noise in [0, 1]"):
        b._check("sample", "uniform", np.full((1, *SHAPE), -0.5))
    with raises("sample_density: component_uniform must be uniform noise in [0, 1]"):
        b._check("sample_density", "component_uniform", np.array([0.5, 2.0]))
    edges = np.zeros((1, *SHAPE))
    edges[0, 0, 0, 0] = 1.0
    np.testing.assert_array_equal(b._check("sample", "uniform", edges), edges)  # 0 and 1 are allowed
    # empty arrays pass the value checks (there is nothing to check) and meet the batch check in run
    assert b._check("decode", "labels", np.zeros(0, np.int64)).shape == (0,)
    assert b._check("sample", "uniform", np.zeros((0, *SHAPE))).shape == (0, *SHAPE)


def test_int32_inputs_are_range_checked_and_unknown_inputs_refused(echo, tmp_path):
    b = Bundle(echo["cond"])
    with raises("decode: labels holds values outside int32"):
        b._check("decode", "labels", np.array([2 ** 40]))
    def widen(m):
        m["endpoints"]["decode"]["inputs"].append({"name": "steps", "shape": [None], "dtype": "int32"})
    path = copy_of(echo["cond"], tmp_path, widen)
    with raises(f"{path}/manifest.json: endpoints.decode has an unknown input 'steps' (corrupt bundle)"):
        Bundle(path)


def test_labels_on_an_unconditional_model_are_refused_at_load(echo, tmp_path):
    def labelled(m):
        m["endpoints"]["decode"]["inputs"].append({"name": "labels", "shape": [None], "dtype": "int32"})
    path = copy_of(echo["plain"], tmp_path, labelled)  # num_classes None
    with raises(f"{path}/manifest.json: endpoints.decode has an unknown input 'labels' (corrupt bundle)"):
        Bundle(path)


def test_batch_sizes_must_agree_and_be_at_least_one(echo):
    b = Bundle(echo["cond"])
    x, eps = np.zeros((2, *SHAPE)), np.zeros((4, 3, D))
    with raises("log_prob: inputs disagree on the batch size N (x: 2, eps: 3, labels: 2; log_prob's eps is "
                "[K, N, D])"):
        b.run("log_prob", x=x, eps=eps, labels=np.array([0, 1]))
    with raises("decode: empty batch (N and K must be at least 1)"):
        b.run("decode", z=np.zeros((0, D)), labels=np.zeros(0, int))
    with raises("log_prob: empty batch (N and K must be at least 1)"):
        b.run("log_prob", x=x, eps=np.zeros((0, 2, D)), labels=np.array([0, 1]))
    out = b.run("log_prob", x=x, eps=np.ones((1, 2, D)), labels=np.array([0, 1]))["log_prob"]  # K = 1 runs
    assert out.shape == (2, PIXELS + D + 1)


def test_log_prob_transposes_nothing_the_runtime_feeds_k_n_d(echo):
    b = Bundle(echo["plain"])
    x = np.random.default_rng(0).uniform(size=(2, *SHAPE))
    eps = np.arange(4 * 2 * D, dtype=np.float32).reshape(4, 2, D)
    out = b.run("log_prob", x=x, eps=eps)["log_prob"]
    want = np.concatenate([x.reshape(2, -1), eps.transpose(1, 0, 2).reshape(2, -1)], axis=1)
    np.testing.assert_allclose(out, want, rtol=1e-7)


def test_a_manifest_looser_than_the_model_facts_is_refused(echo, tmp_path):
    def loosen(m):
        m["endpoints"]["decode"]["inputs"][0]["shape"] = [None, None]
    path = copy_of(echo["plain"], tmp_path, loosen)
    with raises(f"{path}/manifest.json: endpoints.decode.inputs.z is [None, None] 'float32'; the model's facts "
                "give [None, 3] float32 (corrupt bundle)"):
        Bundle(path)


# -- the numpy conveniences: exactly the noise they promise, in order ----------------------------------

def test_sample_draws_eps_then_uniform_and_cycles_the_classes(echo):
    b = Bundle(echo["cond"])
    images = b.sample(7, seed=3)
    rng = np.random.default_rng(3)
    eps = rng.standard_normal((7, D))
    u = rng.uniform(size=(7, *SHAPE))
    labels = np.arange(7) % 5
    np.testing.assert_allclose(images, np.concatenate([eps, labels[:, None], u.reshape(7, -1)], 1), rtol=1e-6)
    np.testing.assert_array_equal(b.sample(7, seed=3), images)  # the seed decides everything
    assert not np.array_equal(b.sample(7, seed=4), images)
    assert not np.array_equal(b.sample(7), b.sample(7))  # no seed: fresh noise
    one = b.sample(3, seed=3, labels=2)
    np.testing.assert_array_equal(one[:, D], [2, 2, 2])
    np.testing.assert_array_equal(b.sample(2, seed=np.int64(3), labels=[4, 1])[:, D], [4, 1])


def test_sample_from_the_density_adds_the_component_uniform(echo):
    b = Bundle(echo["cond"])
    images = b.sample(3, seed=8, labels=[1, 2, 3], source="density")
    rng = np.random.default_rng(8)
    eps = rng.standard_normal((3, D))
    cu = rng.uniform(size=3)
    u = rng.uniform(size=(3, *SHAPE))
    want = np.concatenate([eps, cu[:, None], [[1], [2], [3]], u.reshape(3, -1)], 1)
    np.testing.assert_allclose(images, want, rtol=1e-6)
    with raises("this bundle has no ex-post density: run `kvae fit-density` before exporting"):
        Bundle(echo["plain"]).sample(2, source="density")
    with raises("source must be 'prior' or 'density', got 'posterior'"):
        b.sample(2, source="posterior")


def test_sample_without_uniform_feeds_eps_only(echo):
    b = Bundle(echo["plain"])
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(b.sample(2, seed=0), rng.standard_normal((2, D)), rtol=1e-6)
    assert b._uniform(2, rng) == {}


def test_reconstruct_draws_eps_then_uniform(echo):
    b = Bundle(echo["cond"])
    x = np.random.default_rng(1).uniform(size=(2, *SHAPE))
    images = b.reconstruct(x, seed=5, labels=[3, 0])
    rng = np.random.default_rng(5)
    eps = rng.standard_normal((2, D))
    u = rng.uniform(size=(2, *SHAPE))
    want = np.concatenate([x.reshape(2, -1), eps, [[3], [0]], u.reshape(2, -1)], 1)
    np.testing.assert_allclose(images, want, rtol=1e-6)
    plain = Bundle(echo["plain"])
    rng = np.random.default_rng(5)
    np.testing.assert_allclose(plain.reconstruct(x, seed=5),
                               np.concatenate([x.reshape(2, -1), rng.standard_normal((2, D))], 1), rtol=1e-6)


def test_log_prob_draws_k_by_n_by_d_noise(echo):
    b = Bundle(echo["cond"])
    x = np.random.default_rng(1).uniform(size=(2, *SHAPE))
    out = b.log_prob(x, k=3, seed=9, labels=1)
    eps = np.random.default_rng(9).standard_normal((3, 2, D))
    want = np.concatenate([x.reshape(2, -1), eps.transpose(1, 0, 2).reshape(2, -1), [[1], [1]]], 1)
    np.testing.assert_allclose(out, want, rtol=1e-6)
    assert Bundle(echo["plain"]).log_prob(x, seed=0).shape == (2, PIXELS + 100 * D)  # k defaults to 100
    assert Bundle(echo["plain"]).log_prob(x, k=np.int32(1), seed=0).shape == (2, PIXELS + D)
    for k in (0, -1, 2.0, True, "3", None):
        with raises(f"k must be a positive integer, got {k!r}"):
            b.log_prob(x, k=k, labels=1)


def test_log_prob_needs_the_endpoint(echo, tmp_path):
    b = Bundle(copy_of(echo["plain"], tmp_path, lambda m: m["endpoints"].pop("log_prob")))
    with raises("this model has no log_prob endpoint (its encoder is deterministic)"):
        b.log_prob(np.zeros((1, *SHAPE)))


def test_encode_and_decode_pass_labels_through(echo):
    b = Bundle(echo["cond"])
    x = np.random.default_rng(2).uniform(size=(3, *SHAPE))
    q = b.encode(x, labels=[0, 1, 2])
    assert list(q) == ["loc", "scale"]
    np.testing.assert_allclose(q["loc"], np.concatenate([x.reshape(3, -1), [[0], [1], [2]]], 1), rtol=1e-6)
    np.testing.assert_allclose(q["scale"], -q["loc"])
    z = np.ones((2, D))
    np.testing.assert_array_equal(b.decode(z, labels=4)["probs"], np.concatenate([z, [[4], [4]]], 1))
    plain = Bundle(echo["plain"])
    np.testing.assert_array_equal(plain.encode(x)["loc"], x.reshape(3, -1).astype(np.float32))
    np.testing.assert_array_equal(plain.decode(z)["probs"], z)


def test_labels_are_checked_before_anything_runs(echo):
    b, plain = Bundle(echo["cond"]), Bundle(echo["plain"])
    z = np.zeros((2, D))
    with raises("labels given to an unconditional model"):
        plain.decode(z, labels=[0, 1])
    with raises("this model is conditional: give labels (integers in 0..4)"):
        b.decode(z)
    with raises("this model is conditional: give labels (integers in 0..4)"):
        b.reconstruct(np.zeros((2, *SHAPE)))
    with raises("labels must be integers in 0..4, got dtype float64"):
        b.decode(z, labels=[0.0, 1.0])
    with raises("labels must be one integer or 2 integers (one per example), got shape [3]"):
        b.decode(z, labels=[0, 1, 2])
    with raises("labels must be one integer or 2 integers (one per example), got shape [2, 1]"):
        b.decode(z, labels=[[0], [1]])
    with pytest.raises(BundleError, match=r"^labels must be integers: .*inhomogeneous"):
        b.decode(z, labels=[[0], [1, 2]])
    assert plain._labels(2, None) == {} and plain._labels(2, None, cycle=True) == {}
    np.testing.assert_array_equal(b._labels(3, 2)["labels"], [2, 2, 2])
    np.testing.assert_array_equal(b._labels(7, None, cycle=True)["labels"], [0, 1, 2, 3, 4, 0, 1])


def test_seeds_and_counts_are_checked(echo):
    b = Bundle(echo["plain"])
    for seed in (-1, 1.5, True, "0", [1]):
        with raises(f"seed must be a non-negative integer, got {seed!r}"):
            b.sample(2, seed=seed)
    for n in (0, -2, 2.0, False, "4", None):
        with raises(f"n must be a positive integer, got {n!r}"):
            b.sample(n)
    assert b.sample(np.int64(1), seed=0).shape == (1, D)
    assert b.sample(1, seed=0).shape == (1, D) and b.sample(2, seed=0).shape == (2, D)
    with raises("x must be a batch (an array with the examples along axis 0), got a scalar"):
        b.encode(3.0)
    with raises("z must be a batch (an array with the examples along axis 0), got a scalar"):
        b.decode(np.float32(1))
    with pytest.raises(BundleError, match=r"^x must be an array: .*inhomogeneous"):
        b.reconstruct([[1, 2], [3]])
    with raises("x must be a batch (an array with the examples along axis 0), got a scalar"):
        b.log_prob(0.5)
    with raises("x must be a batch (an array with the examples along axis 0), got a scalar"):
        b.reconstruct(0.5)
