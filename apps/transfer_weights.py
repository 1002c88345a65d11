"""Warm-start weights for a changed model: copy every variable whose path and shape match from a run's
best (averaged) weights; the rest keep their fresh initialisation.  How the ladder VAE with a PixelCNN
decoder started from the Bernoulli ladder run (docs/results.md, the long runs):

    python apps/transfer_weights.py /work/runs/lvae-long lvaepx-init.weights.h5 \\
        --options '{"groups": 3, "channels": 64, "latent_channels": 32, "blocks": 2, "pixelcnn_layers": 6}'
    kvae train --model lvae ... --pixelcnn-layers 6 --init-weights lvaepx-init.weights.h5 --out RUN_DIR

prints what was copied and what starts fresh.
"""
import argparse
import json
import os


def transfer(run_dir, out, options, weights="best/best.weights.h5", seed=0):
    """Write ``out`` (a ``.weights.h5`` of the model ``options`` describe, same class as the run's) and
    return (paths copied, paths left fresh)."""
    from kvae.training.transfer import build_every_variable, copy_shared_weights, run_model_with_weights

    old, config = run_model_with_weights(run_dir, os.path.join(run_dir, weights))
    shape = tuple(config["model_config"]["input_shape"])
    new = build_every_variable(type(old)(input_shape=shape, seed=seed, **options))  # a label for conditional
    copied, fresh = copy_shared_weights(old, new)
    new.save_weights(out)
    return copied, fresh


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("out", help="the .weights.h5 to write")
    parser.add_argument("--options", required=True, help="the new model's constructor options, as JSON")
    parser.add_argument("--weights", default="best/best.weights.h5", help="inside run_dir")
    args = parser.parse_args()
    from kvae.errors import KvaeError

    try:
        copied, fresh = transfer(args.run_dir, args.out, json.loads(args.options), args.weights)
    except KvaeError as err:
        raise SystemExit(f"transfer_weights.py: error: {err}") from None
    print(f"copied {len(copied)} variables; fresh: {', '.join(fresh) or 'none'}")


if __name__ == "__main__":
    main()
