"""Warm starts across a model change: copy the variables two models share."""


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
