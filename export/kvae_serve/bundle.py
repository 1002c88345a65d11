"""Load a kvae bundle by its manifest and call its ONNX endpoints, with input checks."""
import json
import os
import time

import numpy as np
import onnxruntime as ort

from .integrity import BundleError, read_manifest, verify_files

#: samples (k x N) per log_prob session run: bounds its peak memory (see docs/export.md)
LOG_PROB_CHUNK = 4096


class Bundle:
    """The endpoints of an exported kvae model (see kvae.export).

    Loading checks the bundle whole before anything runs (:mod:`kvae_serve.integrity`: the manifest's
    ``bundle.sha256`` and, with ``key``, ``bundle.hmac``; its structure; paths confined to the bundle;
    every file's sha256), then creates every endpoint's onnxruntime session from the verified bytes
    and runs it once on a one-row input, so a bad bundle fails here with one line, never later.

    Args:
        path: the bundle directory.
        verify: check the digests (False skips them; structure, paths and test runs stay).
        key: bytes of the HMAC key the bundle was signed with (``kvae export --key-file``).
        threads: onnxruntime intra-op threads per session (0: onnxruntime's default, all cores).
        spinning: let onnxruntime's threads spin-wait between runs (off for a server: it burns CPU
            the other workers need).

    Raises:
        BundleError: the bundle is missing, edited, corrupt, or an endpoint fails its test run.
    """

    def __init__(self, path, verify=True, key=None, threads=0, spinning=True):
        self.path = path
        root = os.path.realpath(path)
        self.manifest = read_manifest(root, verify, key)
        self._bytes = verify_files(root, self.manifest, verify)
        self.explorer = self._explorer(root)
        model = self.manifest["model"]
        self.input_shape = tuple(model["input_shape"])
        self.latent_dim = int(model["latent_dim"])
        self.num_classes = model.get("num_classes")
        self.needs_uniform = bool(model.get("needs_uniform"))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self._sessions, self._fetch, self.row_seconds = {}, {}, {}
        for name, spec in self.manifest["endpoints"].items():
            self._load_session(root, name, spec, options)

    def _load_session(self, root, name, spec, options):
        """Create ``name``'s session, check its graph against the manifest and run it once."""
        file = os.path.join(root, spec["onnx"])
        try:
            session = ort.InferenceSession(self._bytes[spec["onnx"]], options,
                                           providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's parse errors
            raise BundleError(f"{file} is not a valid ONNX model: {str(err).splitlines()[0][:300]}") from None
        names = [i["name"] for i in spec["inputs"]]
        graph_inputs = sorted(i.name for i in session.get_inputs())
        if graph_inputs != sorted(names):
            raise BundleError(f"{name}: the ONNX graph takes {', '.join(graph_inputs)}, the manifest lists "
                              f"{', '.join(names)} (corrupt bundle)")
        # fetched by name (a manifest without onnx_name: the graph's outputs in order)
        graph_outputs = [o.name for o in session.get_outputs()]
        wanted = [o.get("onnx_name") for o in spec["outputs"]]
        if None in wanted:
            wanted = graph_outputs
        if len(wanted) != len(spec["outputs"]) or not set(wanted) <= set(graph_outputs):
            raise BundleError(f"{name}: the ONNX graph returns {', '.join(graph_outputs)}, the manifest lists "
                              f"{', '.join(o['name'] for o in spec['outputs'])} (corrupt bundle)")
        self._sessions[name], self._fetch[name] = session, wanted
        feeds = {}
        for i in spec["inputs"]:  # one row (and k=1): uniform noise 0.5, labels 0, the rest zeros
            shape = [1 if d is None else d for d in i["shape"]]
            feeds[i["name"]] = np.full(shape, 0.5 if "uniform" in i["name"] else 0,
                                       np.int32 if i["dtype"] == "int32" else np.float32)
        try:
            outputs = session.run(wanted, feeds)
            runs = []
            for _ in range(5):  # one row, warm: how a server schedules it; the least of 5, since one run
                start = time.perf_counter()  # preempted on a busy machine would send every request to a thread
                session.run(wanted, feeds)
                runs.append(time.perf_counter() - start)
            self.row_seconds[name] = min(runs)
        except Exception as err:
            raise BundleError(f"{file} failed its test run at load: {str(err).splitlines()[0][:300]}") from None
        for o, value in zip(spec["outputs"], outputs):
            if value.ndim == 0 or value.shape[0] != 1:
                raise BundleError(f"{file}: output {o['name']} of a one-row input has shape {list(value.shape)}, "
                                  "not one row (corrupt bundle)")

    def _explorer(self, root):
        """explorer.json (None when the bundle has none), already checked against its sha256."""
        name = self.manifest.get("explorer")
        if not name:
            return None
        file = os.path.join(root, name)
        try:
            data = json.loads(self._bytes[name])
        except ValueError as err:
            raise BundleError(f"{file} is not valid JSON: {err}") from None
        if not isinstance(data, dict) or data.get("format") != "kvae-explorer/1":
            raise BundleError(f"{file}: unknown explorer format")
        return data

    @property
    def endpoints(self):
        return sorted(self.manifest["endpoints"])

    def _session(self, name):
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

    def prepare(self, endpoint, **inputs):
        """The named inputs of ``endpoint`` checked against the manifest and converted (``{name: array}``),
        without running anything; :meth:`execute` runs them."""
        if endpoint not in self.manifest["endpoints"]:
            raise BundleError(f"unknown endpoint {endpoint!r}; the bundle has {', '.join(self.endpoints)}")
        names = [i["name"] for i in self.manifest["endpoints"][endpoint]["inputs"]]
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
        return arrays

    def execute(self, endpoint, arrays):
        """Run ``endpoint`` on inputs from :meth:`prepare`; returns ``{output name: array}``."""
        try:
            outputs = self._sessions[endpoint].run(self._fetch[endpoint], arrays)
        except Exception as err:  # onnxruntime's own checks: reported as a bad input, never a crash
            raise BundleError(f"{endpoint}: the inputs were rejected: {str(err).splitlines()[0][:300]}") from None
        return {o["name"]: v for o, v in zip(self.manifest["endpoints"][endpoint]["outputs"], outputs)}

    def run(self, endpoint, **inputs):
        """Run an endpoint with named inputs; returns ``{output name: array}``."""
        return self.execute(endpoint, self.prepare(endpoint, **inputs))

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
            raise BundleError(f"labels must be one integer or {n} integers (one per example), "
                              f"got shape {list(arr.shape)}")
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

    def inputs(self, kind, batch=None, seed=None, labels=None, source="prior"):
        """``(endpoint, {input: array})`` of a convenience call, its noise drawn from ``seed``, not run:
        ``kind`` is encode, decode, images, reconstruct (``batch``: x or z) or sample (``batch``: n)."""
        if kind == "sample":
            return self._sample_inputs(batch, seed, labels, source)
        if kind not in ("encode", "decode", "images", "reconstruct"):
            raise BundleError(f"unknown kind {kind!r}")
        if kind == "images" and "images" not in self.manifest["endpoints"]:
            raise BundleError("this bundle has no images endpoint (exported before kvae 0.1's explorer): re-export it")
        name = "x" if kind in ("encode", "reconstruct") else "z"
        arr = self._batch(name, batch)
        inputs = {name: arr, **self._labels(len(arr), labels)}
        if kind in ("images", "reconstruct"):
            rng = self._rng(seed)
            if kind == "reconstruct":
                inputs["eps"] = rng.standard_normal((len(arr), self.latent_dim))
            inputs.update(self._uniform(len(arr), rng))
        return kind, inputs

    def encode(self, x, labels=None):
        """Posterior parameters of images x [N, *input_shape] (labels required by conditional models)."""
        endpoint, inputs = self.inputs("encode", x, labels=labels)
        return self.run(endpoint, **inputs)

    def decode(self, z, labels=None):
        """Decoder parameters of codes z [N, latent_dim] (labels required by conditional models)."""
        endpoint, inputs = self.inputs("decode", z, labels=labels)
        return self.run(endpoint, **inputs)

    def images(self, z, seed=None, labels=None):
        """Images decoded from codes z [N, latent_dim]: E[x|z], or a PixelCNN decoder's draw with
        pixel noise from ``seed``."""
        endpoint, inputs = self.inputs("images", z, seed, labels)
        return self.run(endpoint, **inputs)["images"]

    def log_prob(self, x, k=100, seed=None, labels=None, chunk=LOG_PROB_CHUNK):
        """Importance-weighted bound on log p(x) with k samples per example (nats, [N]).

        Evaluated in chunks of at most ``chunk`` samples (k_c x N) per session run and combined
        exactly, log((1/K) sum_c k_c exp(lp_c)), so the peak memory is that of one chunk; the noise is
        drawn chunk by chunk from one generator, so the answer equals the unchunked one.
        """
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise BundleError(f"k must be a positive integer, got {k!r}")
        if "log_prob" not in self.manifest["endpoints"]:
            raise BundleError("this model has no log_prob endpoint (its encoder is deterministic)")
        x = self._batch("x", x)
        rng, n, labels = self._rng(seed), len(x), self._labels(len(x), labels)
        step = max(1, int(chunk) // max(n, 1))
        if k <= step:
            return self.run("log_prob", x=x, eps=rng.standard_normal((k, n, self.latent_dim)), **labels)["log_prob"]
        x = self._check("log_prob", "x", x)
        total, done = None, 0
        while done < k:
            m = min(step, k - done)
            eps = rng.standard_normal((m, n, self.latent_dim))
            part = self.run("log_prob", x=x, eps=eps, **labels)["log_prob"].astype(np.float64) + np.log(m)
            total = part if total is None else np.logaddexp(total, part)
            done += m
        return (total - np.log(k)).astype(np.float32)

    def sample(self, n, seed=None, labels=None, source="prior"):
        """n images from the prior (``source="prior"``) or the ex-post Gaussian mixture ("density")."""
        endpoint, inputs = self._sample_inputs(n, seed, labels, source)
        return self.run(endpoint, **inputs)["images"]

    def _sample_inputs(self, n, seed, labels, source):
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise BundleError(f"n must be a positive integer, got {n!r}")
        rng = self._rng(seed)
        eps = rng.standard_normal((n, self.latent_dim))
        extra = {**self._labels(n, labels, cycle=True)}
        if source == "density":
            if "sample_density" not in self.manifest["endpoints"]:
                raise BundleError("this bundle has no ex-post density: run `kvae fit-density` before exporting")
            endpoint = "sample_density"
        elif source == "prior":
            endpoint = "sample"
        else:
            raise BundleError(f"source must be 'prior' or 'density', got {source!r}")
        if any(i["name"] == "component_uniform" for i in self.manifest["endpoints"][endpoint]["inputs"]):
            extra["component_uniform"] = rng.uniform(size=n)  # a mixture's component choice
        return endpoint, {"eps": eps, **extra, **self._uniform(n, rng)}

    def reconstruct(self, x, seed=None, labels=None):
        """Images decoded from one draw of z ~ q(z|x) per example."""
        endpoint, inputs = self.inputs("reconstruct", x, seed, labels)
        return self.run(endpoint, **inputs)["images"]
