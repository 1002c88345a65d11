"""The ``kvae`` command: train, evaluate, sample and reconstruct.  Thin: parses, then calls the library."""
import argparse
import json
import os
import sys

_DATASETS = ("digits", "binarized_mnist", "mnist", "fashion_mnist")


def _ints(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _labels(text):
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class labels, got {text!r}") from None


def _parser():
    from .models import MODELS

    p = argparse.ArgumentParser(prog="kvae", description="Variational autoencoders on Keras 3 + TFP.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model and write a run directory",
                       description="Train a model; writes RUN_DIR/model.keras, config.json, history.json, "
                                   "TensorBoard logs and PNG grids of samples and reconstructions.")
    t.add_argument("--model", default="vae", choices=sorted(MODELS), help="model name (default: vae)")
    t.add_argument("--dataset", default="digits", choices=_DATASETS, help="data set (default: digits, bundled)")
    t.add_argument("--data-dir", help="directory holding local data files (or set KVAE_DATA_DIR)")
    t.add_argument("--network", default="mlp", choices=("mlp", "conv"), help="encoder/decoder builder")
    t.add_argument("--hidden", type=_ints, default=[500, 500], help="hidden sizes, e.g. 500,500")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=100)
    t.add_argument("--latent-dim", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--decoder", choices=("bernoulli", "gaussian", "pixelcnn"),
                   help="likelihood (default: pixelcnn for vlae; bernoulli for binary data, gaussian otherwise)")
    t.add_argument("--prior", choices=("normal", "maf", "iaf"),
                   help="prior p(z): N(0,I) or an autoregressive flow over it (default: maf for vlae, normal otherwise)")
    t.add_argument("--posterior", choices=("gaussian", "iaf"), help="q(z|x): Gaussian, or Gaussian + IAF steps")
    t.add_argument("--flow-steps", type=int, help="steps of the flow prior / IAF posterior (vlae: 4)")
    t.add_argument("--flow-hidden", type=_ints, help="MADE hidden sizes, e.g. 640,640,640")
    t.add_argument("--pixelcnn-layers", type=int, help="masked conv layers of the PixelCNN decoder (vlae: 6)")
    t.add_argument("--pixelcnn-kernel", type=int, help="kernel size of the masked convolutions (vlae: 3)")
    t.add_argument("--pixelcnn-filters", type=int, help="filters per PixelCNN layer (vlae: 12)")
    t.add_argument("--free-bits", type=float, help="KL floor in nats per latent dimension (vlae: 0.01)")
    t.add_argument("--optimizer", default="adam", choices=("adam", "adamax"))
    t.add_argument("--ema", type=float, help="Polyak/EMA weight averaging momentum, e.g. 0.998")
    t.add_argument("--limit", type=int, help="train on the first N training examples only")
    t.add_argument("--alpha", type=float, help="infovae: alpha (KL weight is 1 - alpha; default 1)")
    t.add_argument("--lambda", dest="lambda_", type=float, help="infovae: lambda (divergence weight alpha + lambda - 1)")
    t.add_argument("--divergence", choices=("mmd", "adversarial"), help="infovae: D(q(z) || p(z))")
    t.add_argument("--kernel", choices=("rbf", "imq"), help="infovae: MMD kernel")
    t.add_argument("--gamma", type=float, help="factorvae: TC weight; mae: smoothness weight")
    t.add_argument("--beta-tc", type=float, help="beta-tcvae: beta of the total-correlation term (default 6)")
    t.add_argument("--eta", type=float, help="mae: diversity weight")
    t.add_argument("--regularization", choices=("l2", "gp", "sn", "none"), help="rae: decoder regulariser")
    t.add_argument("--latent-weight", type=float, help="rae: weight of 1/2 ||z||^2")
    t.add_argument("--reg-weight", type=float, help="rae: weight of the decoder regulariser")
    t.add_argument("--fit-density", action="store_true", help="fit the ex-post Gaussian mixture after training")
    t.add_argument("--strategy", default="default", choices=("default", "mirrored", "multiworker"),
                   help="tf.distribute strategy (multiworker reads TF_CONFIG); --batch-size is the global batch")
    t.add_argument("--jit-compile", action="store_true", help="compile train/test steps with XLA")
    t.add_argument("--precision", default="float32", choices=("float32", "mixed_float16", "mixed_bfloat16"),
                   help="compute dtype of the networks (log-probabilities and KL stay float32)")
    t.add_argument("--checkpoint-every", type=int, default=100,
                   help="steps between checkpoints in RUN_DIR/backup; rerun the same command to resume")
    t.add_argument("--beta", type=float, help="KL weight (default 1, or 4 for beta-vae)")
    t.add_argument("--kl-warmup-steps", type=int, default=0, help="linear KL warm-up from 0 to beta over N steps")
    t.add_argument("--out", required=True, help="run directory to write")
    t.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")

    e = sub.add_parser("evaluate", help="importance-sampled NLL, ELBO, KL, active units of a run",
                       description="Evaluate a trained run on a data split and print a table "
                                   "(and JSON with --json).")
    e.add_argument("run_dir")
    e.add_argument("--dataset", choices=_DATASETS, help="data set (default: the one the run trained on)")
    e.add_argument("--data-dir")
    e.add_argument("--split", default="test", choices=("train", "valid", "test"))
    e.add_argument("--k", type=int, default=1000, help="importance samples per example")
    e.add_argument("--limit", type=int, help="evaluate the first N examples only")
    e.add_argument("--batch-size", type=int, default=100)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", help="also write the results to this JSON file")
    e.add_argument("--diagnostics", action="store_true",
                   help="also mutual information, MMD(q(z), N(0,I)), log det Cov q(z), probe accuracy (labelled "
                        "data), and PNGs of KL per dimension and latent traversals next to the run")

    s = sub.add_parser("sample", help="draw samples from the prior and write a PNG grid")
    s.add_argument("run_dir")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--out", required=True, help="PNG file to write")
    s.add_argument("--labels", type=_labels, help="class label(s) for conditional models, e.g. 3 or 0,1,2")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--draw", action="store_true", help="draw pixels x ~ p(x|z) instead of showing E[x|z]")

    x = sub.add_parser("export", help="export a run as a serving bundle (SavedModel + ONNX + manifest)",
                       description="Write BUNDLE_DIR with savedmodel/1 (TensorFlow Serving layout), onnx/*.onnx "
                                   "and manifest.json; every endpoint is checked against Keras (parity in the "
                                   "manifest).")
    x.add_argument("run_dir")
    x.add_argument("--out", required=True, help="bundle directory to write")
    x.add_argument("--opset", type=int, default=17, help="ONNX opset")
    x.add_argument("--no-check", action="store_true", help="skip the Keras/SavedModel/ONNX parity check")

    f = sub.add_parser("fit-density", help="fit the ex-post Gaussian mixture to training codes (RAE paper)",
                       description="Fit a Gaussian mixture to the posterior means of the training data, store it "
                                   "in RUN_DIR/model.keras, and write samples_density.png next to samples from "
                                   "the prior (samples_prior.png).")
    f.add_argument("run_dir")
    f.add_argument("--dataset", choices=_DATASETS, help="data set (default: the run's)")
    f.add_argument("--data-dir")
    f.add_argument("--limit", type=int, default=20000, help="training examples used for the fit")

    r = sub.add_parser("reconstruct", help="write a PNG of data | reconstruction pairs, side by side")
    r.add_argument("run_dir")
    r.add_argument("--dataset", choices=_DATASETS, help="data set (default: the run's)")
    r.add_argument("--data-dir")
    r.add_argument("--split", default="test", choices=("train", "valid", "test"))
    r.add_argument("--n", type=int, default=32)
    r.add_argument("--out", required=True, help="PNG file to write")
    return p


def _split_for(args, config):
    from . import data

    dataset = args.dataset or config.get("dataset")
    if dataset is None:
        from .errors import ConfigError

        raise ConfigError("the run does not record its data set: pass --dataset")
    return data.load(dataset, args.split, args.data_dir)


def _train(args):
    from . import runs

    runs.train(model=args.model, dataset=args.dataset, out=args.out, data_dir=args.data_dir, network=args.network,
               hidden=tuple(args.hidden), epochs=args.epochs, batch_size=args.batch_size,
               latent_dim=args.latent_dim, lr=args.lr, seed=args.seed, decoder=args.decoder, beta=args.beta,
               kl_warmup_steps=args.kl_warmup_steps, optimizer=args.optimizer, ema=args.ema, limit=args.limit,
               verbose=2 if args.quiet else "auto", prior=args.prior, posterior=args.posterior,
               flow_steps=args.flow_steps, flow_hidden=args.flow_hidden, pixelcnn_layers=args.pixelcnn_layers,
               pixelcnn_kernel=args.pixelcnn_kernel, pixelcnn_filters=args.pixelcnn_filters,
               free_bits=args.free_bits, fit_density=args.fit_density,
               **{k: v for k, v in (("alpha", args.alpha), ("lambda_", args.lambda_), ("divergence", args.divergence),
                                    ("kernel", args.kernel), ("gamma", args.gamma), ("eta", args.eta), ("beta_tc", args.beta_tc),
                                    ("regularization", args.regularization), ("latent_weight", args.latent_weight),
                                    ("reg_weight", args.reg_weight)) if v is not None},
               strategy=args.strategy, jit_compile=args.jit_compile,
               precision=args.precision, checkpoint_every=args.checkpoint_every)
    print(f"wrote {args.out}: model.keras, config.json, history.json, samples.png, reconstructions.png")


def _evaluate(args):
    import keras

    from . import evaluation, runs
    from .data import validate
    from .errors import ConfigError

    if args.k < 1 or (args.limit is not None and args.limit < 1):
        raise ConfigError("--k and --limit must be positive")
    model, config = runs.load_run(args.run_dir)
    split = _split_for(args, config)
    x, y = split.arrays()
    validate(x, model.data_shape, model.likelihood.support, name=f"{split.name}/{split.split}")
    n = len(x) if args.limit is None else min(args.limit, len(x))
    bar = keras.utils.Progbar(n, unit_name="example", verbose=1 if sys.stderr.isatty() else 2)
    result = evaluation.evaluate(model, x, y, k=args.k, batch_size=args.batch_size, seed=args.seed,
                                 limit=args.limit, progress=lambda done, total: bar.update(done))
    result.update(dataset=split.name, split=split.split, run_dir=os.path.abspath(args.run_dir))
    if args.diagnostics:
        from . import data as kdata
        from . import plotting

        train_x = train_y = None
        if y is not None:
            train_x, train_y = kdata.load(split.name, "train", args.data_dir).arrays()
        limit = n
        result.update(evaluation.diagnostics(model, x[:limit], None if y is None else y[:limit], train_x, train_y,
                                             seed=args.seed))
        if result.get("kl_per_dim"):
            plotting.save_kl_per_dim(result["kl_per_dim"], os.path.join(args.run_dir, "kl_per_dim.png"))
        plotting.save_latent_traversal(model, x[:1], None if y is None else y[:1],
                                       os.path.join(args.run_dir, "traversal.png"))
    print(evaluation.format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")


def _sample(args):
    from . import plotting, runs
    from .errors import ConfigError

    if args.n < 1:
        raise ConfigError("--n must be positive")
    model, _ = runs.load_run(args.run_dir)
    labels = args.labels
    if labels is not None and not model.conditional:
        raise ConfigError("--labels only applies to conditional models (e.g. --model cvae)")
    if labels is not None and len(labels) == 1:
        labels = labels[0]
    images = model.sample(args.n, labels=labels, seed=args.seed, mean=not args.draw).numpy()
    plotting.save_image_grid(images, args.out, ncol=min(8, args.n))
    print(f"wrote {args.out}")


def _fit_density(args):
    from . import plotting, runs

    model, config = runs.load_run(args.run_dir)
    args.split = "train"
    x, y = _split_for(args, config).arrays()
    x, y = x[:args.limit], None if y is None else y[:args.limit]
    model.fit_density(x, y)
    runs.atomic_save(model, os.path.join(args.run_dir, runs.MODEL_FILE))
    labels = None if not model.conditional else list(range(64))
    for source in ("density", "prior"):
        images = model.sample(64, labels=None if labels is None else [i % model.num_classes for i in labels],
                              seed=0, source=source).numpy()
        plotting.save_image_grid(images, os.path.join(args.run_dir, f"samples_{source}.png"), ncol=8)
    print(f"fitted a {model.density.n_components}-component Gaussian mixture on {len(x)} codes; "
          f"wrote samples_density.png and samples_prior.png")


def _reconstruct(args):
    import numpy as np

    from . import plotting, runs
    from .errors import ConfigError

    if args.n < 1:
        raise ConfigError("--n must be positive")
    model, config = runs.load_run(args.run_dir)
    x, y = _split_for(args, config).arrays()
    x = x[:args.n]
    rec = model.reconstruct(x, None if y is None else y[:args.n]).numpy()
    pairs = np.stack([x, rec], axis=1).reshape((-1,) + x.shape[1:])
    plotting.save_image_grid(pairs, args.out, ncol=8)
    print(f"wrote {args.out}")


def _export(args):
    from . import export, runs

    model, _ = runs.load_run(args.run_dir)
    manifest = export.export(model, args.out, opset=args.opset, check=not args.no_check)
    for name, diffs in manifest.get("parity", {}).items():
        print(f"{name:12s} |keras-savedmodel| {diffs['savedmodel_max_abs_diff']:.2e}  "
              f"|keras-onnx| {diffs['onnx_max_abs_diff']:.2e}")
    print(f"wrote {args.out}: savedmodel/1, onnx/*.onnx, manifest.json")


def main(argv=None):
    args = _parser().parse_args(argv)
    from .errors import KvaeError

    commands = {"train": _train, "evaluate": _evaluate, "sample": _sample, "reconstruct": _reconstruct,
                "export": _export, "fit-density": _fit_density}
    try:
        commands[args.command](args)
    except (KvaeError, ValueError, OSError) as err:
        print(f"kvae {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
