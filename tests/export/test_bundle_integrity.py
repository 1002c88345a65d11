"""Bundles that cannot lie: every tampering case fails at load with one line naming it (echo bundles,
no TensorFlow), ``kvae-serve --check`` says so in one line, and ``kvae export`` replaces a bundle whole."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORT_DIR = os.path.join(HERE, "..", "export")
sys.path.insert(0, os.path.join(HERE, "helpers"))
from echo_bundle import seal, write_echo_bundle  # noqa: E402
from kvae_serve import Bundle, BundleError  # noqa: E402


@pytest.fixture
def bundle(tmp_path):
    return write_echo_bundle(str(tmp_path / "b"), num_classes=4)


def _manifest(path):
    with open(os.path.join(path, "manifest.json")) as f:
        return json.load(f)


def _write_manifest(path, manifest, reseal=True):
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    if reseal:
        seal(path)


def _relist(path, rel):
    """The manifest's sha256 of ``rel`` updated to the file on disk, and the manifest sealed again."""
    m = _manifest(path)
    with open(os.path.join(path, rel), "rb") as f:
        m["files"][rel] = hashlib.sha256(f.read()).hexdigest()
    _write_manifest(path, m)


def _fails(path, message, **kwargs):
    with pytest.raises(BundleError) as info:
        Bundle(path, **kwargs)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_an_edited_value_is_caught_by_the_digest(bundle):
    m = _manifest(bundle)
    m["model"]["latent_dim"] = 4
    _write_manifest(bundle, m, reseal=False)
    _fails(bundle, f"{bundle}/bundle.sha256: manifest.json does not match its sha256 (edited or corrupt bundle)")


def test_an_edited_and_resealed_value_disagrees_with_the_endpoints(bundle):
    m = _manifest(bundle)
    m["model"]["latent_dim"] = 4
    _write_manifest(bundle, m)
    _fails(bundle, f"{bundle}/manifest.json: endpoints.decode.inputs.z is [None, 3] 'float32'; the model's "
                   "facts give [None, 4] float32 (corrupt bundle)")


def test_a_missing_digest_is_refused_with_the_way_out(bundle):
    os.remove(os.path.join(bundle, "bundle.sha256"))
    _fails(bundle, f"{bundle}/bundle.sha256 is missing: the manifest cannot be verified (a bundle exported before "
                   f"kvae-serve 0.3); re-export it with `kvae export RUN_DIR --out {bundle} --overwrite`")
    assert Bundle(bundle, verify=False).latent_dim == 3


def test_a_malformed_digest_file_is_named(bundle):
    with open(os.path.join(bundle, "bundle.sha256"), "w") as f:
        f.write("abc  manifest.json\n")
    _fails(bundle, f"{bundle}/bundle.sha256 is not one line '<64 hex digits>  manifest.json'")


def test_bad_onnx_bytes_fail_at_load_not_at_request(bundle):
    with open(os.path.join(bundle, "onnx", "decode.onnx"), "wb") as f:
        f.write(b"\x08\x07garbage, not a protobuf")
    _fails(bundle, f"{bundle}/onnx/decode.onnx does not match the sha256 in the manifest (corrupt bundle)")
    _relist(bundle, "onnx/decode.onnx")  # listed with its new sha256: the bytes themselves fail
    with pytest.raises(BundleError, match=rf"^{bundle}/onnx/decode.onnx is not a valid ONNX model: "):
        Bundle(bundle)


def test_a_graph_that_fails_its_test_run_is_named(bundle):
    shutil.copy(os.path.join(bundle, "onnx", "log_prob.onnx"), os.path.join(bundle, "onnx", "decode.onnx"))
    _relist(bundle, "onnx/decode.onnx")
    _fails(bundle, "decode: the ONNX graph takes eps, labels, x, the manifest lists z, labels (corrupt bundle)")


@pytest.mark.parametrize("rel, why", [("../outside.onnx", "leaves the bundle (absolute or '..')"),
                                      ("onnx/../../outside.onnx", "leaves the bundle (absolute or '..')"),
                                      ("/etc/hostname", "leaves the bundle (absolute or '..')"),
                                      ("onnx//decode.onnx", "leaves the bundle (absolute or '..')"),
                                      ("onnx\\decode.onnx", "is not a relative path")])
def test_paths_outside_the_bundle_are_refused(bundle, rel, why):
    shutil.copy(os.path.join(bundle, "onnx", "decode.onnx"), os.path.join(os.path.dirname(bundle), "outside.onnx"))
    m = _manifest(bundle)
    m["endpoints"]["decode"]["onnx"] = rel
    _write_manifest(bundle, m)
    _fails(bundle, f"{bundle}: the manifest's file {rel!r} {why}")
    _fails(bundle, f"{bundle}: the manifest's file {rel!r} {why}", verify=False)  # confinement is never off


def test_a_symlink_out_of_the_bundle_is_refused(bundle):
    outside = os.path.join(os.path.dirname(bundle), "outside.onnx")
    target = os.path.join(bundle, "onnx", "decode.onnx")
    shutil.move(target, outside)
    os.symlink(outside, target)  # same bytes, same sha256: only where it points is wrong
    _fails(bundle, f"{bundle}: the manifest's file 'onnx/decode.onnx' is a symlink out of the bundle")
    os.remove(target)
    os.symlink(os.path.join(os.path.dirname(bundle)), os.path.join(bundle, "escape"))
    shutil.move(outside, target)
    _fails(bundle, f"{bundle}/escape is in the bundle but not listed in the manifest")


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["model"].update(latent_dim="3"), "model.latent_dim must be a positive integer, got '3'"),
    (lambda m: m["model"].update(latent_dim=True), "model.latent_dim must be a positive integer, got True"),
    (lambda m: m["model"].update(input_shape=[2, 0, 1]),
     "model.input_shape must be a list of 1 to 4 positive integers, got [2, 0, 1]"),
    (lambda m: m["model"].update(num_classes=-1), "model.num_classes must be null or a positive integer, got -1"),
    (lambda m: m["endpoints"].update(train=m["endpoints"]["decode"]), "unknown endpoint 'train'"),
    (lambda m: m["endpoints"]["decode"].update(inputs="z"), "endpoints.decode.inputs must be a list of objects"),
    (lambda m: m["endpoints"]["decode"].update(outputs=[{"name": 1}]),
     "endpoints.decode.outputs must be a list of {name, onnx_name} objects"),
    (lambda m: m["files"].update({"onnx/decode.onnx": "xyz"}), "files must map paths to sha256 hex digests"),
    (lambda m: m.update(explorer=3), "explorer must be a path or null"),
])
def test_a_manifest_of_the_wrong_structure_is_one_line(bundle, edit, message):
    m = _manifest(bundle)
    edit(m)
    _write_manifest(bundle, m)
    _fails(bundle, f"{bundle}/manifest.json: {message} (corrupt bundle)")


def test_a_duplicate_key_is_refused(bundle):
    with open(os.path.join(bundle, "manifest.json")) as f:
        text = f.read()
    with open(os.path.join(bundle, "manifest.json"), "w") as f:
        f.write(text.replace('"latent_dim": 3', '"latent_dim": 3, "latent_dim": 4'))
    seal(bundle)
    _fails(bundle, f"{bundle}/manifest.json is not valid JSON: duplicate key 'latent_dim'")


def test_every_listed_file_is_verified_and_none_is_unlisted(bundle):
    os.makedirs(os.path.join(bundle, "savedmodel", "1"))
    with open(os.path.join(bundle, "savedmodel", "1", "saved_model.pb"), "wb") as f:
        f.write(b"graph")
    _fails(bundle, f"{bundle}/savedmodel/1/saved_model.pb is in the bundle but not listed in the manifest")
    _relist(bundle, "savedmodel/1/saved_model.pb")
    assert Bundle(bundle).latent_dim == 3
    with open(os.path.join(bundle, "savedmodel", "1", "saved_model.pb"), "wb") as f:
        f.write(b"graph, edited")
    _fails(bundle, f"{bundle}/savedmodel/1/saved_model.pb does not match the sha256 in the manifest (corrupt bundle)")
    os.remove(os.path.join(bundle, "savedmodel", "1", "saved_model.pb"))
    _fails(bundle, f"{bundle}/savedmodel/1/saved_model.pb is listed in the manifest but missing from the bundle")


def test_an_hmac_key_requires_the_matching_signature(bundle):
    _fails(bundle, f"{bundle}/bundle.hmac is missing: a key was given but the bundle is not signed (export it "
                   f"with `kvae export RUN_DIR --out {bundle} --key-file KEY`)", key=b"secret")
    seal(bundle, key=b"other key")
    _fails(bundle, f"{bundle}/bundle.hmac: manifest.json does not match its HMAC under the given key (edited or "
                   "corrupt bundle)", key=b"secret")
    seal(bundle, key=b"secret")
    assert Bundle(bundle, key=b"secret").num_classes == 4


def _kvae_serve(*args):
    env = dict(os.environ, PYTHONPATH=EXPORT_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "kvae_serve", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_kvae_serve_check_is_one_line(bundle, tmp_path):
    result = _kvae_serve("--check", bundle)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{bundle}: ok (5 endpoints: decode, encode, log_prob, reconstruct, "
                                          "sample; every file verified, every session ran)"]
    original = _manifest(bundle)
    m = json.loads(json.dumps(original))
    m["model"]["latent_dim"] = 33
    _write_manifest(bundle, m, reseal=False)
    result = _kvae_serve("--check", bundle)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [f"kvae-serve: error: {bundle}/bundle.sha256: manifest.json does not "
                                          "match its sha256 (edited or corrupt bundle)"]
    _write_manifest(bundle, original)
    key = tmp_path / "key"
    key.write_bytes(b"secret\n")  # the key is the file's bytes without the trailing newline
    assert _kvae_serve("--check", bundle, "--key-file", str(key)).returncode == 1
    seal(bundle, key=b"secret")
    assert _kvae_serve("--check", bundle, "--key-file", str(key)).returncode == 0
    result = _kvae_serve("--check", bundle, "--key-file", str(tmp_path / "nokey"))
    assert result.returncode == 1 and result.stderr.startswith("kvae-serve: error: cannot read --key-file ")
