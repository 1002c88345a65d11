"""The ``kvae`` command line parser: argparse only, no TensorFlow.

Every set of names (``--model``, ``--dataset``, ``--kind``, ``--posterior`` ...) comes from
:mod:`kvae.registry`, and ``kvae train``'s model options from the chosen model's constructor
(:func:`kvae.options.model_options`, which reads the model's source without importing it), so that
``kvae --help`` and ``kvae train --model NAME --help`` never load TensorFlow.  Every model option
defaults to None ("not given"), and only the options a user gives are passed on.
"""
import argparse
import os
import math

from kvae import registry
from kvae.options import PART_OPTIONS, model_options, static_value


class UsageError(Exception):
    """A bad command line (reported in one line, exit status 1)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that raise instead of printing usage and exiting 2."""

    def error(self, message):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


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


def _existing_file(text):
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text
_nonneg_int = _number(int, positive=True, allow_zero=True)


def _nll_jobs(text):
    """--nll-jobs: a positive number of processes, at most one per usable CPU (as
    :func:`kvae.evaluation.parallel.usable_cpus` counts them; that module imports TensorFlow)."""
    jobs = _pos_int(text)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if jobs > cpus:
        raise argparse.ArgumentTypeError(f"{jobs} processes on {cpus} usable CPUs: at most {cpus} (a process per CPU)")
    return jobs


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


def _ema(text):
    """--ema: a momentum in (0, 1), or 0 for no averaging."""
    value = _number(float, positive=True, allow_zero=True)(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), or 0 for none, got {text!r}")
    return value


def _jobs(text):
    """--jobs: a positive number of processes, or -1 for one per CPU."""
    value = _number(int)(text)
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"must be > 0, or -1 for one per CPU, got {text!r}")
    return value


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


#: constructor options that name an entry of the registry, and the registry's kind
PART_KINDS = {"decoder": "likelihood", "posterior": "posterior", "prior": "prior", "density": "density",
              "network": "network", "objective": "objective"}


def _choices(option):
    """The valid values of a constructor option that names a registered part (None: any value)."""
    if option == "conditioning":  # VLAE's PixelCNN
        return list(static_value("kvae.nn.pixelcnn:PixelCNNNetwork.CONDITIONINGS"))
    if option not in PART_KINDS:
        return None
    extra = ["elbo"] if option == "objective" else []  # the plain ELBO: no objective layer
    return extra + registry.names(PART_KINDS[option])


def add_model_options(group, model):
    """Add the constructor options of ``model`` (a registered name) to an argparse group; every
    option defaults to None ("not given") and its help shows the constructor's default."""
    options = model_options(model)
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
        group.add_argument(opt.flag, type=kind, choices=_choices(opt.name), metavar=opt.name.rstrip("_").upper(),
                           **kwargs)
    names = {o.name for o in options}
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
    datasets = registry.names("dataset")
    parser.add_argument("run_dir")
    parser.add_argument("--dataset", choices=datasets, help="data set (default: the run's)")
    parser.add_argument("--data-dir")
    parser.add_argument("--limit", type=_pos_int, help="fit on the first N training examples only (default: all)")


def build_parser(argv=()):
    """The ``kvae`` parser; for ``kvae train --model NAME`` (in ``argv``) with NAME's options."""
    argv = list(argv)
    datasets = registry.names("dataset")
    p = _Parser(prog="kvae", description="Variational autoencoders on Keras 3 + TFP.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model and write a run directory",
                       description="Train a model; writes RUN_DIR/model.keras, config.json, history.json, "
                                   "TensorBoard logs and PNG grids of samples and reconstructions. "
                                   "`kvae train --model NAME --help` lists NAME's options.")
    t.add_argument("--model", default="vae", choices=registry.names("model"), help="model name (default: vae)")
    t.add_argument("--dataset", default="digits", choices=datasets, help="data set (default: digits, bundled)")
    t.add_argument("--data-dir", help="directory holding local data files (or set KVAE_DATA_DIR)")
    t.add_argument("--epochs", type=_pos_int, default=10,
                   help="epochs in all; a finished run rerun with more continues from its last checkpoint (default: 10)")
    t.add_argument("--batch-size", type=_pos_int, default=100, help="global batch size (default: 100)")
    t.add_argument("--lr", type=_pos_float, help="learning rate (default: 0.001; vlae: 0.002)")
    t.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the data order, weights and noise")
    t.add_argument("--optimizer", choices=("adam", "adamax"), help="(default: adam; vlae: adamax)")
    t.add_argument("--ema", type=_ema,
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
    t.add_argument("--clip-norm", type=_pos_float,
                   help="rescale each step's gradients to at most this global norm (default: no clipping)")
    t.add_argument("--init-weights", type=_existing_file,
                   help="a .weights.h5 of the same model to start from (a warm start: the optimizer's state is new; "
                        "a checkpoint in RUN_DIR/backup still takes precedence)")
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
        if model in registry.names("model"):
            add_model_options(t.add_argument_group(f"options of --model {model} (from its constructor)"), model)

    e = sub.add_parser("evaluate", help="importance-sampled NLL, ELBO, KL, active units of a run",
                       description="Evaluate a trained run on a data split and print a table "
                                   "(and JSON with --json).  An interrupted evaluation continues where it stopped "
                                   "when the same command is run again (RUN_DIR/evaluate.journal.npz).")
    e.add_argument("run_dir")
    e.add_argument("--dataset", choices=datasets, help="data set (default: the one the run trained on)")
    e.add_argument("--data-dir")
    e.add_argument("--split", default="test", choices=("train", "valid", "test"))
    e.add_argument("--k", type=_pos_int, default=1000, help="importance samples per example")
    e.add_argument("--limit", type=_pos_int, help="evaluate the first N examples only")
    e.add_argument("--batch-size", type=_pos_int, default=100)
    e.add_argument("--seed", type=_nonneg_int, default=0)
    e.add_argument("--json", help="also write the results to this JSON file")
    e.add_argument("--nll-jobs", type=_nll_jobs, default=1, metavar="N",
                   help="compute the importance-sampled NLL in N processes (at most the usable CPUs, one per "
                        "batch), which share the CPUs' threads and load RUN_DIR/model.keras (the same values up "
                        "to float32 rounding; on 2 cores two processes are faster for big models)")
    e.add_argument("--fresh", action="store_true",
                   help="discard RUN_DIR/evaluate.journal.npz, the log-likelihoods an interrupted run of the "
                        "same evaluation kept, and start from the first example")
    e.add_argument("--diagnostics", action="store_true",
                   help="also mutual information, MMD(q(z), N(0,I)), log det Cov q(z), probe accuracy (labelled "
                        "data), and PNGs of KL per dimension and latent traversals next to the run")
    e.add_argument("--disentanglement", action="store_true",
                   help="the disentanglement metrics (data sets with factors: dsprites): beta-VAE, FactorVAE, "
                        "MIG, DCI, SAP, modularity, explicitness, as in disentanglement_lib, and the seconds each "
                        "took; alone, instead of the NLL table (add --nll for both)")
    e.add_argument("--nll", action="store_true",
                   help="with --disentanglement: also the importance-sampled NLL table (computed by default without it)")
    e.add_argument("--jobs", type=_jobs, default=-1, metavar="N",
                   help="processes for DCI's per-factor gradient-boosted trees (-1: one per CPU; same result for any N)")
    e.add_argument("--dci-trees", metavar="LEARNER",
                   help="DCI's gradient-boosted trees: lightgbm (the default: fast, within a stated tolerance) or "
                        "sklearn (disentanglement_lib's GradientBoostingClassifier, as its published numbers)")
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
    s.add_argument("--layer", type=_pos_int, default=None,
                   help="hierarchical models (lvae): rows fix the groups above LAYER (1 = bottom) at one prior "
                        "draw, each row's images draw LAYER and the groups below anew (--n rows of 8)")

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
    x.add_argument("--overwrite", action="store_true", help="replace BUNDLE_DIR if it exists and is not empty "
                                                            "(the new bundle is renamed into place whole)")
    x.add_argument("--key-file", help="sign the manifest with HMAC-SHA256 under the key in this file "
                                      "(bundle.hmac; serve with kvae-serve --key-file)")

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
    f.add_argument("--kind", choices=[k for k in registry.names("density") if k != "none"],
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
    r.add_argument("--dataset", choices=datasets, help="data set (default: the run's)")
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
    pf.add_argument("--with-optimizer", action="store_true",
                    help="also write the run's optimizer into model.keras (variables at zero: no moments are "
                         "shipped), to continue training; by default the model alone")
    return p


