"""The serving side: bundle contents, input validation, the TensorFlow-free runtime and the HTTP server."""
import json
import os
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.cli import main as cli
from kvae.export import bundle as export

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers"))
from waiting import wait_for  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORT_DIR = os.path.join(HERE, "..", "export")


def make_bundles(root):
    """The three bundles these tests use, exported into ``root``; returns {name: (model, path)}."""
    out = {}
    vae = kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden=(32,), seed=0)
    out["vae"] = (vae, os.path.join(str(root), "vae"))
    cvae = kvae.ConditionalVAE(input_shape=(8, 8, 1), num_classes=10, latent_dim=3, hidden=(16,), seed=1)
    out["cvae"] = (cvae, os.path.join(str(root), "cvae"))
    vlae = kvae.VLAE(input_shape=(6, 6, 1), latent_dim=3, hidden=(16,), flow_steps=1, flow_hidden=(8,),
                     pixelcnn_layers=2, pixelcnn_filters=4, seed=2)
    out["vlae"] = (vlae, os.path.join(str(root), "vlae"))
    for model, path in out.values():
        export.export(model, path)
    return out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    prebuilt = os.environ.get("KVAE_TEST_BUNDLES")  # benchmarks/mutation_testing.py exports them once
    if prebuilt:
        return {name: (None, os.path.join(prebuilt, name)) for name in ("vae", "cvae", "vlae")}
    return make_bundles(tmp_path_factory.mktemp("bundles"))


def test_bundle_layout_and_manifest(bundles):
    model, path = bundles["vae"]
    manifest = json.load(open(os.path.join(path, "manifest.json")))
    assert os.path.isfile(os.path.join(path, "savedmodel", "1", "saved_model.pb"))  # TF Serving's layout
    for name in ("encode", "decode", "reconstruct", "sample", "log_prob"):
        assert os.path.isfile(os.path.join(path, manifest["endpoints"][name]["onnx"]))
    assert manifest["endpoints"]["decode"]["inputs"] == [{"name": "z", "shape": [None, 4], "dtype": "float32"}]
    assert [o["name"] for o in manifest["endpoints"]["decode"]["outputs"]] == ["probs", "logits"]
    assert manifest["opset"] == export.OPSET and "tf2onnx" in manifest["versions"]
    import hashlib

    for rel, digest in manifest["files"].items():
        assert hashlib.sha256(open(os.path.join(path, rel), "rb").read()).hexdigest() == digest
    assert "savedmodel/1/saved_model.pb" in manifest["files"]  # the SavedModel half is listed too
    seal = hashlib.sha256(open(os.path.join(path, "manifest.json"), "rb").read()).hexdigest()
    assert open(os.path.join(path, "bundle.sha256")).read() == f"{seal}  manifest.json\n"  # sha256sum -c format
    assert not os.path.exists(os.path.join(path, "bundle.hmac"))


def test_exported_log_prob_is_the_importance_weighted_bound(bundles):
    model, path = bundles["vae"]
    loaded = tf.saved_model.load(os.path.join(path, "savedmodel", "1"))
    x = (np.random.RandomState(0).uniform(size=(5, 8, 8, 1)) > 0.5).astype("float32")
    eps = np.random.RandomState(1).normal(size=(300, 5, 4)).astype("float32")
    exported = loaded.signatures["log_prob"](x=tf.constant(x), eps=tf.constant(eps))["log_prob"].numpy()
    # the bound written out from the distributions, with the same noise
    q = model.encode(x)
    z = q.distribution.loc + q.distribution.scale * eps
    log_w = model.decode(z).log_prob(x) + model.prior_distribution().log_prob(z) - q.log_prob(z)
    direct = (tf.reduce_logsumexp(log_w, axis=0) - np.log(300.0)).numpy()
    np.testing.assert_allclose(exported, direct, atol=1e-4)
    # and it estimates what log_likelihood estimates (other noise): equal on average within the noise
    xs = (np.random.RandomState(2).uniform(size=(200, 8, 8, 1)) > 0.5).astype("float32")
    eps = np.random.RandomState(4).normal(size=(300, 200, 4)).astype("float32")
    exported = loaded.signatures["log_prob"](x=tf.constant(xs), eps=tf.constant(eps))["log_prob"].numpy()
    diff = exported - model.log_likelihood(xs, k=300, seed=3).numpy()
    assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(len(diff)) + 0.01, (diff.mean(), diff.std())


def test_pixelcnn_sampler_is_exported_whole(bundles):
    """The ONNX `sample` endpoint runs the full pixel-by-pixel sampler (an ONNX Loop)."""
    import onnx

    model, path = bundles["vlae"]
    graph = onnx.load(os.path.join(path, "onnx", "sample.onnx")).graph
    assert any(node.op_type == "Loop" for node in graph.node)
    from kvae_serve import Bundle

    bundle = Bundle(path)
    rng = np.random.default_rng(0)
    eps = rng.standard_normal((4, 3)).astype("float32")
    u = rng.uniform(size=(4, 6, 6, 1)).astype("float32")
    images = bundle.run("sample", eps=eps, uniform=u)["images"]
    expected = model.sample_from_noise(tf.constant(eps), None, tf.constant(u)).numpy()
    np.testing.assert_array_equal(images, expected)
    assert set(np.unique(images)) <= {0.0, 1.0}


def test_wrong_inputs_name_the_expected_shape(bundles):
    from kvae_serve import Bundle, BundleError

    model, path = bundles["vae"]
    bundle = Bundle(path)
    with pytest.raises(BundleError, match=r"z must have shape \[N, 4\] float32, got \[2, 5\]"):
        bundle.decode(np.zeros((2, 5)))
    with pytest.raises(BundleError, match=r"x must have shape \[N, 8, 8, 1\]"):
        bundle.encode(np.zeros((2, 64)))
    with pytest.raises(BundleError, match="NaN"):
        bundle.decode(np.full((1, 4), np.nan))
    loaded = tf.saved_model.load(os.path.join(path, "savedmodel", "1"))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"decode: input z must have shape \[N, 4\] float32"):
        loaded.decode(tf.zeros((2, 5)))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"decode: input z must be finite; NaN or inf:\] \[2\] \[values are not, the first at "
                             r"flat index\] \[5\]"):
        loaded.decode(tf.constant([[0.0, 1.0, 2.0, 3.0], [0.0, np.inf, np.nan, 0.0]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"decode: input z must have shape \[N, 4\] float32"):
        loaded.decode(tf.fill((2, 5), np.nan))  # a wrong shape is named first
    vloaded = tf.saved_model.load(os.path.join(bundles["vlae"][1], "savedmodel", "1"))
    u = np.full((2, 6, 6, 1), 0.5, np.float32)
    u[1, 0, 0, 0] = 1.5  # flat index 36
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"images: uniform must be uniform noise in \[0, 1\];\] \[1\] \[values are not, the "
                             r"first at flat index\] \[36\]"):
        vloaded.images(tf.zeros((2, 3)), tf.constant(u))
    cbundle = Bundle(bundles["cvae"][1])
    with pytest.raises(BundleError, match=r"labels must be in 0..9"):
        cbundle.sample(2, labels=[3, 12])
    # the SavedModel signature too (tf.one_hot would make 12 and -1 all-zero conditions)
    cloaded = tf.saved_model.load(os.path.join(bundles["cvae"][1], "savedmodel", "1"))
    z = tf.zeros((3, 3))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"decode: labels must be in 0..9;\] \[2\] \[values are not, the first at flat "
                             r"index\] \[1\]"):
        cloaded.decode(z, tf.constant([3, 12, -1]))
    np.testing.assert_array_equal(cloaded.decode(z, tf.constant([0, 9, 4]))["probs"].numpy().shape, (3, 8, 8, 1))
    assert cloaded.decode(tf.zeros((0, 3)), tf.zeros((0,), tf.int32))["probs"].shape == (0, 8, 8, 1)  # N = 0


def test_runtime_works_without_tensorflow(bundles):
    _, path = bundles["cvae"]
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "keras", "kvae", "tf2onnx"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {EXPORT_DIR!r})
        import numpy as np
        from kvae_serve import Bundle
        b = Bundle({path!r})
        a = b.sample(6, seed=3, labels=[0, 1, 2, 3, 4, 5])
        c = b.sample(6, seed=3, labels=[0, 1, 2, 3, 4, 5])
        assert a.shape == (6, 8, 8, 1) and np.array_equal(a, c)
        assert "tensorflow" not in sys.modules
        try:
            import tensorflow
            raise SystemExit("tensorflow was importable")
        except ImportError:
            pass
        print("OK", float(a.mean()))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("OK"), proc.stderr[-2000:]


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _request(url, body=None, raw=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _answer(url):
    """The server's (status, body), or None while nothing listens yet."""
    try:
        return _request(url)
    except (urllib.error.URLError, ConnectionError):
        return None


def test_http_server_answers_and_survives_bad_requests(bundles):
    _, path = bundles["vae"]
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=EXPORT_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "kvae_serve", path, "--port", str(port), "--max-samples", "16"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        status, body = wait_for(lambda: _answer(base + "/healthz"), "kvae-serve to answer /healthz", process=proc)
        assert status == 200 and body["status"] == "ok" and "/sample" in body["endpoints"]
        status, body = _request(base + "/sample", {"n": 3, "seed": 1})
        assert status == 200 and np.asarray(body["images"]).shape == (3, 8, 8, 1)
        assert _request(base + "/sample", {"n": 3, "seed": 1})[1]["images"] == body["images"]
        status, body = _request(base + "/decode", {"z": [[0, 0, 0, 0], [1, 2, 3, 4]]})
        assert status == 200 and np.asarray(body["probs"]).shape == (2, 8, 8, 1)
        bad = [
            (base + "/sample", None, b"{not json", 400, "malformed JSON"),
            (base + "/sample", {"n": 1000}, None, 400, "over the limit"),
            (base + "/sample", {"n": "three"}, None, 400, "n must be an integer"),
            (base + "/decode", {"z": [[1, 2]]}, None, 400, "shape [N, 4]"),
            (base + "/decode", {"z": "abc"}, None, 400, "must be a list"),
            (base + "/decode", {}, None, 400, "missing field"),
            (base + "/nowhere", {"n": 1}, None, 404, "unknown path"),
        ]
        for url, body, raw, code, message in bad:
            status, answer = _request(url, body, raw)
            assert status == code and message in answer["error"], (url, body, status, answer)
        assert _request(base + "/healthz")[0] == 200  # still up
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_export_from_the_cli(tmp_path, capsys, assert_bundle_parity):
    import hashlib
    import hmac

    from kvae_serve import Bundle

    run = str(tmp_path / "run")
    out = str(tmp_path / "bundle")
    assert cli.main(["train", "--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--out", run, "--quiet"]) == 0
    assert cli.main(["export", run, "--out", out, "--no-check", "--explorer-examples", "0"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert Bundle(out).latent_dim == 2
    before = open(os.path.join(out, "manifest.json"), "rb").read()
    assert cli.main(["export", run, "--out", out, "--explorer-examples", "0"]) == 1  # not empty: refused
    err = capsys.readouterr().err
    assert err.splitlines() == [f"kvae export: error: {out} exists and is not empty: pass --overwrite to replace it"]
    assert open(os.path.join(out, "manifest.json"), "rb").read() == before
    key = tmp_path / "key"
    key.write_bytes(b"k3y\n")
    assert cli.main(["export", run, "--out", out, "--overwrite", "--key-file", str(key), "--explorer-examples",
                     "0"]) == 0
    assert "|keras-onnx|" in capsys.readouterr().out
    content = open(os.path.join(out, "manifest.json"), "rb").read()
    assert "parity" in json.loads(content) and "parity" not in json.loads(before)  # the new bundle, whole
    mac = hmac.new(b"k3y", content, hashlib.sha256).hexdigest()
    assert open(os.path.join(out, "bundle.hmac")).read() == f"{mac}  manifest.json\n"
    assert Bundle(out, key=b"k3y").latent_dim == 2
    assert_bundle_parity(out)
    assert sorted(os.listdir(tmp_path)) == ["bundle", "key", "run"]  # no temporary sibling left


def test_export_replaces_a_bundle_whole_or_not_at_all(tmp_path, monkeypatch):
    from kvae.errors import ConfigError

    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(ConfigError, match="bundle exists and is not empty: pass --overwrite"):
        export.export(None, str(out))

    def failing(model, directory, *args):
        (tmp_path / "seen").write_text(directory)
        with open(os.path.join(directory, "manifest.json"), "w") as f:
            f.write("half")
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(export, "_write", failing)
    with pytest.raises(RuntimeError, match="conversion failed"):
        export.export(None, str(out), overwrite=True)
    assert os.listdir(out) == ["old.txt"]  # the old bundle, untouched
    written_in = (tmp_path / "seen").read_text()
    assert os.path.dirname(written_in) == str(tmp_path) and not os.path.exists(written_in)  # a sibling, removed

    def writing(model, directory, *args):
        with open(os.path.join(directory, "manifest.json"), "w") as f:
            f.write("new")
        return {"new": True}

    monkeypatch.setattr(export, "_write", writing)
    assert export.export(None, str(out), overwrite=True) == {"new": True}
    assert os.listdir(out) == ["manifest.json"]
    assert sorted(os.listdir(tmp_path)) == ["bundle", "seen"]


def test_export_opset_and_no_check_from_the_cli(tmp_path, capsys):
    import glob

    import onnx

    run, out = str(tmp_path / "run"), tmp_path / "bundle"
    assert cli.main(["train", "--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--out", run, "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["export", run, "--out", str(out), "--opset", "15", "--no-check"]) == 0
    printed = capsys.readouterr().out
    assert "|keras-onnx|" not in printed and "wrote " in printed  # no parity check was run
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["opset"] == 15 and "parity" not in manifest
    files = glob.glob(str(out / "onnx" / "*.onnx"))
    assert files
    for path in files:  # every graph was converted at the asked opset
        opsets = {o.domain: o.version for o in onnx.load(path, load_external_data=False).opset_import}
        assert opsets[""] == 15, (path, opsets)


def test_rae_with_ex_post_mixture_exports_its_sampler(tmp_path):
    from kvae_serve import Bundle

    model = kvae.RAE(input_shape=(8, 8, 1), latent_dim=3, hidden=(16,), seed=0)
    x = (np.random.RandomState(0).uniform(size=(100, 8, 8, 1)) > 0.5).astype("float32")
    model.compile(optimizer="adam")
    model.fit(x, epochs=1, verbose=0)
    model.fit_density(x)
    manifest = export.export(model, str(tmp_path / "rae"))
    assert "log_prob" not in manifest["endpoints"] and "sample_density" in manifest["endpoints"]
    for name, diffs in manifest["parity"].items():
        assert diffs["onnx_max_abs_diff"] <= 1e-5 and diffs["savedmodel_max_abs_diff"] <= 1e-5, (name, diffs)
    # the exported mixture sampler draws from the fitted mixture: its codes match the mixture's statistics
    rng = np.random.default_rng(0)
    eps = rng.standard_normal((20000, 3)).astype("float32")
    u = rng.uniform(size=20000).astype("float32")
    z = model.density.from_noise(eps, u).numpy()
    ref = model.density.distribution().sample(20000, seed=[1, 2]).numpy()
    spread = np.sqrt(np.diag(np.cov(ref.T)))
    assert np.all(np.abs(z.mean(0) - ref.mean(0)) < 0.05 * spread), (z.mean(0), ref.mean(0))
    assert np.abs(np.cov(z.T) - np.cov(ref.T)).max() < 0.1 * np.abs(np.cov(ref.T)).max()
    bundle = Bundle(str(tmp_path / "rae"))
    images = bundle.sample(4, seed=0, source="density")
    assert images.shape == (4, 8, 8, 1)


# ---------------------------------------------------------------- validation at the serving boundary
def test_savedmodel_signatures_reject_wrong_shapes_naming_the_spec(bundles):
    model, path = bundles["vae"]
    loaded = tf.saved_model.load(os.path.join(path, "savedmodel", "1"))
    for shape in [(2, 64), (2, 8, 8), (2, 4, 4, 4), (2, 1, 8, 8)]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"encode: input x must have shape \[N, 8, 8, 1\]"):
            loaded.signatures["encode"](x=tf.zeros(shape))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"decode: input z must have shape \[N, 4\]"):
        loaded.signatures["decode"](z=tf.zeros((2, 3)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="disagree on the batch size"):
        loaded.signatures["log_prob"](x=tf.zeros((2, 8, 8, 1)), eps=tf.zeros((5, 3, 4)))
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError), match="float"):
        loaded.signatures["encode"](x=tf.zeros((2, 8, 8, 1), tf.int32))
    ok = loaded.signatures["encode"](x=tf.zeros((2, 8, 8, 1)))
    np.testing.assert_allclose(ok["loc"].numpy(), model.encode_params(tf.zeros((2, 8, 8, 1)))[0].numpy(), atol=1e-6)


@pytest.mark.parametrize("name", ["vae", "cvae"])
def test_keras_model_export_serves_the_reconstruction(bundles, tmp_path, name):
    model, _ = bundles[name]
    model.export(str(tmp_path / "keras_export"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "keras_export"))
    x = (np.random.RandomState(0).uniform(size=(3, 8, 8, 1)) > 0.5).astype("float32")
    if model.conditional:
        y = np.array([1, 2, 3], np.int32)
        got, want = loaded.serve((x, y)).numpy(), model((x, y)).numpy()
    else:
        got, want = loaded.serve(x).numpy(), model(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_runtime_rejects_bad_labels_and_noise(bundles):
    from kvae_serve import Bundle, BundleError

    _, path = bundles["cvae"]
    b = Bundle(path)
    z = np.zeros((2, 3), np.float32)
    cases = [
        (lambda: b.decode(z, labels=[0, 1, 2]), "one integer or 2 integers"),
        (lambda: b.decode(z, labels=["a", "b"]), "must be integers"),
        (lambda: b.decode(z, labels=[0.0, 1.5]), "must be integers"),
        (lambda: b.decode(z, labels=[0, 99]), r"labels must be in 0..9; 1 are not \(first at index 1: 99\)"),
        (lambda: b.decode(z), "this model is conditional: give labels"),
        (lambda: b.encode(np.zeros((2, 8, 8, 1))), "this model is conditional: give labels"),
        (lambda: b.run("log_prob", x=np.zeros((2, 8, 8, 1), np.float32), eps=np.zeros((4, 3, 3), np.float32),
                       labels=np.array([0, 1])), r"disagree on the batch size N \(x: 2, eps: 3"),
        (lambda: b.run("decode", z=np.full((2, 3), np.nan, np.float32), labels=np.array([0, 1])),
         r"6 NaN/inf values \(first at index \(0, 0\)\)"),
        (lambda: b.run("decode", z=[[1, 2], [3]], labels=[0, 1]), "must be an array"),
        (lambda: b.sample(2, seed=-1), "seed must be a non-negative integer"),
        (lambda: b.run("decode", z=z, labels=np.array([0, 1]), extra=z), "takes no input"),
    ]
    for call, message in cases:
        with pytest.raises(BundleError, match=message):
            call()
    assert b.decode(z, labels=[3, 4])["probs"].shape == (2, 8, 8, 1)
    assert b.decode(z, labels=5)["probs"].shape == (2, 8, 8, 1)  # one label for the whole batch
    assert b.sample(4, seed=0).shape == (4, 8, 8, 1)  # sampling cycles through the classes


def test_runtime_verifies_every_file_and_runs_only_verified_bytes(bundles, tmp_path):
    import shutil

    from kvae_serve import Bundle, BundleError

    _, path = bundles["vae"]
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    manifest = json.load(open(copy / "manifest.json"))
    del manifest["files"]["onnx/decode.onnx"]
    json.dump(manifest, open(copy / "manifest.json", "w"))
    with pytest.raises(BundleError, match="manifest.json does not match its sha256"):
        Bundle(str(copy))
    sys.path.insert(0, os.path.join(HERE, "helpers"))
    from echo_bundle import seal

    seal(str(copy))  # sealed again: the missing entry itself is caught
    with pytest.raises(BundleError, match="no sha256 entry"):
        Bundle(str(copy))
    shutil.rmtree(copy)
    shutil.copytree(path, copy)
    b = Bundle(str(copy))
    z = np.random.RandomState(0).normal(size=(2, 4)).astype("float32")
    shutil.copy(copy / "onnx" / "encode.onnx", copy / "onnx" / "decode.onnx")  # swapped after loading
    original = Bundle(path).decode(z)["probs"]
    np.testing.assert_array_equal(b.decode(z)["probs"], original)  # the verified bytes ran


def test_runtime_fuzz_bad_arrays_get_bundle_error(bundles):
    """Generated bad inputs get BundleError, never a raw numpy/onnxruntime exception."""
    from kvae_serve import Bundle, BundleError

    b = Bundle(bundles["vae"][1])
    rng = np.random.default_rng(0)
    values = [None, "x", 3, 2.5, [], [[]], [[1, 2], [3]], {"a": 1}, np.zeros(0), np.zeros((0, 4)),
              np.full((2, 4), np.inf), np.full((2, 4), 1e300), np.zeros((2, 4), bool), np.zeros((2, 4), complex),
              np.array(["a", "b"]), np.zeros((2, 4, 1)), np.zeros((1 << 0, 5)), object()]
    calls = 0
    for _ in range(30):
        for value in values:
            for endpoint, name in (("decode", "z"), ("encode", "x"), ("sample", "eps"), ("log_prob", "eps")):
                inputs = {i["name"]: rng.normal(size=[2 if d is None else d for d in i["shape"]]).astype("float32")
                          for i in b.manifest["endpoints"][endpoint]["inputs"]}
                inputs[name] = value
                calls += 1
                try:
                    b.run(endpoint, **inputs)
                except BundleError:
                    pass
    assert calls >= 1000


def test_exporting_a_pixelcnn_model_logs_no_tracebacks(tmp_path):
    """tf2onnx's transpose optimizer fails on the PixelCNN sampler's Loop and logs a warning with a
    traceback per endpoint before converting without it; export keeps those out of the terminal
    (the graphs are still checked) and leaves the logger's level as it was."""
    import logging

    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("tf2onnx.optimizer")
    handler = Collect(level=logging.WARNING)
    logger.addHandler(handler)
    level = logger.level
    try:
        vlae = kvae.VLAE(input_shape=(6, 6, 1), latent_dim=3, hidden=(16,), flow_steps=1, flow_hidden=(8,),
                         pixelcnn_layers=2, pixelcnn_filters=4, seed=2)
        export.export(vlae, str(tmp_path / "vlae"), check=False)
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == []
    assert logger.level == level


# ---------------------------------------------------------------- the server's batching and chunking
def test_micro_batched_answers_equal_unbatched_ones(bundles):
    """Concurrent requests stacked into one session run (the Service behind kvae-serve, --max-batch 16)
    answer what each request alone gets from the runtime, to 1e-6."""
    import asyncio

    from kvae_serve import Bundle
    from kvae_serve.app import Service

    rng = np.random.default_rng(0)
    for name, d in (("cvae", 3), ("vlae", 3)):
        b = Bundle(bundles[name][1])
        service = Service(b, max_batch=16, max_wait_ms=60000.0)  # only a full batch runs
        conditional = b.num_classes is not None
        decode = [{"z": rng.normal(size=(rows, d)).tolist(),
                   **({"labels": rng.integers(0, 10, rows).tolist()} if conditional else {})} for rows in (1, 3, 2, 5, 5)]
        sample = [{"n": n, "seed": i, **({"labels": i} if conditional else {})} for i, n in enumerate((2, 6, 8))]

        async def run_all():
            return await asyncio.gather(*[service.post("/decode", dict(r)) for r in decode],  # post() empties
                                        *[service.post("/sample", dict(r)) for r in sample])

        answers = asyncio.run(run_all())
        registry = service.metrics.registry
        for endpoint in ("decode", "sample"):  # one run of 16 rows each
            assert registry.get_sample_value("kvae_batch_rows_count", {"endpoint": endpoint}) == 1
            assert registry.get_sample_value("kvae_batch_rows_sum", {"endpoint": endpoint}) == 16
        for request, answer in zip(decode, answers):
            alone = b.decode(np.asarray(request["z"]), labels=request.get("labels"))
            assert sorted(answer) == sorted(alone)
            for key, value in alone.items():
                np.testing.assert_allclose(answer[key], value, rtol=0, atol=1e-6)
        for request, answer in zip(sample, answers[len(decode):]):
            alone = b.sample(request["n"], seed=request["seed"], labels=request.get("labels"))
            np.testing.assert_allclose(answer["images"], alone, rtol=0, atol=1e-6)


def test_log_prob_in_chunks_is_the_bound_over_all_k(bundles):
    """log_prob evaluated in chunks of k equals one run and the log-mean-exp of the per-sample log
    weights (numpy/scipy on k=1 runs with the same noise)."""
    from scipy.special import logsumexp

    from kvae_serve import Bundle

    b = Bundle(bundles["vae"][1])
    x = (np.random.default_rng(1).uniform(size=(3, 8, 8, 1)) > 0.5).astype(np.float32)
    whole = b.log_prob(x, k=40, seed=5, chunk=10 ** 6)
    parts = b.log_prob(x, k=40, seed=5, chunk=9)  # 3 samples of k per run, 14 runs
    eps = np.random.default_rng(5).standard_normal((40, 3, 4))
    weights = np.stack([b.run("log_prob", x=x, eps=eps[i:i + 1])["log_prob"] for i in range(40)])
    want = logsumexp(weights.astype(np.float64), axis=0) - np.log(40)
    np.testing.assert_allclose(whole, want, rtol=0, atol=2e-5)
    np.testing.assert_allclose(parts, want, rtol=0, atol=2e-5)
    assert parts.dtype == np.float32 and parts.shape == (3,)
