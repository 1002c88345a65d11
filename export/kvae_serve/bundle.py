"""Load a kvae bundle by its manifest and call its ONNX endpoints, with input checks."""
import hashlib
import json
import os

import numpy as np
import onnxruntime as ort


class BundleError(ValueError):
    """A bundle is missing or corrupt, or an input does not fit an endpoint."""


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Bundle:
    """The endpoints of an exported kvae model (see kvae.export); sessions are created lazily."""

    def __init__(self, path, verify=True):
        self.path = path
        manifest_path = os.path.join(path, "manifest.json")
        if not os.path.isfile(manifest_path):
            raise BundleError(f"{manifest_path} not found: export a model with `kvae export RUN_DIR --out {path}`")
        try:
            with open(manifest_path) as f:
                self.manifest = json.load(f)
        except ValueError as err:
            raise BundleError(f"{manifest_path} is not valid JSON: {err}") from None
        if self.manifest.get("format") != "kvae-bundle/1":
            raise BundleError(f"{manifest_path}: unknown bundle format {self.manifest.get('format')!r}")
        if verify:
            for name, spec in self.manifest["endpoints"].items():
                file = os.path.join(path, spec["onnx"])
                expected = self.manifest["files"].get(spec["onnx"])
                if not os.path.isfile(file):
                    raise BundleError(f"{file} is missing from the bundle")
                if expected and _sha256(file) != expected:
                    raise BundleError(f"{file} does not match the sha256 in the manifest (corrupt bundle)")
        model = self.manifest["model"]
        self.input_shape = tuple(model["input_shape"])
        self.latent_dim = int(model["latent_dim"])
        self.num_classes = model.get("num_classes")
        self.needs_uniform = bool(model.get("needs_uniform"))
        self._sessions = {}

    @property
    def endpoints(self):
        return sorted(self.manifest["endpoints"])

    def _session(self, name):
        if name not in self._sessions:
            spec = self.manifest["endpoints"][name]
            options = ort.SessionOptions()
            options.log_severity_level = 3
            self._sessions[name] = ort.InferenceSession(os.path.join(self.path, spec["onnx"]), options,
                                                        providers=["CPUExecutionProvider"])
        return self._sessions[name]

    def _check(self, endpoint, name, value):
        spec = next((i for i in self.manifest["endpoints"][endpoint]["inputs"] if i["name"] == name), None)
        if spec is None:
            raise BundleError(f"{endpoint} takes no input {name!r}")
        dtype = np.int32 if spec["dtype"] == "int32" else np.float32
        arr = np.asarray(value)
        if arr.dtype.kind not in ("iu" if dtype == np.int32 else "fiu"):
            raise BundleError(f"{endpoint}: {name} must be {spec['dtype']}, got {arr.dtype}")
        arr = arr.astype(dtype)
        expected = spec["shape"]
        if arr.ndim != len(expected) or any(e is not None and e != a for e, a in zip(expected, arr.shape)):
            shown = "[" + ", ".join("N" if e is None else str(e) for e in expected) + "]"
            raise BundleError(f"{endpoint}: {name} must have shape {shown}, got {list(arr.shape)}")
        if dtype == np.float32 and not np.all(np.isfinite(arr)):
            raise BundleError(f"{endpoint}: {name} contains NaN or inf")
        return arr

    def run(self, endpoint, **inputs):
        """Run an endpoint with named inputs; returns ``{output name: array}``."""
        if endpoint not in self.manifest["endpoints"]:
            raise BundleError(f"unknown endpoint {endpoint!r}; the bundle has {', '.join(self.endpoints)}")
        spec = self.manifest["endpoints"][endpoint]
        missing = [i["name"] for i in spec["inputs"] if i["name"] not in inputs]
        if missing:
            raise BundleError(f"{endpoint}: missing input(s) {', '.join(missing)}")
        arrays = {name: self._check(endpoint, name, value) for name, value in inputs.items()}
        sizes = {a.shape[0] for n, a in arrays.items() if not (endpoint == "log_prob" and n == "eps")}
        if len(sizes) > 1:
            raise BundleError(f"{endpoint}: inputs disagree on the batch size ({sorted(sizes)})")
        session = self._session(endpoint)
        feeds = {i.name: arrays[s["name"]] for i, s in zip(session.get_inputs(), spec["inputs"])}
        outputs = session.run(None, feeds)
        return {o["name"]: v for o, v in zip(spec["outputs"], outputs)}

    # -- conveniences with numpy noise
    def _labels(self, n, labels):
        if self.num_classes is None:
            if labels is not None:
                raise BundleError("labels given to an unconditional model")
            return {}
        labels = np.arange(n) % self.num_classes if labels is None else np.broadcast_to(np.asarray(labels), (n,))
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise BundleError(f"labels must be in 0..{self.num_classes - 1}")
        return {"labels": labels.astype(np.int32)}

    def _uniform(self, n, rng):
        return {"uniform": rng.uniform(size=(n,) + self.input_shape).astype(np.float32)} if self.needs_uniform else {}

    def encode(self, x, labels=None):
        x = np.asarray(x, np.float32)
        if self.num_classes is not None and labels is None:
            raise BundleError("this model is conditional: encode needs labels")
        return self.run("encode", x=x, **self._labels(len(x), labels))

    def decode(self, z, labels=None):
        z = np.asarray(z, np.float32)
        return self.run("decode", z=z, **self._labels(len(z), labels))

    def sample(self, n, seed=None, labels=None, source="prior"):
        """n images from the prior (``source="prior"``) or the ex-post Gaussian mixture ("density")."""
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise BundleError(f"n must be a positive integer, got {n!r}")
        rng = np.random.default_rng(seed)
        eps = rng.standard_normal((n, self.latent_dim)).astype(np.float32)
        extra = {**self._labels(n, labels)}
        if source == "density":
            if "sample_density" not in self.manifest["endpoints"]:
                raise BundleError("this bundle has no ex-post density: run `kvae fit-density` before exporting")
            extra["component_uniform"] = rng.uniform(size=n).astype(np.float32)
            endpoint = "sample_density"
        elif source == "prior":
            endpoint = "sample"
        else:
            raise BundleError(f"source must be 'prior' or 'density', got {source!r}")
        return self.run(endpoint, eps=eps, **extra, **self._uniform(n, rng))["images"]

    def reconstruct(self, x, seed=None, labels=None):
        x = np.asarray(x, np.float32)
        rng = np.random.default_rng(seed)
        eps = rng.standard_normal((len(x), self.latent_dim)).astype(np.float32)
        return self.run("reconstruct", x=x, eps=eps, **self._labels(len(x), labels),
                        **self._uniform(len(x), rng))["images"]
