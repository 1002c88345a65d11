"""The importance-sampled NLL of the ladder VAE with a PixelCNN decoder (the long run's configuration): the
bottom-up pass computed once per batch and shared by its chunks of draws (``importance_context``, what
``model.log_likelihood`` does) against recomputing it in every chunk (the baseline, the same draws through
:func:`kvae.core.importance.chunked_log_likelihood` without a context), alternated in ``--repeats`` rounds.

Both give the same values (checked: the largest difference is reported); the figure is seconds per
batch of 100 examples at k draws, medians of the rounds, in one process of the machine's threads.
The model's weights are its initial ones: the cost does not depend on them.

    python benchmarks/importance_context.py [--quick] [--out benchmarks/importance_context.json]
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402

CONFIG = dict(groups=3, channels=64, latent_channels=32, blocks=2, pixelcnn_layers=6)


def run(quick, data_dir=None):
    from kvae.core.importance import chunked_log_likelihood
    from kvae.training.runs import build_model

    k, batch, repeats = (4, 10, 2) if quick else (40, 100, 5)
    x = (np.random.default_rng(0).random((batch, 28, 28, 1)) < 0.3).astype("float32")
    model = build_model("lvae", (28, 28, 1), **CONFIG)
    seed = model._seed(0)

    def shared():
        return model.log_likelihood(x, k=k, batch_size=batch, seed=0).numpy()

    def per_chunk():
        return chunked_log_likelihood(lambda xb, yb, m, s: model._log_weights(xb, yb, m, s), x, None, k, seed, batch,
                                      lambda b: model.draws_per_chunk(b, k)).numpy()

    difference = float(np.abs(shared() - per_chunk()).max())
    timed = _timing.interleaved_calls({"shared_bottom_up": shared, "bottom_up_per_chunk": per_chunk}, repeats)
    return {
        "benchmark": "importance_context",
        "model": "LadderVAE with a local PixelCNN decoder, the long run's sizes (3 groups of 32 channels at 14x14, "
                 "7x7, 4x4; 64-channel paths; 2 residual blocks per group and path; PixelCNN 6 x 3x3, 12 filters)",
        "quick": quick,
        "config": {**CONFIG, "k": k, "batch_size": batch, "repeats": repeats,
                   "draws_per_chunk": model.draws_per_chunk(batch, k)},
        "baseline": "bottom_up_per_chunk: the same draws, the bottom-up pass recomputed in every chunk",
        "max_abs_difference": difference,
        "results": timed,
        "speedup": _timing.ratio(timed, "bottom_up_per_chunk", "shared_bottom_up", key="calls"),
        "command": "python benchmarks/importance_context.py --out benchmarks/importance_context.json",
    }


if __name__ == "__main__":
    _timing.main(run, __doc__)
