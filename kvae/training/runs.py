"""Training runs on disk: train a named model on a named data set into a run directory, and load it back.

A run directory holds ``model.keras`` (its files written atomically, :mod:`kvae.training.files`: a crash
never leaves a truncated file where a good one was), ``config.json`` (the run's options and the model config),
``history.json`` and ``history.csv`` (per-epoch metrics of all its invocations, :mod:`kvae.training.history`),
``logs/`` (TensorBoard), PNG grids ``samples.png``, ``reconstructions.png`` and ``kl_per_dim.png``, the last
checkpoint ``backup/`` and, while a run trains, its lock ``train.lock`` (:mod:`kvae.training.locks`).
"""
import json
import math
import os
import time
import zipfile

import keras
import numpy as np
import tensorflow as tf

from kvae.data import datasets as kdata
from kvae.evaluation import metrics as evaluation, plotting
from kvae.errors import ConfigError, RunError
from kvae import registry
from kvae.options import PART_OPTIONS
from kvae.training import files, history as run_history, transfer
from kvae.training.callbacks import KeepBest, TensorBoardImages, exponential_lr
from kvae.training.checkpoint import SafeBackupAndRestore
from kvae.training.locks import RunLock

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"


def make_parts(latent_dim, input_shape, prior=None, posterior=None, decoder=None, flow_steps=None,
               flow_hidden=None, pixelcnn_layers=None, pixelcnn_kernel=None, pixelcnn_filters=None, used=()):
    """Prior, posterior and decoder layers built from names with explicit sizes.

    ``prior``: maf | iaf; ``posterior``: iaf; ``decoder``: pixelcnn.  Only the parts that name
    a sized part and are given a size are returned; everything else stays a name (the
    model's part registries build it with the part's own defaults).  Sizes named in ``used``
    are also taken by the model's constructor, so they are never reported as unused.
    """
    from kvae.parts.likelihoods import PixelCNNLikelihood
    from kvae.parts.posteriors import IAFPosterior
    from kvae.parts.priors import FlowPrior

    parts = {}
    flow = {k: v for k, v in (("num_steps", flow_steps), ("hidden_units", flow_hidden)) if v is not None}
    pix = {k: v for k, v in (("num_layers", pixelcnn_layers), ("kernel_size", pixelcnn_kernel),
                             ("filters", pixelcnn_filters)) if v is not None}
    if flow and prior in ("maf", "iaf"):
        parts["prior"] = FlowPrior(latent_dim, kind=prior, name="prior", **flow)
    if flow and posterior == "iaf":
        parts["posterior"] = IAFPosterior(latent_dim, name="posterior", **flow)
    if pix and decoder == "pixelcnn":
        parts["decoder"] = PixelCNNLikelihood(input_shape, name="likelihood", **pix)
    unused = [k for k, v in (("flow_steps", flow_steps), ("flow_hidden", flow_hidden)) if v is not None
              and prior not in ("maf", "iaf") and posterior != "iaf"]
    unused += [k for k, v in (("pixelcnn_layers", pixelcnn_layers), ("pixelcnn_kernel", pixelcnn_kernel),
                              ("pixelcnn_filters", pixelcnn_filters)) if v is not None and decoder != "pixelcnn"]
    unused = [u for u in unused if u not in used]
    if unused:
        raise ConfigError(f"{', '.join('--' + u.replace('_', '-') for u in unused)} only apply with "
                          "--prior maf|iaf / --posterior iaf (flow sizes) or --decoder pixelcnn (PixelCNN sizes)")
    return parts


def build_model(name, input_shape, num_classes=None, seed=0, binary=True, **options):
    """Instantiate a registered model from the options a user gave (what the CLI passes).

    ``options`` are constructor keywords (see :func:`kvae.options.model_options`); only
    the given ones are passed, so every other option keeps the constructor's default.  Two
    defaults come from the data: ``num_classes`` (conditional models) and, when the model's
    own default decoder is Bernoulli and the data are not binary, ``decoder="gaussian"``.
    ``flow_steps``/``flow_hidden``/``pixelcnn_*`` size a part named by ``prior``/``posterior``/
    ``decoder`` for models whose constructor does not take them.
    """
    import inspect

    from kvae.options import model_options

    cls = registry.get("model", name)
    table = {o.name: o for o in model_options(cls)}
    sizes = {k: options[k] for k in PART_OPTIONS if k in options}
    for k in sizes:
        if k not in table:
            options.pop(k)
    unknown = sorted(set(options) - set(table))
    if unknown:
        raise ConfigError(f"model {name!r} has no option(s) {', '.join(unknown)}; its options: "
                          f"{', '.join(sorted(table))}")
    kwargs = dict(input_shape=tuple(input_shape), seed=seed, **options)
    if "decoder" in table and "decoder" not in options and table["decoder"].default == "bernoulli" and not binary:
        kwargs["decoder"] = "gaussian"
    latent_dim = options.get("latent_dim", table["latent_dim"].default if "latent_dim" in table else 32)
    own = set(sizes) & set(table)  # sizes the constructor takes for its own parts (VLAE's prior, PixelCNN)
    parts = make_parts(latent_dim, tuple(input_shape), None if "flow_steps" in table else options.get("prior"),
                       options.get("posterior"), None if "pixelcnn_layers" in table else kwargs.get("decoder"),
                       used=own, **sizes)
    kwargs.update(parts)
    conditional = inspect.signature(cls.__init__).parameters.get("num_classes")
    if conditional is not None and conditional.default is not None:  # a conditional model (cvae)
        if num_classes is None:
            raise ConfigError(f"model {name!r} needs a labelled data set (digits, mnist, fashion_mnist)")
        kwargs["num_classes"] = num_classes
    return cls(**kwargs)


def make_optimizer(name="adam", lr=1e-3, ema=None, clip_norm=None):
    """Adam or Adamax; ``ema`` (e.g. 0.998) keeps an exponential moving average of the weights
    (Polyak averaging) that replaces them at the end of ``fit``; ``clip_norm`` rescales each step's
    gradients to a global norm of at most that value (as VDVAE's deep hierarchies train)."""
    classes = {"adam": keras.optimizers.Adam, "adamax": keras.optimizers.Adamax}
    if name not in classes:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of {sorted(classes)}")
    if ema is not None and not 0 < ema < 1:
        raise ConfigError(f"--ema must be in (0, 1), got {ema}")
    if clip_norm is not None and not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ConfigError(f"--clip-norm must be a positive finite number, got {clip_norm}")
    return classes[name](lr, use_ema=ema is not None, ema_momentum=ema if ema is not None else 0.99,
                         global_clipnorm=clip_norm)


#: ``atomic_save(model, path)``: :func:`kvae.training.files.save_model` (its kvae 0.1 name)
atomic_save = files.save_model


def write_figures(model, run_dir, split, n=64, seed=0):
    """Samples, reconstructions (each original then its reconstruction) and KL per dimension as PNGs (q, p not
    factorised: :func:`kvae.evaluation.metrics.marginal_kl_per_dim`; a point-mass q, RAE's, VQ-VAE's: no KL)."""
    paths = {}
    x, y = split.arrays()
    labels = None if not model.conditional else np.arange(n) % model.num_classes
    paths["samples"] = plotting.save_image_grid(
        model.sample(n, labels=labels, seed=seed).numpy(), os.path.join(run_dir, "samples.png"), ncol=8)
    rec = model.reconstruct(xb := x[:32], None if y is None else y[:32]).numpy()
    pairs = np.stack([xb, rec], axis=1).reshape((-1,) + x.shape[1:])
    paths["reconstructions"] = plotting.save_image_grid(pairs, os.path.join(run_dir, "reconstructions.png"), ncol=8)
    path = os.path.join(run_dir, "kl_per_dim.png")
    if not model.has_density:  # q a point mass: its KL to a density is infinite (an older kvae's blank plot goes)
        files.remove_if_present(path)
        return paths
    stats = evaluation.posterior_statistics(model, x[:1000], None if y is None else y[:1000], seed=seed)
    if stats["kl_per_dim"] is not None:
        paths["kl_per_dim"] = plotting.save_kl_per_dim(stats["kl_per_dim"].mean(0), path)
    else:  # the prior or the posterior does not factorise (VLAE's flow prior): per dimension, against its marginal
        kl = evaluation.marginal_kl_per_dim(model, x[:1000], None if y is None else y[:1000], seed=seed)
        paths["kl_per_dim"] = plotting.save_kl_per_dim(kl, path, title="KL to a Gaussian fit of the prior marginal")
    return paths


STRATEGIES = ("default", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def make_strategy(name="default"):
    """A ``tf.distribute`` strategy: the default one, MirroredStrategy over the local devices, or
    MultiWorkerMirroredStrategy configured by the ``TF_CONFIG`` environment variable."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("--strategy multiworker needs the TF_CONFIG environment variable (see docs/distributed.md)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


#: Optimizer settings of a run when neither the caller nor the model class (``training_defaults``) gives them.
TRAINING_DEFAULTS = {"optimizer": "adam", "lr": 1e-3, "ema": None}


#: training steps per call of the compiled step in :func:`train` (``--steps-per-execution``)
STEPS_PER_EXECUTION = 10


def training_defaults(model):
    """The optimizer settings a run of the registered model ``model`` uses when none are given: the
    model class's ``training_defaults`` (VLAE: the paper's Adamax 2e-3 with Polyak averaging 0.998)
    over :data:`TRAINING_DEFAULTS`."""
    return {**TRAINING_DEFAULTS, **getattr(registry.get("model", model), "training_defaults", {})}


def train(model="vae", dataset="digits", out=None, data_dir=None, epochs=10, batch_size=100, lr=None, seed=0,
          optimizer=None, ema=None, verbose="auto", callbacks=(), limit=None, strategy="default",
          jit_compile=False, precision="float32", checkpoint_every=100, fit_density=False, valid_limit=None,
          keep_best=False, early_stopping=None, lr_decay=None, steps_per_execution=None, init_weights=None,
          clip_norm=None, **model_options):
    """Train ``model`` on ``dataset`` and write the run directory ``out``; returns (model, history).

    ``limit`` / ``valid_limit``: train / validate on the first N examples of the split only.

    ``model_options`` are the model's constructor options (``latent_dim``, ``beta``, ``alpha``, ...,
    see ``kvae train --model NAME --help``); options not given keep the constructor's defaults.
    ``optimizer``/``lr``/``ema`` left as None take :func:`training_defaults` (``ema=0`` turns averaging off).
    ``strategy``: default | mirrored | multiworker (``batch_size`` is the global batch).
    ``precision``: float32 | mixed_float16 | mixed_bfloat16 (networks only; log-probabilities and
    KL stay float32).  A checkpoint is written every ``checkpoint_every`` steps to ``out/backup``;
    rerunning the same command resumes from it at the next batch not yet applied.  ``fit_density``
    fits the ex-post Gaussian mixture to the training codes before the model is saved.

    ``steps_per_execution``: training steps per call of the compiled step (Keras' ``compile``
    option; the maths is the same for any value).  None: :data:`STEPS_PER_EXECUTION` (10), which
    saves Keras' per-call work between steps, or 1 under the ``mirrored`` and ``multiworker``
    strategies, where Keras' multi-step loop fails (a placeholder fed nowhere inside the loop,
    keras-team/keras#19246, Keras 3.15 with TensorFlow 2.21; other values are refused there).
    Callbacks see the end of each call, and a checkpoint lands at the end of the first call at or
    after every ``checkpoint_every`` steps.

    ``keep_best``: the saved model has the weights of the epoch with the lowest validation −ELBO
    (:class:`kvae.training.callbacks.KeepBest`; kept in ``out/best``, so a resumed run keeps its best);
    ``early_stopping=P`` also stops after P epochs without improvement (implies ``keep_best``).
    ``clip_norm``: gradients rescaled to this global norm at most (``keras`` optimizers' ``global_clipnorm``).
    ``init_weights``: a ``.weights.h5`` of the same model loaded before training (a warm start with a
    new optimizer state; a checkpoint in ``out/backup`` still takes precedence); a file of another
    model is a ``RunError`` (:func:`kvae.training.transfer.load_matching_weights`).
    ``lr_decay=r``: the learning rate of epoch e (0-based) is lr · r^e.  Every epoch's metrics are
    written to ``out/history.csv`` and ``out/history.json`` as the run goes, one row per epoch of all
    invocations (:mod:`kvae.training.history`).

    The run holds ``out/train.lock`` while it runs (a second run into ``out`` fails, naming the
    holder).  The last checkpoint stays in ``out/backup`` after the model is written: rerunning a
    finished command prints that it has finished and returns (the saved model, None); with a larger
    ``epochs`` it continues the run.  The returned history's ``run_files`` names what was written.
    """
    if out is None:
        raise ConfigError("a run directory is required (--out RUN_DIR)")
    defaults = training_defaults(model)
    optimizer = defaults["optimizer"] if optimizer is None else optimizer
    lr = defaults["lr"] if lr is None else lr
    ema = defaults["ema"] if ema is None else (None if ema == 0 else ema)
    if steps_per_execution is None:
        steps_per_execution = STEPS_PER_EXECUTION if strategy == "default" else 1
    elif strategy != "default" and steps_per_execution != 1:
        raise ConfigError(f"--steps-per-execution {steps_per_execution} fails under --strategy {strategy}: Keras' "
                          "multi-step loop under a distribution strategy (keras-team/keras#19246); use 1 "
                          "(the default there)")
    for option, value in (("epochs", epochs), ("batch_size", batch_size), ("checkpoint_every", checkpoint_every),
                          ("steps_per_execution", steps_per_execution)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"--{option.replace('_', '-')} must be a positive integer, got {value!r}")
    if not (isinstance(lr, (int, float)) and lr > 0 and lr == lr and lr != float("inf")):
        raise ConfigError(f"--lr must be a positive finite number, got {lr!r}")
    for option, value in (("limit", limit), ("valid_limit", valid_limit), ("early_stopping", early_stopping)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"--{option.replace('_', '-')} must be a positive integer, got {value!r}")
    if lr_decay is not None and not (isinstance(lr_decay, (int, float)) and 0 < lr_decay <= 1):
        raise ConfigError(f"--lr-decay must be in (0, 1], got {lr_decay!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    dist = make_strategy(strategy)  # first: multi-worker collectives must be set up before other TF work
    registry.get("model", model)  # an unknown model name fails before anything is written
    if not _is_chief(dist):  # non-chief workers write to a scratch directory (Keras' multi-worker convention)
        out = os.path.join(out, f".worker_{dist.cluster_resolver.task_id}")
    keras.utils.set_random_seed(seed)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        with RunLock(out):
            done = run_history.finished_message(out, epochs)
            if done is not None:
                print(done, flush=True)
                return load_run(out)[0], None
            extra = {"keep_best": bool(keep_best or early_stopping), "early_stopping": early_stopping,
                     "lr_decay": lr_decay, "steps_per_execution": steps_per_execution, "init_weights": init_weights,
                     "clip_norm": clip_norm}
            return _train(model, dataset, out, data_dir, epochs, batch_size, lr, seed, optimizer, ema, verbose,
                          callbacks, limit, dist, jit_compile, precision, checkpoint_every, fit_density, model_options,
                          valid_limit, extra)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _train(model, dataset, out, data_dir, epochs, batch_size, lr, seed, optimizer, ema, verbose, callbacks, limit,
           dist, jit_compile, precision, checkpoint_every, fit_density, model_options, valid_limit, extra):
    strategy = {tf.distribute.MirroredStrategy: "mirrored",
                tf.distribute.MultiWorkerMirroredStrategy: "multiworker"}.get(type(dist), "default")
    chief = _is_chief(dist)
    train_split = kdata.load(dataset, "train", data_dir)
    valid_split = kdata.load(dataset, "valid", data_dir)
    if limit is not None:  # a quick run on the first examples only
        train_split = train_split.head(limit)
    if valid_limit is not None:
        valid_split = valid_split.head(valid_limit)
    if model == "beta-tcvae" and "dataset_size" not in model_options:  # the estimator's N: the training-set size
        model_options = {**model_options, "dataset_size": len(train_split)}
    with dist.scope():
        mdl = build_model(model, train_split.input_shape, train_split.num_classes, seed=seed,
                          binary=train_split.binary, **model_options)
        mdl.compile(optimizer=make_optimizer(optimizer, lr, ema, extra["clip_norm"]), jit_compile=jit_compile,
                    steps_per_execution=extra["steps_per_execution"])
        if extra["init_weights"] is not None:  # a warm start (the optimizer is not built yet: its state is new)
            transfer.load_matching_weights(mdl, extra["init_weights"], "the train options")
    support = getattr(mdl.likelihood, "support", None)
    for split in (train_split, valid_split):
        if split.x is None:  # rendered by kvae from factor indices: nothing a user supplied
            continue
        kdata.validate(split.x, mdl.data_shape, "binary" if support == "binary" and not split.dynamic else None,
                       name=f"{dataset}/{split.split}")
    labels = mdl.conditional
    os.makedirs(out, exist_ok=True)
    run_config = {
        "model": model, "dataset": dataset, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
        "optimizer": optimizer, "ema": ema, "limit": limit, "valid_limit": valid_limit, "strategy": strategy,
        "replicas": dist.num_replicas_in_sync, "jit_compile": jit_compile, "precision": precision,
        "checkpoint_every": checkpoint_every, **extra, "model_options": model_options,
        "model_class": type(mdl).__name__, "model_config": mdl.get_config(),
    }
    if train_split.source is not None:  # factor data: which renderer or file the images came from
        run_config["data_source"] = getattr(train_split.source, "kind", None)
    files.write_json(os.path.join(out, CONFIG_FILE), run_config, indent=2, default=float)
    train_ds = train_split.dataset(batch_size, shuffle=True, labels=labels, seed=seed)
    valid_ds = valid_split.dataset(batch_size, shuffle=False, labels=labels)
    backup = SafeBackupAndRestore(os.path.join(out, "backup"), save_freq=checkpoint_every)
    shown_x, shown_y = valid_split.head(16).arrays()
    cbs = [backup, TensorBoardImages(os.path.join(out, "logs"), shown_x, shown_y, seed=seed)]
    if extra["lr_decay"] is not None:  # before the logger, which then records each epoch's rate
        cbs.append(exponential_lr(lr, extra["lr_decay"]))
    recorder = run_history.RunHistory(out)
    cbs.append(recorder)
    best = None
    if extra["keep_best"]:  # before the checkpoint: an epoch after which it stops training is checkpointed
        best = KeepBest(os.path.join(out, "best"), patience=extra["early_stopping"])
        cbs.insert(0, best)
    cbs += list(callbacks)
    start = time.time()
    history = mdl.fit(train_ds, validation_data=valid_ds, epochs=epochs, callbacks=cbs, verbose=verbose)
    seconds = time.time() - start
    if backup.diverged is not None:
        raise RunError(
            f"training diverged: the loss became {backup.diverged['loss']} at step {backup.diverged['step']}; "
            f"the last good checkpoint is kept in {backup.backup_dir} and {os.path.join(out, MODEL_FILE)} was "
            "not written (lower --lr or check the data)")
    summary = {"resumed_from_step": backup.resumed_step, "steps": int(mdl.optimizer.iterations.numpy()),
               "seconds": seconds, "epochs_done": len(recorder.rows)}
    if best is not None:
        summary["best_epoch"] = None if best.state["best_epoch"] is None else best.state["best_epoch"] + 1
        summary["best_val_loss"] = best.state["best"]  # of the monitored quantity:
        summary["best_monitor"] = best.state["monitor"]  # val_neg_elbo (or val_loss if a model has none)
        summary["stopped_epoch"] = None if best.state["stopped_epoch"] is None else best.state["stopped_epoch"] + 1
    written = [MODEL_FILE, CONFIG_FILE, HISTORY_FILE, run_history.CSV_FILE, "logs/"]
    try:  # the checkpoint stays until the model and the history are on disk: a kill here loses nothing
        if fit_density:
            tx, ty = train_split.arrays()
            mdl.fit_density(tx, ty, seed=seed)
        checkpoint = backup._weights_path  # about the size of model.keras: weights and optimizer state
        files.check_free_space(out, os.path.getsize(checkpoint) if os.path.exists(checkpoint) else 0, MODEL_FILE)
        atomic_save(mdl, os.path.join(out, MODEL_FILE))
        if chief:
            written += [os.path.basename(p) for p in write_figures(mdl, out, valid_split, seed=seed).values()]
        run_history.write(out, recorder.rows, {**summary, "finished": True})
    except OSError as err:
        raise RunError(f"{files.describe_write_error(err, out)} while writing the trained model; the checkpoint in "
                       f"{backup.backup_dir} is kept: free space and rerun the command to finish") from None
    backup.discard_previous()
    written += (["best/"] if best is not None else []) + ["backup/"]
    history.run_files = written
    return mdl, history


def load_run(run_dir):
    """(model, run config) of a run directory, with clear errors for missing or corrupt files."""
    from kvae import models  # noqa: F401  (registers the serialisable classes)

    if not os.path.exists(run_dir):
        raise RunError(f"run directory {run_dir!r} does not exist")
    if not os.path.isdir(run_dir):
        raise RunError(f"{run_dir!r} is a file, not a run directory (pass the directory that holds {MODEL_FILE})")
    path = os.path.join(run_dir, MODEL_FILE)
    if not os.path.isfile(path):
        raise RunError(f"{path} not found: train first with `kvae train ... --out {run_dir}`")
    if not zipfile.is_zipfile(path):
        raise RunError(f"{path} is corrupt: it is not a .keras (zip) archive, e.g. a truncated copy; "
                       "retrain or restore the file")
    try:
        model = keras.models.load_model(path)
    except Exception as err:
        msg = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise RunError(f"{path} could not be loaded: it is corrupt or not a kvae model "
                       f"({type(err).__name__}: {msg})") from None
    config = {}
    cfg_path = os.path.join(run_dir, CONFIG_FILE)
    if os.path.isfile(cfg_path):
        try:
            with open(cfg_path) as f:
                config = json.load(f)
        except ValueError as err:
            raise RunError(f"{cfg_path} is not valid JSON: {err}") from None
    return model, config
