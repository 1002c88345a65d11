"""Export a trained model as a serving bundle: SavedModel (TensorFlow Serving layout), ONNX files
and a ``manifest.json``; every endpoint deterministic, with its randomness as an input.

Bundle layout::

    BUNDLE/
      bundle.sha256                 ``<sha256 of manifest.json's bytes>  manifest.json`` (sha256sum -c
                                    format): kvae-serve checks it before it reads the manifest
      bundle.hmac                   (with ``key``) HMAC-SHA256 of manifest.json's bytes, same format
      manifest.json                 model config, endpoints (inputs/outputs: names, shapes, dtypes),
                                    library versions, ONNX opset, sha256 of every file, parity
      savedmodel/1/                 tf.saved_model with one signature per endpoint
      onnx/<endpoint>.onnx          one ONNX graph per endpoint
      explorer.json                 (optional) what the browser explorer shows beside the endpoints:
                                    KL per latent dimension, encoded example codes and their 2-D
                                    PCA map, a few example images (see kvae.export.explorer)

Endpoints (``labels`` only for conditional models, ``uniform`` only for PixelCNN decoders):

=============  ==============================================  ===================================
endpoint       inputs                                          outputs
=============  ==============================================  ===================================
encode         x [N, *shape]                                   posterior parameters (loc, scale, ...)
decode         z [N, D] (, labels [N])                          decoder parameters (probs / loc, scale)
images         z [N, D] (, labels, uniform)                    images decoded from the codes z
reconstruct    x, eps [N, D] (, labels, uniform)               images
sample         eps [N, D] (, labels, uniform [N, *shape])      images (prior flow + decoder/sampler)
sample_density eps (, component_uniform [N], labels, uniform)  images from the ex-post density (only
               when it was fitted; component_uniform for the Gaussian mixture only)
log_prob       x, eps [K, N, D] (, labels)                     importance-weighted bound [N]
=============  ==============================================  ===================================

TensorFlow's stateless random ops do not convert to ONNX, hence the explicit noise: eps is
standard normal, uniform is U(0, 1).  The PixelCNN sampler exports as an ONNX ``Loop``.
"""
import contextlib
import hashlib
import hmac
import json
import logging
import os
import platform
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from kvae.errors import ConfigError
from kvae.training.files import write_json, write_text

OPSET = 17


def _spec(shape, name, dtype=tf.float32):
    return tf.TensorSpec(shape, dtype, name=name)


def endpoints(model):
    """``{name: (function, input_signature, output_names)}`` for a kvae model."""
    shape = tuple(model.data_shape)
    d = model.latent_dim
    cond = model.conditional
    pix = getattr(model.likelihood, "needs_uniform", False)
    if not hasattr(model.posterior, "reparameterize"):
        raise ConfigError(f"posterior {type(model.posterior).__name__} has no reparameterize(q, eps): cannot export")
    x_spec = _spec((None,) + shape, "x")
    label_spec = [_spec((None,), "labels", tf.int32)] if cond else []
    uniform_spec = [_spec((None,) + shape, "uniform")] if pix else []
    post_names = tuple(model.posterior.param_names)
    probe = model.likelihood.named_params(model.decode_params(tf.zeros((1, d)), tf.zeros((1,), tf.int32)
                                                              if cond else None))
    dec_names = tuple(probe)

    def encode(a):
        return tuple(model.encode_params(a["x"], a.get("labels")))

    def decode(a):
        named = model.likelihood.named_params(model.decode_params(a["z"], a.get("labels")))
        return tuple(named[k] for k in dec_names)

    def reconstruct(a):
        return (model.reconstruct_from_noise(a["x"], a["eps"], a.get("labels"), a.get("uniform")),)

    def images(a):
        return (model.likelihood.images(model.decode_params(a["z"], a.get("labels")), a.get("uniform")),)

    def sample(a):
        return (model.sample_from_noise(a["eps"], a.get("labels"), a.get("uniform"), a.get("component_uniform")),)

    def sample_density(a):
        return (model.sample_density_from_noise(a["eps"], a.get("component_uniform"), a.get("labels"),
                                                a.get("uniform")),)

    def log_prob(a):
        return (model.log_prob_from_noise(a["x"], a["eps"], a.get("labels")),)

    eps = _spec((None, d), "eps")
    component_spec = ([_spec((None,), "component_uniform")]
                      if getattr(model.prior, "needs_component_noise", False) else [])
    table = {
        "encode": (encode, [x_spec] + label_spec, post_names),
        "decode": (decode, [_spec((None, d), "z")] + label_spec, dec_names),
        "images": (images, [_spec((None, d), "z")] + label_spec + uniform_spec, ("images",)),
        "reconstruct": (reconstruct, [x_spec, eps] + label_spec + uniform_spec, ("images",)),
        "sample": (sample, [eps] + component_spec + label_spec + uniform_spec, ("images",)),
        "log_prob": (log_prob, [x_spec, _spec((None, None, d), "eps")] + label_spec, ("log_prob",)),
    }
    if not (model.has_density and model.has_likelihood):  # a point-mass encoder or a score has no bound
        del table["log_prob"]
    if model.density.is_fitted:  # the ex-post density (a mixture's component choice as noise)
        density_noise = [_spec((None,), "component_uniform")] if model.density.needs_component_noise else []
        table["sample_density"] = (sample_density, [eps] + density_noise + label_spec + uniform_spec, ("images",))
    return {name: (_positional(fn, spec), spec, outs) for name, (fn, spec, outs) in table.items()}


def _positional(fn, spec):
    """fn(dict of inputs) as fn(*inputs in signature order)."""
    names = [s.name for s in spec]

    def call(*args):
        return fn(dict(zip(names, args)))

    return call


def example_inputs(model, spec, n=3, k=4, seed=0):
    """Valid random inputs for an input signature (for parity checks and tests)."""
    rng = np.random.RandomState(seed)
    out = []
    for s in spec:
        if s.name == "labels":
            out.append(rng.randint(0, model.num_classes, size=n).astype(np.int32))
        elif s.name == "x":
            out.append((rng.uniform(size=(n,) + tuple(model.data_shape)) > 0.5).astype(np.float32)
                       if model.likelihood.support == "binary" else rng.uniform(size=(n,) + tuple(model.data_shape)).astype(np.float32))
        elif s.name in ("uniform", "component_uniform"):
            shape = (n,) if s.name == "component_uniform" else (n,) + tuple(model.data_shape)
            out.append(rng.uniform(size=shape).astype(np.float32))
        elif s.shape.rank == 3:
            out.append(rng.normal(size=(k, n, model.latent_dim)).astype(np.float32))
        else:
            out.append(rng.normal(size=(n, model.latent_dim)).astype(np.float32))
    return out


def _shown(spec):
    return "[" + ", ".join("N" if d is None else str(d) for d in spec.shape) + f"] {spec.dtype.name}"


def _value_check(endpoint, s, a, num_classes):
    """A run-time check of an input's values, as the runtime's: floats finite, labels in 0..num_classes-1
    (``tf.one_hot`` would make the others all-zero conditions), ``uniform`` noise in [0, 1]; the failure
    names how many values are not and the first's flat index (computed only then).  None: nothing to check."""
    if s.name == "labels" and num_classes is not None:
        bad, what = tf.logical_or(a < 0, a >= num_classes), f"{endpoint}: labels must be in 0..{num_classes - 1};"
    elif s.name in ("uniform", "component_uniform"):  # NaN is outside [0, 1] too
        bad = tf.logical_not(tf.logical_and(a >= 0.0, a <= 1.0))
        what = f"{endpoint}: {s.name} must be uniform noise in [0, 1];"
    elif s.dtype.is_floating:
        bad, what = tf.logical_not(tf.math.is_finite(a)), f"{endpoint}: input {s.name} must be finite; NaN or inf:"
    else:
        return None

    def fail():
        flat = tf.cast(tf.reshape(bad, [-1]), tf.int32)
        with tf.control_dependencies([tf.debugging.Assert(False, [
                what, tf.reduce_sum(flat), "values are not, the first at flat index", tf.argmax(flat)])]):
            return tf.constant(False)

    return tf.cond(tf.reduce_any(bad), fail, lambda: tf.constant(True))


def _checked(endpoint, fn, spec, num_classes=None):
    """fn behind input checks, for the SavedModel signatures.

    A loaded signature does not check its inputs against the traced shapes (an MLP encoder
    accepted x of shape [2, 64], [2, 8, 8] or NCHW [2, 1, 8, 8]), and the traced graph's static
    shapes would let shape checks be folded away.  So the signature takes inputs of unknown
    shape, asserts rank, fixed dimensions and a common batch size at run time with a message
    naming the expected spec, then restores the static shape (``tf.ensure_shape``); then, as the
    runtime does, finite floats, labels in 0..num_classes-1 and uniform noise in [0, 1]
    (:func:`_value_check`).
    Returns (checked function, relaxed input signature).
    """
    relaxed = [tf.TensorSpec(None, s.dtype, name=s.name) for s in spec]

    def call(*args):
        asserts, checked = [], []
        batch = None
        for s, a in zip(spec, args):
            want = [-1 if d is None else int(d) for d in s.shape]
            shape = tf.shape(a, out_type=tf.int32)
            padded = tf.concat([shape, tf.fill([len(want)], -2)], 0)[:len(want)]
            ok = tf.logical_and(tf.equal(tf.size(shape), len(want)),
                                tf.reduce_all(tf.logical_or(tf.equal(want, -1), tf.equal(padded, want))))
            asserts.append(tf.debugging.Assert(
                ok, [f"{endpoint}: input {s.name} must have shape {_shown(s)}; got shape", shape]))
            with tf.control_dependencies(asserts[-1:]):  # a wrong shape is named first
                value = _value_check(endpoint, s, a, num_classes)
            asserts += [] if value is None else [value]
            # the batch size N: dimension 0, except for log_prob's eps [K, N, D]
            n = padded[1] if (endpoint == "log_prob" and s.name == "eps") else padded[0]
            if batch is None:
                batch = (s.name, n)
            else:
                asserts.append(tf.debugging.Assert(tf.equal(n, batch[1]), [
                    f"{endpoint}: inputs {batch[0]} and {s.name} disagree on the batch size N:", batch[1], n]))
        with tf.control_dependencies(asserts):
            for s, a in zip(spec, args):
                checked.append(tf.ensure_shape(tf.identity(a), s.shape))
        return fn(*checked)

    return call, relaxed


def _named(fn, outs):
    def named(*args):
        return dict(zip(outs, fn(*args)))

    return named


class _Module(tf.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model


@contextlib.contextmanager
def _quiet_optional_rewrites():
    """tf2onnx logs a full traceback when one of its optional graph rewrites fails (its transpose
    optimizer does on the PixelCNN sampler's Loop) and then converts without that rewrite; the
    exported graph is still checked (onnx.checker, and the parity check against Keras), so those
    warnings are kept out of the user's terminal while converting."""
    logger = logging.getLogger("tf2onnx.optimizer")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _shape_list(shape):
    return [None if d is None else int(d) for d in shape]


def export(model, out_dir, opset=OPSET, check=True, explorer=None, overwrite=False, key=None):
    """Write the bundle for ``model`` to ``out_dir`` and return the manifest (also written).

    With ``check=True`` every endpoint is run on random inputs in Keras, in the reloaded
    SavedModel and in onnxruntime, and the largest absolute differences are recorded under
    ``parity`` in the manifest.  ``explorer``: the dict of :func:`kvae.export.explorer.explorer_data`
    (or None), written as ``explorer.json`` and listed with its sha256 like every file.

    The bundle is written into a temporary sibling directory and renamed into place when it is
    complete, so ``out_dir`` never holds half an old and half a new bundle.

    Args:
        overwrite: replace an ``out_dir`` that exists and is not empty (refused otherwise).
        key: bytes of an HMAC key; the bundle then carries ``bundle.hmac`` (``kvae-serve --key-file``).

    Raises:
        ConfigError: ``out_dir`` is not empty and ``overwrite`` is False, or it is a file.
    """
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"{out_dir} is a file, not a bundle directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise ConfigError(f"{out_dir} exists and is not empty: pass --overwrite (overwrite=True) to replace it")
    if key is not None and not key:
        raise ConfigError("the HMAC key is empty")
    parent, name = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.new-", dir=parent)
    try:
        manifest = _write(model, tmp, opset, check, explorer, key)
        if os.path.isdir(out_dir):  # the old bundle moves aside whole, the new one takes its name
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
            os.rename(out_dir, os.path.join(old, name))
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def seal(out_dir, key=None):
    """Write ``bundle.sha256`` (and with ``key`` ``bundle.hmac``) over manifest.json's bytes."""
    with open(os.path.join(out_dir, "manifest.json"), "rb") as f:
        content = f.read()
    write_text(os.path.join(out_dir, "bundle.sha256"), f"{hashlib.sha256(content).hexdigest()}  manifest.json\n")
    if key is not None:
        mac = hmac.new(key, content, hashlib.sha256).hexdigest()
        write_text(os.path.join(out_dir, "bundle.hmac"), f"{mac}  manifest.json\n")


def _write(model, out_dir, opset, check, explorer, key):
    """export() into the (new, empty) directory ``out_dir``."""
    import keras
    import onnx
    import tf2onnx

    os.makedirs(os.path.join(out_dir, "onnx"), exist_ok=True)
    eps = endpoints(model)
    module = _Module(model)
    signatures = {}
    for name, (fn, spec, outs) in eps.items():
        checked, relaxed = _checked(name, _named(fn, outs), spec, model.num_classes if model.conditional else None)
        tf_fn = tf.function(checked, input_signature=relaxed, autograph=False)
        setattr(module, name, tf_fn)
        signatures[name] = tf_fn.get_concrete_function()
    sm_dir = os.path.join(out_dir, "savedmodel", "1")
    tf.saved_model.save(module, sm_dir, signatures=signatures)

    manifest_endpoints = {}
    for name, (fn, spec, outs) in eps.items():
        path = os.path.join(out_dir, "onnx", f"{name}.onnx")
        with _quiet_optional_rewrites():
            tf2onnx.convert.from_function(tf.function(fn, input_signature=spec, autograph=False),
                                          input_signature=spec, opset=opset, output_path=path)
        proto = onnx.load(path)
        onnx.checker.check_model(proto)
        onnx_outputs = [o.name for o in proto.graph.output]
        manifest_endpoints[name] = {
            "onnx": f"onnx/{name}.onnx",
            "inputs": [{"name": s.name, "shape": _shape_list(s.shape), "dtype": s.dtype.name} for s in spec],
            "outputs": [{"name": o, "onnx_name": oo} for o, oo in zip(outs, onnx_outputs)],
        }
    if explorer is not None:
        write_json(os.path.join(out_dir, "explorer.json"), explorer, separators=(",", ":"))
    files = {}
    for root, _, names in os.walk(out_dir):
        for fname in names:
            full = os.path.join(root, fname)
            rel = os.path.relpath(full, out_dir)
            if rel != "manifest.json":
                files[rel] = _sha256(full)
    import onnxruntime

    manifest = {
        "format": "kvae-bundle/1",
        "model": {"class": type(model).__name__, "config": json.loads(json.dumps(model.get_config(), default=str)),
                  "input_shape": list(model.data_shape), "latent_dim": model.latent_dim,
                  "num_classes": model.num_classes, "likelihood": type(model.likelihood).__name__,
                  "needs_uniform": bool(getattr(model.likelihood, "needs_uniform", False))},
        "endpoints": manifest_endpoints,
        "explorer": "explorer.json" if explorer is not None else None,
        "savedmodel": "savedmodel/1",
        "opset": opset,
        "versions": {"kvae": __import__("kvae").__version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__, "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
        "files": files,
    }
    if check:
        manifest["parity"] = parity(model, out_dir, manifest)
    write_json(os.path.join(out_dir, "manifest.json"), manifest, indent=2)
    seal(out_dir, key)
    return manifest


def parity(model, out_dir, manifest=None, n=3, k=4, seed=0):
    """Largest |Keras - SavedModel| and |Keras - ONNX| per endpoint on random valid inputs."""
    import onnxruntime as ort

    if manifest is None:
        with open(os.path.join(out_dir, "manifest.json")) as f:
            manifest = json.load(f)
    loaded = tf.saved_model.load(os.path.join(out_dir, manifest["savedmodel"]))
    report = {}
    for name, (fn, spec, outs) in endpoints(model).items():
        inputs = example_inputs(model, spec, n=n, k=k, seed=seed)
        keras_out = [np.asarray(t) for t in fn(*[tf.constant(a) for a in inputs])]
        sm = loaded.signatures[name](**{s.name: tf.constant(a) for s, a in zip(spec, inputs)})
        sm_out = [sm[o].numpy() for o in outs]
        sess = ort.InferenceSession(os.path.join(out_dir, manifest["endpoints"][name]["onnx"]),
                                    providers=["CPUExecutionProvider"])
        feeds = {i.name: a for i, a in zip(sess.get_inputs(), inputs)}
        onnx_out = sess.run(None, feeds)
        report[name] = {
            "savedmodel_max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(keras_out, sm_out)),
            "onnx_max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(keras_out, onnx_out)),
        }
    return report
