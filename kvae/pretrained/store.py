"""Pretrained models shipped inside the package: list, load, or write one out as a run directory.

Each model lives in ``kvae/pretrained/files/NAME/`` as three files:

* ``model.json``: the model's Keras serialisation (class, constructor config, build config);
* ``weights.npz``: every model variable in ``model.weights`` order, floating ones stored as
  ``float16`` (or ``float32`` where the manifest says so) and restored to the variables' dtype;
* ``manifest.json``: what was trained and measured (data, epochs, wall time, commit, NLL with its
  k and n, the effect of the storage dtype on NLL), the run's ``config.json``, each variable's
  path and shape, and the sha256 of the two other files, checked on every load.

``kvae pretrained list`` shows them; ``kvae pretrained fetch NAME --out RUN_DIR`` writes a run
directory every other command reads (evaluate, sample, export, reconstruct, fit-density).
Nothing is downloaded.  :func:`pack` makes these files from a trained run directory.
"""
import json
import os

import numpy as np

from kvae.errors import ConfigError, RunError
from kvae.export.bundle import _sha256  # the bundle manifest's file hash

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "files")
FILES = ("model.json", "weights.npz")


def names(root=None):
    """Names of the shipped models, sorted."""
    root = ROOT if root is None else root
    if not os.path.isdir(root):
        return []
    return sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "manifest.json")))


def _directory(name, root=None):
    root = ROOT if root is None else root
    available = names(root)
    if not isinstance(name, str) or name not in available:
        raise RunError(f"no pretrained model {name!r}; available: {', '.join(available) or 'none'}")
    return os.path.join(root, name)


def manifest(name, root=None):
    """The manifest of a shipped model (a dict: description, numbers, run config, file hashes)."""
    root = ROOT if root is None else root
    path = os.path.join(_directory(name, root), "manifest.json")
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as err:
        raise RunError(f"{path} is not valid JSON ({err}): the installed package is damaged") from None


def verify(name, root=None):
    """Check the files of ``name`` against the sha256 its manifest records; raise RunError if not."""
    root = ROOT if root is None else root
    directory = _directory(name, root)
    recorded = manifest(name, root).get("sha256", {})
    for file in FILES:
        path = os.path.join(directory, file)
        if not os.path.isfile(path):
            raise RunError(f"pretrained model {name!r}: {file} is missing from {directory}")
        actual = _sha256(path)
        if recorded.get(file) != actual:
            raise RunError(f"pretrained model {name!r}: {file} has sha256 {actual[:16]}…, the manifest records "
                           f"{str(recorded.get(file))[:16]}…: the file is damaged or was changed")
    return True


def _quantise(model, dtype):
    """(arrays, descriptions) of ``model.weights`` with floating variables cast to ``dtype``."""
    arrays, table = {}, []
    for i, v in enumerate(model.weights):
        value = np.asarray(v.numpy())
        if np.issubdtype(value.dtype, np.floating):
            value = value.astype(dtype)
        arrays[f"w{i:04d}"] = value
        table.append({"path": v.path, "shape": list(value.shape), "dtype": str(v.dtype)})
    return arrays, table


def _assign(model, arrays, table, source):
    if len(table) != len(model.weights):
        raise RunError(f"{source}: {len(table)} stored variables, the model has {len(model.weights)}")
    for i, (v, entry) in enumerate(zip(model.weights, table)):
        value = arrays[f"w{i:04d}"]
        # in model.weights order; the layers' auto-numbered names differ between processes
        if v.path.rsplit("/", 1)[-1] != entry["path"].rsplit("/", 1)[-1] or list(v.shape) != list(value.shape):
            raise RunError(f"{source}: variable {i} is {entry['path']} {list(value.shape)}, the model's is "
                           f"{v.path} {list(v.shape)}")
        v.assign(value.astype(np.dtype(str(v.dtype))) if np.issubdtype(value.dtype, np.floating) else value)


def quantised_copy(model, dtype="float16"):
    """A copy of ``model`` whose floating weights went through ``dtype`` storage (what :func:`pack`
    ships), to measure what the storage costs before shipping."""
    import keras

    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    arrays, table = _quantise(model, dtype)
    _assign(copy, arrays, table, "quantised copy")
    return copy


def load(name, root=None, compile=False):
    """The pretrained Keras model ``name`` (float32 variables), after checking its files' sha256.

    ``compile``: compile it with the optimizer its run trained with (the shipped files hold no
    optimizer state: the moments start at zero); by default it is not compiled, as for inference.
    """
    root = ROOT if root is None else root
    import keras

    from kvae import models  # noqa: F401  (registers the serialisable classes)

    verify(name, root)
    directory = _directory(name, root)
    with open(os.path.join(directory, "model.json")) as f:
        config = json.load(f)
    if not compile:
        config.pop("compile_config", None)
    model = keras.saving.deserialize_keras_object(config)
    with np.load(os.path.join(directory, "weights.npz")) as stored:
        arrays = {k: stored[k] for k in stored.files}
    _assign(model, arrays, manifest(name, root)["variables"], f"pretrained model {name!r}")
    return model


def fetch(name, out, root=None, with_optimizer=False):
    """Write ``name`` as a run directory ``out`` (``model.keras``, ``config.json``, ``pretrained.json``).

    ``model.keras`` holds the model alone; ``with_optimizer`` adds the run's optimizer (compiled, its
    variables built at zero: the package ships no moments), for ``kvae train --init-weights`` or
    ``keras.models.load_model`` and ``fit`` to continue training.
    """
    root = ROOT if root is None else root
    from kvae.training.files import save_model, write_json
    from kvae.training.runs import CONFIG_FILE, MODEL_FILE

    model = load(name, root, compile=with_optimizer)
    if with_optimizer:
        model.optimizer.build(model.trainable_variables)
    info = manifest(name, root)
    if os.path.exists(os.path.join(out, MODEL_FILE)):
        raise RunError(f"{out} already holds a {MODEL_FILE}; choose another --out")
    os.makedirs(out, exist_ok=True)
    save_model(model, os.path.join(out, MODEL_FILE))
    write_json(os.path.join(out, CONFIG_FILE), info["run_config"], indent=2)
    write_json(os.path.join(out, "pretrained.json"),
               {k: v for k, v in info.items() if k not in ("variables", "run_config")}, indent=2)
    return out


def pack(run_dir, name, root=None, dtype="float16", description="", measured=None):
    """Store the model of ``run_dir`` as the pretrained model ``name`` under ``root``.

    ``measured``: the numbers to ship (NLL, k, n, epochs, wall time, commit, ...), recorded as
    given.  ``dtype``: storage of floating variables (float16 or float32).
    """
    root = ROOT if root is None else root
    import keras

    from kvae.training.files import write_json
    from kvae.training.runs import CONFIG_FILE, load_run

    if dtype not in ("float16", "float32"):
        raise ConfigError(f"dtype must be float16 or float32, got {dtype!r}")
    model, _ = load_run(run_dir)
    with open(os.path.join(run_dir, CONFIG_FILE)) as f:
        run_config = json.load(f)
    directory = os.path.join(root, name)
    os.makedirs(directory, exist_ok=True)
    arrays, table = _quantise(model, dtype)
    np.savez_compressed(os.path.join(directory, "weights.npz"), **arrays)
    write_json(os.path.join(directory, "model.json"), keras.saving.serialize_keras_object(model), indent=1,
               default=float)
    info = {"name": name, "description": description, "storage_dtype": dtype, "measured": measured or {},
            "run_config": run_config, "variables": table,
            "sha256": {file: _sha256(os.path.join(directory, file)) for file in FILES}}
    write_json(os.path.join(directory, "manifest.json"), info, indent=1, default=float)
    return directory
