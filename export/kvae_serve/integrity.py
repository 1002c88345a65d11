"""A bundle's integrity, checked before anything in it runs.

1. ``bundle.sha256`` (``<sha256 of manifest.json's bytes>  manifest.json``, ``sha256sum -c`` format)
   is checked against the manifest's bytes exactly as written: any edit of a value is caught.
   With a key, ``bundle.hmac`` (HMAC-SHA256 of the same bytes, same format) is required too.
2. The manifest's structure: types of every field the runtime reads, and endpoint shapes that
   agree with the model's ``input_shape`` and ``latent_dim``; a duplicate key is refused.
3. Every path is confined to the bundle (relative, no ``..``, no symlink leading out).
4. Every listed file (ONNX, SavedModel, explorer.json) matches its sha256, every ONNX file and the
   explorer data are listed, and no file in the bundle is unlisted.

A bundle without ``bundle.sha256`` (exported before it existed) is refused: its manifest cannot
be verified, and a server that started on it would blame clients for the manifest's errors.
"""
import hashlib
import hmac
import json
import os
import re

DIGEST_FILE, HMAC_FILE = "bundle.sha256", "bundle.hmac"
ENDPOINTS = ("encode", "decode", "images", "reconstruct", "sample", "sample_density", "log_prob")
_SEALS = ("manifest.json", DIGEST_FILE, HMAC_FILE)


class BundleError(ValueError):
    """A bundle is missing or corrupt, or an input does not fit an endpoint."""


def confined(root, rel, what="path"):
    """The real path of ``rel`` inside the bundle ``root`` (itself a real path); raises BundleError
    for an absolute path, ``..``, or a symlink that leads out of the bundle."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel:
        raise BundleError(f"{root}: the manifest's {what} {rel!r} is not a relative path")
    if os.path.isabs(rel) or any(part in ("..", "") for part in rel.split("/")):
        raise BundleError(f"{root}: the manifest's {what} {rel!r} leaves the bundle (absolute or '..')")
    real = os.path.realpath(os.path.join(root, rel))
    if not real.startswith(root + os.sep):
        raise BundleError(f"{root}: the manifest's {what} {rel!r} is a symlink out of the bundle")
    return real


def _sealed_line(root, name, expected, kind):
    file = os.path.join(root, name)
    try:
        with open(file, "rb") as f:
            line = f.read(200)
    except FileNotFoundError:
        return None
    match = re.fullmatch(rb"([0-9a-f]{64})  manifest\.json\n?", line)
    if match is None:
        raise BundleError(f"{file} is not one line '<64 hex digits>  manifest.json'")
    if not hmac.compare_digest(match.group(1).decode(), expected):
        raise BundleError(f"{file}: manifest.json does not match its {kind} (edited or corrupt bundle)")
    return True


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def read_manifest(root, verify=True, key=None):
    """The parsed, sealed and well-formed manifest of the bundle directory ``root`` (a real path)."""
    file = os.path.join(root, "manifest.json")
    if not os.path.isfile(file):
        raise BundleError(f"{file} not found: export a model with `kvae export RUN_DIR --out {root}`")
    with open(file, "rb") as f:
        content = f.read()
    if verify:
        if _sealed_line(root, DIGEST_FILE, hashlib.sha256(content).hexdigest(), "sha256") is None:
            raise BundleError(f"{root}/{DIGEST_FILE} is missing: the manifest cannot be verified (a bundle "
                              f"exported before kvae-serve 0.3); re-export it with `kvae export RUN_DIR --out "
                              f"{root} --overwrite`")
    if key is not None:
        mac = hmac.new(key, content, hashlib.sha256).hexdigest()
        if _sealed_line(root, HMAC_FILE, mac, "HMAC under the given key") is None:
            raise BundleError(f"{root}/{HMAC_FILE} is missing: a key was given but the bundle is not signed "
                              f"(export it with `kvae export RUN_DIR --out {root} --key-file KEY`)")
    try:
        manifest = json.loads(content, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        raise BundleError(f"{file} is not valid JSON: {err}") from None
    check_structure(manifest, file)
    return manifest


def _require(ok, file, message):
    if not ok:
        raise BundleError(f"{file}: {message} (corrupt bundle)")


def _is_int(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_structure(manifest, file):
    """Raise BundleError naming the first field of ``manifest`` the runtime cannot trust."""
    if not isinstance(manifest, dict) or manifest.get("format") != "kvae-bundle/1":
        found = manifest.get("format") if isinstance(manifest, dict) else manifest
        raise BundleError(f"{file}: unknown bundle format {found!r}"[:400])
    for key in ("endpoints", "model"):
        if not isinstance(manifest.get(key), dict):
            raise BundleError(f"{file}: {key!r} is missing or not an object (corrupt bundle)")
    model = manifest["model"]
    shape = model.get("input_shape")
    _require(isinstance(shape, list) and 1 <= len(shape) <= 4 and all(_is_int(d, 1) for d in shape), file,
             f"model.input_shape must be a list of 1 to 4 positive integers, got {shape!r}"[:200])
    _require(_is_int(model.get("latent_dim"), 1), file,
             f"model.latent_dim must be a positive integer, got {model.get('latent_dim')!r}"[:200])
    classes = model.get("num_classes")
    _require(classes is None or _is_int(classes, 1), file,
             f"model.num_classes must be null or a positive integer, got {classes!r}"[:200])
    _require(isinstance(model.get("needs_uniform", False), bool), file, "model.needs_uniform must be true or false")
    files = manifest.get("files", {})
    _require(isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str) and re.fullmatch(
        "[0-9a-f]{64}", v) for k, v in files.items()), file, "files must map paths to sha256 hex digests")
    for key in ("explorer", "savedmodel"):
        _require(manifest.get(key) is None or isinstance(manifest[key], str), file, f"{key} must be a path or null")
    d, x = model["latent_dim"], [None, *shape]
    expected = {"x": (x, "float32"), "z": ([None, d], "float32"), "eps": ([None, d], "float32"),
                "uniform": (x, "float32"), "component_uniform": ([None], "float32"), "labels": ([None], "int32")}
    for name, spec in manifest["endpoints"].items():
        _require(name in ENDPOINTS, file, f"unknown endpoint {name!r}"[:200])
        _require(isinstance(spec, dict) and isinstance(spec.get("onnx"), str), file, f"endpoints.{name}.onnx "
                 "must be a path")
        inputs, outputs = spec.get("inputs"), spec.get("outputs")
        _require(isinstance(inputs, list) and inputs and all(isinstance(i, dict) for i in inputs), file,
                 f"endpoints.{name}.inputs must be a list of objects")
        names = [i.get("name") for i in inputs]
        _require(len(set(map(str, names))) == len(names), file, f"endpoints.{name}.inputs repeat a name")
        for spec_in in inputs:
            iname = spec_in.get("name")
            _require(iname in expected and (iname != "labels" or classes is not None), file,
                     f"endpoints.{name} has an unknown input {iname!r}"[:200])
            want_shape, want_dtype = expected[iname]
            if name == "log_prob" and iname == "eps":
                want_shape = [None, None, d]
            got = [spec_in.get("shape"), spec_in.get("dtype")]
            _require(got == [want_shape, want_dtype], file, f"endpoints.{name}.inputs.{iname} is "
                     f"{got[0]!r} {got[1]!r}; the model's facts give {want_shape} {want_dtype}"[:300])
        _require(isinstance(outputs, list) and outputs and all(
            isinstance(o, dict) and isinstance(o.get("name"), str) and isinstance(o.get("onnx_name", ""), str)
            for o in outputs), file, f"endpoints.{name}.outputs must be a list of {{name, onnx_name}} objects")


def verify_files(root, manifest, verify=True):
    """``{path: bytes}`` of the endpoints' ONNX files and explorer.json, read once; with ``verify``
    every listed file is checked against its sha256 and unlisted files are refused."""
    listed = manifest.get("files", {})
    wanted = [spec["onnx"] for spec in manifest["endpoints"].values()]
    if manifest.get("explorer"):
        wanted.append(manifest["explorer"])
    contents = {}
    for rel in wanted:
        real = confined(root, rel, "file")
        shown = os.path.join(root, rel)
        if not os.path.isfile(real):
            raise BundleError(f"{shown} is missing from the bundle")
        with open(real, "rb") as f:
            contents[rel] = f.read()
        if verify:
            if rel not in listed:
                raise BundleError(f"{shown} has no sha256 entry in the manifest: the bundle cannot be verified")
            if not hmac.compare_digest(hashlib.sha256(contents[rel]).hexdigest(), listed[rel]):
                raise BundleError(f"{shown} does not match the sha256 in the manifest (corrupt bundle)")
    if manifest.get("savedmodel"):
        confined(root, manifest["savedmodel"], "savedmodel")
    if not verify:
        return contents
    for rel in sorted(set(listed) - set(contents)):
        real = confined(root, rel, "file")
        if not os.path.isfile(real):
            raise BundleError(f"{os.path.join(root, rel)} is listed in the manifest but missing from the bundle")
        digest = hashlib.sha256()
        with open(real, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if not hmac.compare_digest(digest.hexdigest(), listed[rel]):
            raise BundleError(f"{os.path.join(root, rel)} does not match the sha256 in the manifest (corrupt bundle)")
    for folder, dirs, names in os.walk(root):
        for name in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            rel = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
            if rel not in listed and rel not in _SEALS:
                raise BundleError(f"{os.path.join(root, rel)} is in the bundle but not listed in the manifest")
    return contents
