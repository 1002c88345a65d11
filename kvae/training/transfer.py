"""Warm starts across a model change: a run's model with a weights file of it, and the variables two
models share."""
import json
import os

import numpy as np


def run_model_with_weights(run_dir, weights):
    """The model of ``run_dir`` (rebuilt from its config.json, every variable built) with the
    ``.weights.h5`` file ``weights`` loaded: a checkpoint's or the best weights of a run that has no
    ``model.keras`` yet.  Returns (model, run config)."""
    from kvae import registry

    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    model = registry.get("model", config["model"]).from_config(config["model_config"])
    x = np.zeros((1, *config["model_config"]["input_shape"]), np.float32)
    model((x, np.zeros((1,), np.int32)) if model.conditional else x)  # a label for conditional models
    model.load_weights(weights)
    return model, config


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
