"""Load a kvae bundle by its manifest and call its ONNX endpoints, with input checks."""
import hashlib
import json
import os

import numpy as np
import onnxruntime as ort


class BundleError(ValueError):
    """A bundle is missing or corrupt, or an input does not fit an endpoint."""


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
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != "kvae-bundle/1":
            found = self.manifest.get("format") if isinstance(self.manifest, dict) else self.manifest
            raise BundleError(f"{manifest_path}: unknown bundle format {found!r}")
        for key in ("endpoints", "model"):
            if not isinstance(self.manifest.get(key), dict):
                raise BundleError(f"{manifest_path}: {key!r} is missing or not an object (corrupt bundle)")
        # Sessions are created from these bytes, read once and verified here: a file swapped on
        # disk after loading is never run.
        self._bytes = {name: self._read_verified(path, spec["onnx"], verify)
                       for name, spec in self.manifest["endpoints"].items()}
        self.explorer = self._explorer(path, verify)
        model = self.manifest["model"]
        self.input_shape = tuple(model["input_shape"])
        self.latent_dim = int(model["latent_dim"])
        self.num_classes = model.get("num_classes")
        self.needs_uniform = bool(model.get("needs_uniform"))
        self._sessions = {}

    def _read_verified(self, path, name, verify):
        """The bytes of the bundle's file ``name``, checked against its sha256 in the manifest."""
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            raise BundleError(f"{file} is missing from the bundle")
        with open(file, "rb") as f:
            content = f.read()
        if verify:
            expected = self.manifest.get("files", {}).get(name)
            if expected is None:
                raise BundleError(f"{file} has no sha256 entry in the manifest: the bundle cannot be verified")
            if hashlib.sha256(content).hexdigest() != expected:
                raise BundleError(f"{file} does not match the sha256 in the manifest (corrupt bundle)")
        return content

    def _explorer(self, path, verify):
        """explorer.json (None when the bundle has none), checked against its sha256."""
        name = self.manifest.get("explorer")
        if not name:
            return None
        content = self._read_verified(path, name, verify)
        file = os.path.join(path, name)
        try:
            data = json.loads(content)
        except ValueError as err:
            raise BundleError(f"{file} is not valid JSON: {err}") from None
        if not isinstance(data, dict) or data.get("format") != "kvae-explorer/1":
            raise BundleError(f"{file}: unknown explorer format")
        return data

    @property
    def endpoints(self):
        return sorted(self.manifest["endpoints"])

    def _session(self, name):
        if name not in self._sessions:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            self._sessions[name] = ort.InferenceSession(self._bytes[name], options,
                                                        providers=["CPUExecutionProvider"])
        return self._sessions[name]

    def _check(self, endpoint, name, value):
        """The raw input checked against the endpoint's spec, then converted (never the other way)."""
        spec = next((i for i in self.manifest["endpoints"][endpoint]["inputs"] if i["name"] == name), None)
        if spec is None:
            raise BundleError(f"{endpoint} takes no input {name!r}")
        integer = spec["dtype"] == "int32"
        shown = "[" + ", ".join("K" if (endpoint, name, i) == ("log_prob", "eps", 0) else ("N" if e is None else str(e))
                                for i, e in enumerate(spec["shape"])) + f"] {spec['dtype']}"
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as err:  # ragged nested lists and the like
            raise BundleError(f"{endpoint}: {name} must be an array of shape {shown}: {err}") from None
        if arr.dtype.kind not in ("iu" if integer else "iuf"):
            kind = "integers" if integer else "numbers"
            raise BundleError(f"{endpoint}: {name} must hold {kind} ({shown}), got dtype {arr.dtype}")
        expected = spec["shape"]
        if arr.ndim != len(expected) or any(e is not None and e != a for e, a in zip(expected, arr.shape)):
            raise BundleError(f"{endpoint}: {name} must have shape {shown}, got {list(arr.shape)}")
        if arr.dtype.kind == "f":
            bad = ~np.isfinite(arr)
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                raise BundleError(f"{endpoint}: {name} holds {int(bad.sum())} NaN/inf values (first at index {first})")
            if np.abs(arr).max(initial=0) > np.finfo(np.float32).max:
                raise BundleError(f"{endpoint}: {name} holds values too large for float32")
        if integer:
            if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
                raise BundleError(f"{endpoint}: {name} holds values outside int32")
            if name == "labels" and self.num_classes is not None and arr.size and (
                    arr.min() < 0 or arr.max() >= self.num_classes):
                bad = (arr < 0) | (arr >= self.num_classes)
                raise BundleError(f"{endpoint}: labels must be in 0..{self.num_classes - 1}; {int(bad.sum())} are "
                                  f"not (first at index {int(np.argwhere(bad)[0][0])}: {arr[bad][0]})")
        if name in ("uniform", "component_uniform") and arr.size and (arr.min() < 0 or arr.max() > 1):
            raise BundleError(f"{endpoint}: {name} must be uniform noise in [0, 1]")
        return arr.astype(np.int32 if integer else np.float32)

    def run(self, endpoint, **inputs):
        """Run an endpoint with named inputs; returns ``{output name: array}``."""
        if endpoint not in self.manifest["endpoints"]:
            raise BundleError(f"unknown endpoint {endpoint!r}; the bundle has {', '.join(self.endpoints)}")
        spec = self.manifest["endpoints"][endpoint]
        names = [i["name"] for i in spec["inputs"]]
        session = self._session(endpoint)
        graph_inputs = sorted(i.name for i in session.get_inputs())
        if graph_inputs != sorted(names):
            raise BundleError(f"{endpoint}: the ONNX graph takes {', '.join(graph_inputs)}, the manifest lists "
                              f"{', '.join(names)} (corrupt bundle)")
        missing = [n for n in names if n not in inputs]
        if missing:
            raise BundleError(f"{endpoint}: missing input(s) {', '.join(missing)}")
        extra = [n for n in inputs if n not in names]
        if extra:
            raise BundleError(f"{endpoint} takes no input(s) {', '.join(extra)}; it takes {', '.join(names)}")
        arrays = {name: self._check(endpoint, name, inputs[name]) for name in names}
        sizes = {n: (a.shape[1] if (endpoint == "log_prob" and n == "eps") else a.shape[0]) for n, a in arrays.items()}
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{n}: {v}" for n, v in sizes.items())
            raise BundleError(f"{endpoint}: inputs disagree on the batch size N ({shown}; log_prob's eps is [K, N, D])")
        if min(sizes.values()) < 1 or (endpoint == "log_prob" and arrays["eps"].shape[0] < 1):
            raise BundleError(f"{endpoint}: empty batch (N and K must be at least 1)")
        # fed and fetched by name (a manifest without onnx_name: the graph's outputs in order)
        graph_outputs = [o.name for o in session.get_outputs()]
        wanted = [o.get("onnx_name") for o in spec["outputs"]]
        if None in wanted:
            wanted = graph_outputs
        if len(wanted) != len(spec["outputs"]) or not set(wanted) <= set(graph_outputs):
            raise BundleError(f"{endpoint}: the ONNX graph returns {', '.join(graph_outputs)}, the manifest lists "
                              f"{', '.join(o['name'] for o in spec['outputs'])} (corrupt bundle)")
        try:
            outputs = session.run(wanted, arrays)
        except Exception as err:  # onnxruntime's own checks: reported as a bad input, never a crash
            raise BundleError(f"{endpoint}: the inputs were rejected: {str(err).splitlines()[0][:300]}") from None
        return {o["name"]: v for o, v in zip(spec["outputs"], outputs)}

    # -- conveniences with numpy noise (float64 draws; run() converts every input to its spec dtype)
    def _labels(self, n, labels, cycle=False):
        """``{"labels": ...}`` for a conditional model: one label per example (or one for all);
        ``cycle=True`` (sampling only) cycles through the classes when none are given."""
        if self.num_classes is None:
            if labels is not None:
                raise BundleError("labels given to an unconditional model")
            return {}
        if labels is None:
            if not cycle:
                raise BundleError(f"this model is conditional: give labels (integers in 0..{self.num_classes - 1})")
            labels = np.arange(n) % self.num_classes
        try:
            arr = np.asarray(labels)
        except (ValueError, TypeError) as err:
            raise BundleError(f"labels must be integers: {err}") from None
        if arr.dtype.kind not in "iu":
            raise BundleError(f"labels must be integers in 0..{self.num_classes - 1}, got dtype {arr.dtype}")
        if arr.ndim == 0:
            arr = np.full(n, arr)
        if arr.shape != (n,):
            raise BundleError(f"labels must be one integer or {n} integers (one per example), got shape {list(arr.shape)}")
        return {"labels": arr}

    @staticmethod
    def _rng(seed):
        if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0):
            raise BundleError(f"seed must be a non-negative integer, got {seed!r}")
        return np.random.default_rng(seed)

    def _uniform(self, n, rng):
        return {"uniform": rng.uniform(size=(n,) + self.input_shape)} if self.needs_uniform else {}

    @staticmethod
    def _batch(name, value):
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as err:
            raise BundleError(f"{name} must be an array: {err}") from None
        if arr.ndim == 0:
            raise BundleError(f"{name} must be a batch (an array with the examples along axis 0), got a scalar")
        return arr

    def encode(self, x, labels=None):
        """Posterior parameters of images x [N, *input_shape] (labels required by conditional models)."""
        x = self._batch("x", x)
        return self.run("encode", x=x, **self._labels(len(x), labels))

    def decode(self, z, labels=None):
        """Decoder parameters of codes z [N, latent_dim] (labels required by conditional models)."""
        z = self._batch("z", z)
        return self.run("decode", z=z, **self._labels(len(z), labels))

    def images(self, z, seed=None, labels=None):
        """Images decoded from codes z [N, latent_dim]: E[x|z], or a PixelCNN decoder's draw with
        pixel noise from ``seed``."""
        if "images" not in self.manifest["endpoints"]:
            raise BundleError("this bundle has no images endpoint (exported before kvae 0.1's explorer): re-export it")
        z = self._batch("z", z)
        return self.run("images", z=z, **self._labels(len(z), labels), **self._uniform(len(z), self._rng(seed)))["images"]

    def log_prob(self, x, k=100, seed=None, labels=None):
        """Importance-weighted bound on log p(x) with k samples per example (nats, [N])."""
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise BundleError(f"k must be a positive integer, got {k!r}")
        if "log_prob" not in self.manifest["endpoints"]:
            raise BundleError("this model has no log_prob endpoint (its encoder is deterministic)")
        x = self._batch("x", x)
        eps = self._rng(seed).standard_normal((k, len(x), self.latent_dim))
        return self.run("log_prob", x=x, eps=eps, **self._labels(len(x), labels))["log_prob"]

    def sample(self, n, seed=None, labels=None, source="prior"):
        """n images from the prior (``source="prior"``) or the ex-post Gaussian mixture ("density")."""
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise BundleError(f"n must be a positive integer, got {n!r}")
        rng = self._rng(seed)
        eps = rng.standard_normal((n, self.latent_dim))
        extra = {**self._labels(n, labels, cycle=True)}
        if source == "density":
            if "sample_density" not in self.manifest["endpoints"]:
                raise BundleError("this bundle has no ex-post density: run `kvae fit-density` before exporting")
            endpoint = "sample_density"
            if any(i["name"] == "component_uniform" for i in self.manifest["endpoints"][endpoint]["inputs"]):
                extra["component_uniform"] = rng.uniform(size=n)  # a Gaussian mixture's component choice
        elif source == "prior":
            endpoint = "sample"
            if any(i["name"] == "component_uniform" for i in self.manifest["endpoints"]["sample"]["inputs"]):
                extra["component_uniform"] = rng.uniform(size=n)  # a mixture prior's component choice
        else:
            raise BundleError(f"source must be 'prior' or 'density', got {source!r}")
        return self.run(endpoint, eps=eps, **extra, **self._uniform(n, rng))["images"]

    def reconstruct(self, x, seed=None, labels=None):
        """Images decoded from one draw of z ~ q(z|x) per example."""
        x = self._batch("x", x)
        rng = self._rng(seed)
        eps = rng.standard_normal((len(x), self.latent_dim))
        return self.run("reconstruct", x=x, eps=eps, **self._labels(len(x), labels),
                        **self._uniform(len(x), rng))["images"]
