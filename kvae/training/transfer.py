"""Warm starts across a model change: a run's model with a weights file of it, and the variables two
models share."""
import json
import os
import tempfile

import numpy as np

from kvae.errors import RunError


def build_every_variable(model):
    """Call ``model`` once on a zero example (with a label 0 for conditional models), which creates the
    variables a model does not create in its constructor; returns the model."""
    x = np.zeros((1, *model.data_shape), np.float32)
    model((x, np.zeros((1,), np.int32)) if model.conditional else x)
    return model


def weights_file_entries(path):
    """{dataset path: shape} of a ``.weights.h5`` file: every variable of the model it holds (an
    optimizer's state, which a compiled model saves too, is not the model's)."""
    import h5py

    entries = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: entries.__setitem__(name, tuple(obj.shape))
                     if isinstance(obj, h5py.Dataset) and not name.startswith("optimizer/") else None)
    return entries


def load_matching_weights(model, weights, described_by):
    """``model.load_weights(weights)`` when the file holds exactly the variables (paths and shapes) that
    ``model.save_weights`` writes; otherwise a one-line :class:`~kvae.errors.RunError` naming the file and
    ``described_by`` (what the model was built from), not Keras' traceback, and no partial load (Keras
    skips a file's variables the model lacks without a word)."""
    if not os.path.isfile(weights):
        raise RunError(f"weights file {weights} not found")
    try:
        got = weights_file_entries(weights)
    except OSError as err:
        raise RunError(f"{weights} is not a readable .weights.h5 file ({err})") from None
    with tempfile.TemporaryDirectory() as tmp:
        model.save_weights(os.path.join(tmp, "model.weights.h5"))
        want = weights_file_entries(os.path.join(tmp, "model.weights.h5"))
    if got != want:
        extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
        shaped = sorted(p for p in set(got) & set(want) if got[p] != want[p])
        parts = [f"{len(extra)} variables the model lacks (e.g. {extra[0]})"] if extra else []
        parts += [f"none of {len(missing)} of the model's variables (e.g. {missing[0]})"] if missing else []
        parts += [f"{len(shaped)} of other shapes (e.g. {shaped[0]}: {got[shaped[0]]} in the file, "
                  f"{want[shaped[0]]} in the model)"] if shaped else []
        raise RunError(f"{weights} does not hold the weights of the model {described_by} describes: it has "
                       f"{'; '.join(parts)} (weights of a model with other options?)")
    model.load_weights(weights)
    return model


def run_model_with_weights(run_dir, weights):
    """The model of ``run_dir`` (rebuilt from its config.json, :func:`build_every_variable`) with the
    ``.weights.h5`` file ``weights`` loaded (:func:`load_matching_weights`): a checkpoint's or the best
    weights of a run that has no ``model.keras`` yet.

    Returns:
        (model, run config).

    Raises:
        RunError: config.json is missing or unreadable, or ``weights`` is missing or does not hold the
            variables of that model (one line naming the file).
    """
    from kvae import registry

    path = os.path.join(run_dir, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
        cls = registry.get("model", config["model"])
        model_config = config["model_config"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunError(f"cannot read the model of {path} ({getattr(err, 'strerror', None) or err!r}): is "
                       f"{run_dir} a kvae run directory?") from None
    model = build_every_variable(cls.from_config(model_config))
    return load_matching_weights(model, weights, path), config


def copy_shared_weights(source, target):
    """Assign each of ``target``'s variables the value of ``source``'s variable with the same path
    (below the model's own name) and shape (both models built); the others keep their values.

    How a changed model starts from a trained one, e.g. a ladder VAE with a PixelCNN decoder from a
    Bernoulli ladder VAE: the bottom-up and top-down paths and the prior carry over, the new decoder
    starts fresh.

    Returns:
      (paths copied, paths left as they were), in ``target.weights`` order.
    """
    def key(model, w):  # the model's own variables carry its (instance) name: compare without it
        prefix = model.name + "/"
        return w.path[len(prefix):] if w.path.startswith(prefix) else w.path

    by_path = {key(source, w): w for w in source.weights}
    copied, kept = [], []
    for w in target.weights:
        other = by_path.get(key(target, w))
        if other is not None and tuple(other.shape) == tuple(w.shape):
            w.assign(other.numpy())
            copied.append(w.path)
        else:
            kept.append(w.path)
    return copied, kept
