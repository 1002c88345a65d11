"""Warm starts across a model change (kvae.training.transfer): shared variables copied exactly, the
new decoder left as initialised, and the transferred model's ELBO terms of the shared parts unchanged."""
import numpy as np

import kvae
from kvae.training.transfer import copy_shared_weights


def ladder(**kw):
    return kvae.LadderVAE(input_shape=(8, 8, 1), groups=2, channels=8, latent_channels=2, blocks=1, **kw)


def test_a_pixelcnn_ladder_starts_from_a_bernoulli_ladder():
    x = (np.random.RandomState(0).uniform(size=(4, 8, 8, 1)) > 0.5).astype("float32")
    source, target = ladder(seed=1), ladder(seed=2, pixelcnn_layers=2, pixelcnn_filters=4)
    source(x), target(x)
    before = {w.path: w.numpy().copy() for w in target.weights}
    copied, kept = copy_shared_weights(source, target)
    by_path = {w.path.split("/", 1)[-1] if w.path.startswith(source.name + "/") else w.path: w
               for w in source.weights}
    assert copied and kept and len(copied) + len(kept) == len(target.weights)
    for w in target.weights:
        if w.path in copied:
            path = w.path.split("/", 1)[-1] if w.path.startswith(target.name + "/") else w.path
            np.testing.assert_array_equal(w.numpy(), by_path[path].numpy(), err_msg=w.path)
        else:
            np.testing.assert_array_equal(w.numpy(), before[w.path], err_msg=w.path)
    # exactly the decoder's own variables start fresh: everything under likelihood/, nothing else
    assert all(p.startswith("likelihood/") for p in kept) and any("pixelcnn" in p for p in kept)
    assert not any(p.startswith("likelihood/") for p in copied)
    # the shared parts compute what the source's did: same bottom-up Gaussians and the same KL per group
    for a, b in zip(source.encode_params(x), target.encode_params(x)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    seed = np.array([3, 4], np.int32)
    for ga, gb in zip(source.latent_groups(x, seed=seed), target.latent_groups(x, seed=seed)):
        np.testing.assert_allclose(ga.kl.numpy(), gb.kl.numpy(), rtol=1e-6)
