"""The ``kvae`` command: train, evaluate, sample, reconstruct, fit-density, fit-prior, export.

Thin: parses, validates, then calls the library.  ``kvae train``'s model options are generated
from the chosen model's constructor (:func:`kvae.models.options.model_options`), default to
"not given", and only the options a user gives are passed, so the command line builds exactly the
model the Python API builds.  Errors (bad options included) print one line and exit 1.
"""
import argparse
import ast
import glob
import json
import math
import os
import sys

_DATASETS = ("digits", "binarized_mnist", "mnist", "fashion_mnist", "dsprites")
#: kvae.parts.densities.KINDS, without importing TensorFlow to parse a command line (tests check they agree)
KINDS_OF_DENSITY = ("gmm", "maf", "iaf", "two-stage")
_HERE = os.path.dirname(os.path.abspath(__file__))


class UsageError(Exception):
    """A bad command line (reported in one line, exit status 1)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that raise instead of printing usage and exiting 2."""

    def error(self, message):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def model_names():
    """Registered model names, read from the ``@register_model("...")`` decorators in kvae/models
    without importing TensorFlow (so that ``kvae --help`` is instant)."""
    names = []
    folder = os.path.join(os.path.dirname(_HERE), "models")
    for fname in sorted(glob.glob(os.path.join(folder, "**", "*.py"), recursive=True)):
        with open(fname) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for dec in node.decorator_list:
                    if (isinstance(dec, ast.Call) and getattr(dec.func, "id", None) == "register_model"
                            and dec.args and isinstance(dec.args[0], ast.Constant)):
                        names.append(dec.args[0].value)
    return sorted(names)


def _number(kind, positive=False, allow_zero=False):
    def parse(text):
        try:
            value = int(text) if kind is int else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if positive and (value < 0 or (value == 0 and not allow_zero)):
            raise argparse.ArgumentTypeError(f"must be {'>= 0' if allow_zero else '> 0'}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


_pos_int = _number(int, positive=True)
_nonneg_int = _number(int, positive=True, allow_zero=True)
_pos_float = _number(float, positive=True)


def _list(kind):
    def parse(text):
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {'integers' if kind is int else 'numbers'}, got {text!r}") from None
        if not values or any(not math.isfinite(v) or v <= 0 for v in values):
            raise argparse.ArgumentTypeError(f"expected positive values, got {text!r}")
        return values

    return parse


_ints = _list(int)


def _labels(text):
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class labels, got {text!r}") from None


def _chosen_model(argv):
    """The value of ``--model`` in argv (``vae`` when absent), before full parsing."""
    for i, arg in enumerate(argv):
        if arg == "--model" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
    return "vae"


def _part_choices(option):
    from kvae.parts import densities as density, likelihoods, posteriors, priors

    registry = {"decoder": likelihoods._LIKELIHOODS, "posterior": posteriors._POSTERIORS,
                "prior": priors._PRIORS, "density": dict.fromkeys(density.KINDS)}.get(option)
    return None if registry is None else sorted(registry)


def add_model_options(group, model):
    """Add the constructor options of ``model`` (a registered name) to an argparse group; every
    option defaults to None ("not given") and its help shows the constructor's default."""
    from kvae._quiet import import_tensorflow

    import_tensorflow()
    from kvae.models import registry
    from kvae.cli.options import model_options

    options = model_options(registry.get(model))
    for opt in options:
        shown = "model decides" if opt.default is None else (
            ",".join(str(v) for v in opt.default) if isinstance(opt.default, list) else opt.default)
        text = f"{opt.help} (default: {shown})" if opt.help else f"(default: {shown})"
        kwargs = dict(dest=f"model__{opt.name}", default=None, help=text.replace("%", "%%"))
        if opt.kind == "bool":
            group.add_argument(opt.flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        kind = {"int": _number(int), "float": _number(float), "ints": _list(int), "floats": _list(float),
                "str": str}[opt.kind]
        if opt.name in ("latent_dim", "flow_steps", "pixelcnn_layers", "pixelcnn_kernel", "pixelcnn_filters",
                        "cond_channels", "density_components"):
            kind = _pos_int
        elif opt.name in ("kl_warmup_steps",):
            kind = _nonneg_int
        elif opt.name in ("free_bits_per_dim", "free_bits_total", "latent_weight", "reg_weight", "gamma", "eta", "lambda_"):
            kind = _number(float, positive=True, allow_zero=True)
        choices = _part_choices(opt.name)
        if opt.name == "network":
            from kvae.parts.networks import _BUILDERS

            choices = sorted(_BUILDERS)
        if opt.name == "conditioning":
            from kvae.nn.pixelcnn import PixelCNNNetwork

            choices = list(PixelCNNNetwork.CONDITIONINGS)
        group.add_argument(opt.flag, type=kind, choices=choices, metavar=opt.name.rstrip("_").upper(), **kwargs)
    names = {o.name for o in options}
    from kvae.training.runs import PART_OPTIONS

    sizes = {"flow_steps": (_pos_int, "steps of a flow named by --prior maf|iaf or --posterior iaf"),
             "flow_hidden": (_ints, "MADE hidden sizes of that flow, e.g. 640,640,640"),
             "pixelcnn_layers": (_pos_int, "masked conv layers of --decoder pixelcnn"),
             "pixelcnn_kernel": (_pos_int, "kernel size of its masked convolutions"),
             "pixelcnn_filters": (_pos_int, "filters per PixelCNN layer")}
    for name in PART_OPTIONS:
        if name not in names:
            kind, text = sizes[name]
            group.add_argument("--" + name.replace("_", "-"), dest=f"model__{name}", type=kind, default=None,
                               metavar=name.upper(), help=text + " (default: the part's own)")
    return options


def _add_training_codes_arguments(parser):
    """RUN_DIR and the training data whose codes fit-density and fit-prior fit."""
    parser.add_argument("run_dir")
    parser.add_argument("--dataset", choices=_DATASETS, help="data set (default: the run's)")
    parser.add_argument("--data-dir")
    parser.add_argument("--limit", type=_pos_int, help="fit on the first N training examples only (default: all)")


def _parser(argv=()):
    argv = list(argv)
    p = _Parser(prog="kvae", description="Variational autoencoders on Keras 3 + TFP.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model and write a run directory",
                       description="Train a model; writes RUN_DIR/model.keras, config.json, history.json, "
                                   "TensorBoard logs and PNG grids of samples and reconstructions. "
                                   "`kvae train --model NAME --help` lists NAME's options.")
    t.add_argument("--model", default="vae", choices=model_names(), help="model name (default: vae)")
    t.add_argument("--dataset", default="digits", choices=_DATASETS, help="data set (default: digits, bundled)")
    t.add_argument("--data-dir", help="directory holding local data files (or set KVAE_DATA_DIR)")
    t.add_argument("--epochs", type=_pos_int, default=10, help="(default: 10)")
    t.add_argument("--batch-size", type=_pos_int, default=100, help="global batch size (default: 100)")
    t.add_argument("--lr", type=_pos_float, help="learning rate (default: 0.001; vlae: 0.002)")
    t.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the data order, weights and noise")
    t.add_argument("--optimizer", choices=("adam", "adamax"), help="(default: adam; vlae: adamax)")
    t.add_argument("--ema", type=_number(float, positive=True, allow_zero=True),
                   help="Polyak/EMA weight averaging momentum in (0, 1), e.g. 0.998; 0 for none "
                        "(default: none; vlae: 0.998)")
    t.add_argument("--limit", type=_pos_int, help="train on the first N training examples only")
    t.add_argument("--valid-limit", type=_pos_int, help="validate on the first N validation examples only")
    t.add_argument("--fit-density", action="store_true", help="fit the ex-post Gaussian mixture after training")
    t.add_argument("--strategy", default="default", choices=("default", "mirrored", "multiworker"),
                   help="tf.distribute strategy (multiworker reads TF_CONFIG); --batch-size is the global batch")
    t.add_argument("--jit-compile", action="store_true", help="compile train/test steps with XLA")
    t.add_argument("--precision", default="float32", choices=("float32", "mixed_float16", "mixed_bfloat16"),
                   help="compute dtype of the networks (log-probabilities and KL stay float32)")
    t.add_argument("--checkpoint-every", type=_pos_int, default=100,
                   help="steps between checkpoints in RUN_DIR/backup; rerun the same command to resume")
    t.add_argument("--steps-per-execution", type=_pos_int,
                   help="training steps per call of the compiled step (Keras' compile option; the same maths "
                        "for any value; callbacks and checkpoints act at the end of a call) (default: 10; "
                        "1 under --strategy mirrored or multiworker)")
    t.add_argument("--keep-best", action="store_true",
                   help="save the weights of the epoch with the lowest validation -ELBO, not the last")
    t.add_argument("--early-stopping", type=_pos_int, metavar="EPOCHS",
                   help="stop after EPOCHS epochs without a lower validation -ELBO (implies --keep-best)")
    t.add_argument("--lr-decay", type=_number(float, positive=True), metavar="RATE",
                   help="learning rate of epoch e is lr * RATE**e (RATE in (0, 1])")
    t.add_argument("--out", required=True, help="run directory to write")
    t.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    if argv[:1] == ["train"]:
        model = _chosen_model(argv)
        if model in model_names():
            add_model_options(t.add_argument_group(f"options of --model {model} (from its constructor)"), model)

    e = sub.add_parser("evaluate", help="importance-sampled NLL, ELBO, KL, active units of a run",
                       description="Evaluate a trained run on a data split and print a table "
                                   "(and JSON with --json).")
    e.add_argument("run_dir")
    e.add_argument("--dataset", choices=_DATASETS, help="data set (default: the one the run trained on)")
    e.add_argument("--data-dir")
    e.add_argument("--split", default="test", choices=("train", "valid", "test"))
    e.add_argument("--k", type=_pos_int, default=1000, help="importance samples per example")
    e.add_argument("--limit", type=_pos_int, help="evaluate the first N examples only")
    e.add_argument("--batch-size", type=_pos_int, default=100)
    e.add_argument("--seed", type=_nonneg_int, default=0)
    e.add_argument("--json", help="also write the results to this JSON file")
    e.add_argument("--diagnostics", action="store_true",
                   help="also mutual information, MMD(q(z), N(0,I)), log det Cov q(z), probe accuracy (labelled "
                        "data), and PNGs of KL per dimension and latent traversals next to the run")
    e.add_argument("--disentanglement", action="store_true",
                   help="also the disentanglement metrics (data sets with factors: dsprites): beta-VAE, FactorVAE, "
                        "MIG, DCI, SAP, modularity, explicitness, as in disentanglement_lib")
    e.add_argument("--sample-quality", action="store_true",
                   help="also Fréchet distance and precision/recall of samples against the split's images, in the "
                        "shipped LeNet feature space (28x28x1) and a PCA space (kvae.evaluation.sample_quality)")
    e.add_argument("--sample-n", type=_pos_int, default=2000, metavar="N",
                   help="samples and held-out images compared by --sample-quality")
    e.add_argument("--sample-source", choices=("prior", "density", "manifold"), default="prior",
                   help="draw z from the prior, the ex-post density (after kvae fit-density) or an RHVAE's manifold")
    e.add_argument("--disentanglement-train", type=_pos_int, default=10000, metavar="N",
                   help="points to fit each metric on (disentanglement_lib: 10000)")
    e.add_argument("--disentanglement-test", type=_pos_int, default=5000, metavar="N",
                   help="points to score each metric on (disentanglement_lib: 5000)")

    s = sub.add_parser("sample", help="draw samples from the prior and write a PNG grid")
    s.add_argument("run_dir")
    s.add_argument("--n", type=_pos_int, default=64)
    s.add_argument("--out", required=True, help="PNG file to write")
    s.add_argument("--labels", type=_labels, help="class label(s) for conditional models, e.g. 3 or 0,1,2")
    s.add_argument("--seed", type=_nonneg_int, default=0)
    s.add_argument("--draw", action="store_true", help="draw pixels x ~ p(x|z) instead of showing E[x|z]")
    s.add_argument("--source", choices=("prior", "density", "manifold"), default="prior",
                   help="draw z from the prior, the ex-post density (after kvae fit-density) or, for an RHVAE, "
                        "its learned manifold (HMC under the stored metric)")

    x = sub.add_parser("export", help="export a run as a serving bundle (SavedModel + ONNX + manifest)",
                       description="Write BUNDLE_DIR with savedmodel/1 (TensorFlow Serving layout), onnx/*.onnx "
                                   "and manifest.json; every endpoint is checked against Keras (parity in the "
                                   "manifest).")
    x.add_argument("run_dir")
    x.add_argument("--out", required=True, help="bundle directory to write")
    x.add_argument("--opset", type=_pos_int, default=17, help="ONNX opset")
    x.add_argument("--no-check", action="store_true", help="skip the Keras/SavedModel/ONNX parity check")
    x.add_argument("--explorer-examples", type=_nonneg_int, default=500,
                   help="validation images of the run's data set encoded into explorer.json for the browser "
                        "explorer (KL per dimension, code map); 0 for none")
    x.add_argument("--data-dir")

    e = sub.add_parser("explore", help="open the browser explorer on a run (or a pretrained model)",
                       description="Export RUN_DIR (or --pretrained NAME) to a temporary bundle with explorer data "
                                   "and serve it with kvae-serve; the page shows samples, one slider per latent "
                                   "dimension, a canvas to draw on, interpolations and a map of the codes.")
    e.add_argument("run_dir", nargs="?")
    e.add_argument("--pretrained", metavar="NAME", help="a pretrained model (kvae pretrained list)")
    e.add_argument("--host", default="127.0.0.1")
    e.add_argument("--port", type=_nonneg_int, default=8000, help="0 picks a free port")
    e.add_argument("--no-browser", action="store_true", help="print the address instead of opening a browser")
    e.add_argument("--data-dir")

    f = sub.add_parser("fit-density", help="fit an ex-post density (Gaussian mixture or flow) to training codes",
                       description="Fit a density (--kind) to the posterior means of the training data, store it "
                                   "in RUN_DIR/model.keras, and write samples_density.png next to samples from "
                                   "the prior (samples_prior.png).")
    _add_training_codes_arguments(f)
    f.add_argument("--kind", choices=KINDS_OF_DENSITY,
                   help="the density: a Gaussian mixture (gmm), an autoregressive flow (maf, iaf) or a second VAE "
                        "(two-stage); default: the model's own (--density when it was trained, else gmm)")
    f.add_argument("--epochs", type=_pos_int, help="training epochs of a flow or second-stage VAE (default: the "
                                                   "density's own, 50)")

    fp = sub.add_parser("fit-prior", help="fit a VQ-VAE's PixelCNN prior over its code indices",
                        description="Fit the PixelCNN prior of a vq-vae run to the code index maps of the "
                                    "training images, store it in RUN_DIR/model.keras (sampling and the exported "
                                    "sample endpoint then draw from it), and write samples_prior.png.")
    _add_training_codes_arguments(fp)
    fp.add_argument("--epochs", type=_pos_int, help="training epochs of the prior (default: the prior's own, 20)")
    fp.add_argument("--batch-size", type=_pos_int, help="(default: the prior's own, 100)")
    fp.add_argument("--lr", type=_pos_float, help="Adam learning rate (default: the prior's own, 0.001)")
    fp.add_argument("--seed", type=_nonneg_int, default=0)
    fp.add_argument("--quiet", action="store_true", help="no line per epoch")

    r = sub.add_parser("reconstruct", help="write a PNG of data | reconstruction pairs, side by side")
    r.add_argument("run_dir")
    r.add_argument("--dataset", choices=_DATASETS, help="data set (default: the run's)")
    r.add_argument("--data-dir")
    r.add_argument("--split", default="test", choices=("train", "valid", "test"))
    r.add_argument("--n", type=_pos_int, default=32)
    r.add_argument("--out", required=True, help="PNG file to write")

    pre = sub.add_parser("pretrained", help="list the pretrained models shipped with kvae, or write one as a run dir",
                         description="Pretrained models ship inside the package (no download). `fetch` writes a "
                                     "run directory that every other command reads.")
    pre_sub = pre.add_subparsers(dest="action", required=True, metavar="{list,fetch}")
    pre_sub.add_parser("list", help="names, data and measured numbers")
    pf = pre_sub.add_parser("fetch", help="write NAME as a run directory")
    pf.add_argument("name")
    pf.add_argument("--out", required=True, help="run directory to write")
    return p


def _split_for(args, config):
    from kvae.data import datasets as data

    dataset = args.dataset or config.get("dataset")
    if dataset is None:
        from kvae.errors import ConfigError

        raise ConfigError("the run does not record its data set: pass --dataset")
    return data.load(dataset, args.split, args.data_dir)


def _train(args):
    from kvae.training import runs

    options = {k[len("model__"):]: v for k, v in vars(args).items() if k.startswith("model__") and v is not None}
    for key, value in options.items():
        if isinstance(value, list):
            options[key] = tuple(value)
    if args.ema is not None and not 0 <= args.ema < 1:
        raise UsageError(f"argument --ema: must be in (0, 1), or 0 for none, got {args.ema}")
    runs.train(model=args.model, dataset=args.dataset, out=args.out, data_dir=args.data_dir, epochs=args.epochs,
               batch_size=args.batch_size, lr=args.lr, seed=args.seed, optimizer=args.optimizer, ema=args.ema,
               limit=args.limit, valid_limit=args.valid_limit, verbose=2 if args.quiet else "auto", fit_density=args.fit_density,
               strategy=args.strategy, jit_compile=args.jit_compile, precision=args.precision,
               checkpoint_every=args.checkpoint_every, steps_per_execution=args.steps_per_execution,
               keep_best=args.keep_best,
               early_stopping=args.early_stopping, lr_decay=args.lr_decay, **options)
    print(f"wrote {args.out}: model.keras, config.json, history.json, samples.png, reconstructions.png")


def _evaluate(args):
    import keras

    from kvae.evaluation import metrics as evaluation
    from kvae.training import runs
    from kvae.data.datasets import validate
    from kvae.errors import ConfigError

    if args.k < 1 or (args.limit is not None and args.limit < 1):
        raise ConfigError("--k and --limit must be positive")
    model, config = runs.load_run(args.run_dir)
    split = _split_for(args, config)
    if args.disentanglement and split.source is None:
        raise ConfigError(f"--disentanglement needs a data set with ground-truth factors (dsprites); "
                          f"{split.name} has none")
    x, y = split.arrays()
    validate(x, model.data_shape, model.likelihood.support, name=f"{split.name}/{split.split}")
    n = len(x) if args.limit is None else min(args.limit, len(x))
    bar = keras.utils.Progbar(n, unit_name="example", verbose=1 if sys.stderr.isatty() else 2)
    result = evaluation.evaluate(model, x, y, k=args.k, batch_size=args.batch_size, seed=args.seed,
                                 limit=args.limit, progress=lambda done, total: bar.update(done))
    result.update(dataset=split.name, split=split.split, run_dir=os.path.abspath(args.run_dir))
    if args.diagnostics:
        from kvae.data import datasets as kdata
        from kvae.evaluation import plotting

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
    if args.disentanglement:
        from kvae.evaluation import disentanglement

        bar = []

        def shown(done, total_steps):
            if not bar:
                bar.append(keras.utils.Progbar(total_steps, unit_name="step", verbose=1 if sys.stderr.isatty() else 2))
            bar[0].update(done)

        print("disentanglement metrics", file=sys.stderr)
        scores = disentanglement.evaluate(split.source, evaluation.representation(model, seed=args.seed),
                                          seed=args.seed, num_train=args.disentanglement_train,
                                          num_test=args.disentanglement_test, progress=shown)
        result.update(scores)
        result["data_source"] = getattr(split.source, "kind", None)
    if args.sample_quality:
        import numpy as np

        from kvae.data import datasets as kdata
        from kvae.evaluation import sample_quality

        m = min(args.sample_n, len(x))
        binary = model.likelihood.support == "binary"
        print(f"sample quality: {m} samples (z from the {args.sample_source})", file=sys.stderr)
        samples = np.asarray(model.sample(m, seed=args.seed, mean=not binary, source=args.sample_source))
        train_x = kdata.load(split.name, "train", args.data_dir).head(10000).arrays()[0]
        result.update(sample_quality.evaluate(samples, x[:m], train_x, seed=args.seed),
                      sample_n=m, sample_source=args.sample_source)
    print(evaluation.format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")


def _sample(args):
    from kvae.evaluation import plotting
    from kvae.training import runs
    from kvae.errors import ConfigError

    if args.n < 1:
        raise ConfigError("--n must be positive")
    model, _ = runs.load_run(args.run_dir)
    labels = args.labels
    if labels is not None and not model.conditional:
        raise ConfigError("--labels only applies to conditional models (e.g. --model cvae)")
    if labels is not None and len(labels) == 1:
        labels = labels[0]
    images = model.sample(args.n, labels=labels, seed=args.seed, mean=not args.draw, source=args.source).numpy()
    plotting.save_image_grid(images, args.out, ncol=min(8, args.n))
    print(f"wrote {args.out}")


def _training_data(args, config):
    """The run's training split (or --dataset's), its first --limit examples."""
    args.split = "train"
    x, y = _split_for(args, config).arrays()
    if args.limit is not None:
        x, y = x[:args.limit], None if y is None else y[:args.limit]
    return x, y


def _fit_density(args):
    from kvae.evaluation import plotting
    from kvae.training import runs

    model, config = runs.load_run(args.run_dir)
    x, y = _training_data(args, config)
    if args.kind is not None and args.kind != getattr(model.density, "kind", None):
        model = model.with_density(args.kind)
    if args.epochs is not None:
        if model.density.kind == "gmm":
            raise UsageError("--epochs applies to a trained density (--kind maf, iaf or two-stage), not the "
                             "Gaussian mixture")
        model.density.epochs = args.epochs
    info = model.fit_density(x, y)
    runs.atomic_save(model, os.path.join(args.run_dir, runs.MODEL_FILE))
    labels = None if not model.conditional else list(range(64))
    for source in ("density", "prior"):
        images = model.sample(64, labels=None if labels is None else [i % model.num_classes for i in labels],
                              seed=0, source=source).numpy()
        plotting.save_image_grid(images, os.path.join(args.run_dir, f"samples_{source}.png"), ncol=8)
    if model.density.kind == "gmm":
        what = f"a {model.density.n_components}-component Gaussian mixture"
    else:
        name = "second-stage VAE" if model.density.kind == "two-stage" else f"{model.density.kind.upper()} flow"
        what = f"a {name} (held-out log p(z) {info['heldout_log_prob']:.3f} nats per dimension)"
    print(f"fitted {what} on {len(x)} codes; wrote samples_density.png and samples_prior.png")


def _fit_prior(args):
    from kvae.evaluation import plotting
    from kvae.training import runs

    model, config = runs.load_run(args.run_dir)
    if not hasattr(model, "fit_prior"):
        raise UsageError(f"{args.run_dir} holds a {type(model).__name__}; fit-prior fits a vq-vae's code prior "
                         "(other models: kvae fit-density)")
    x, y = _training_data(args, config)
    info = model.fit_prior(x, y, seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           verbose=not args.quiet)
    runs.atomic_save(model, os.path.join(args.run_dir, runs.MODEL_FILE))
    labels = None if not model.conditional else [i % model.num_classes for i in range(64)]
    images = model.sample(64, labels=labels, seed=0).numpy()
    plotting.save_image_grid(images, os.path.join(args.run_dir, "samples_prior.png"), ncol=8)
    print(f"fitted the PixelCNN code prior on {len(x)} index maps: held-out -log p(k) {info['heldout_nll']:.3f} "
          f"nats (uniform: {info['uniform_nll']:.3f}); wrote samples_prior.png")


def _reconstruct(args):
    import numpy as np

    from kvae.evaluation import plotting
    from kvae.training import runs
    from kvae.errors import ConfigError

    if args.n < 1:
        raise ConfigError("--n must be positive")
    model, config = runs.load_run(args.run_dir)
    x, y = _split_for(args, config).arrays()
    x = x[:args.n]
    rec = model.reconstruct(x, None if y is None else y[:args.n]).numpy()
    pairs = np.stack([x, rec], axis=1).reshape((-1,) + x.shape[1:])
    plotting.save_image_grid(pairs, args.out, ncol=8)
    print(f"wrote {args.out}")


def _missing_extra(modules, extra):
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        from kvae.errors import ConfigError

        raise ConfigError(f"this command needs {', '.join(missing)}, which is not installed: "
                          f"pip install 'kvae[{extra}]'")


def _export(args):
    _missing_extra(("onnx", "tf2onnx", "onnxruntime"), "export")
    from kvae.export import bundle as export
    from kvae.training import runs

    model, config = runs.load_run(args.run_dir)
    extra = None
    if args.explorer_examples:
        from kvae.export import explorer

        found = explorer.run_examples(config, args.data_dir, n=args.explorer_examples)
        if found is None:
            print("no validation images found for the run's data set: explorer.json not written")
        else:
            extra = explorer.explorer_data(model, *found)
    manifest = export.export(model, args.out, opset=args.opset, check=not args.no_check, explorer=extra)
    for name, diffs in manifest.get("parity", {}).items():
        print(f"{name:12s} |keras-savedmodel| {diffs['savedmodel_max_abs_diff']:.2e}  "
              f"|keras-onnx| {diffs['onnx_max_abs_diff']:.2e}")
    print(f"wrote {args.out}: savedmodel/1, onnx/*.onnx, manifest.json")


def _explore(args):
    if (args.run_dir is None) == (args.pretrained is None):
        raise UsageError("give a run directory or --pretrained NAME (one of them)")
    if args.port > 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    _missing_extra(("onnx", "tf2onnx", "onnxruntime"), "export")
    from kvae.export import explorer

    explorer.explore(args.run_dir, args.pretrained, args.host, args.port, not args.no_browser, args.data_dir)


def _pretrained(args):
    from kvae.pretrained import store as pretrained

    if args.action == "list":
        for name in pretrained.names():
            info = pretrained.manifest(name)
            m = info.get("measured", {})
            nll = f"NLL {m['nll']:.2f} nats (k={m['k']}, n={m['n']}, {m.get('split', 'valid')})" if "nll" in m else ""
            print(f"{name:24s} {info.get('description', '')}  {nll}")
        return
    pretrained.fetch(args.name, args.out)
    print(f"wrote {args.out}: model.keras, config.json, pretrained.json")


def main(argv=None):
    """Run the ``kvae`` command; returns the exit status (0, or 1 after a one-line error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and not argv[0].startswith("-") else None
    prog = f"kvae {command}" if command else "kvae"
    try:
        args = _parser(argv).parse_args(argv)
    except UsageError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except SystemExit as exit_:  # --help
        return exit_.code or 0
    from kvae._quiet import import_tensorflow

    import_tensorflow()
    from kvae.errors import KvaeError

    commands = {"train": _train, "evaluate": _evaluate, "sample": _sample, "reconstruct": _reconstruct,
                "export": _export, "fit-density": _fit_density, "fit-prior": _fit_prior, "pretrained": _pretrained, "explore": _explore}
    try:
        commands[args.command](args)
    except (KvaeError, UsageError, ValueError, OSError) as err:
        text = " ".join(str(err).split()) or type(err).__name__
        print(f"kvae {args.command}: error: {text}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
