"""The bodies of the ``kvae`` commands: each takes the parsed arguments and calls the library.

The parser (:mod:`kvae.cli.parser`) has validated every value it can; what needs the model or the
data (a run without a data set, ``--labels`` on an unconditional model ...) is checked here.
"""
import json
import os
import sys

from kvae.cli.parser import UsageError


def _split_for(args, config):
    from kvae.data import datasets as data

    dataset = args.dataset or config.get("dataset")
    if dataset is None:
        from kvae.errors import ConfigError

        raise ConfigError("the run does not record its data set: pass --dataset")
    return data.load(dataset, args.split, args.data_dir)


def train(args):
    from kvae.training import runs

    options = {k[len("model__"):]: v for k, v in vars(args).items() if k.startswith("model__") and v is not None}
    for key, value in options.items():
        if isinstance(value, list):
            options[key] = tuple(value)
    _, history = runs.train(model=args.model, dataset=args.dataset, out=args.out, data_dir=args.data_dir, epochs=args.epochs,
               batch_size=args.batch_size, lr=args.lr, seed=args.seed, optimizer=args.optimizer, ema=args.ema,
               limit=args.limit, valid_limit=args.valid_limit, verbose=2 if args.quiet else "auto", fit_density=args.fit_density,
               strategy=args.strategy, jit_compile=args.jit_compile, precision=args.precision,
               checkpoint_every=args.checkpoint_every, steps_per_execution=args.steps_per_execution,
               keep_best=args.keep_best, init_weights=args.init_weights, clip_norm=args.clip_norm,
               early_stopping=args.early_stopping, lr_decay=args.lr_decay, **options)
    if history is not None:  # None: the run had finished, and said so
        print(f"wrote {args.out}: {', '.join(history.run_files)}")


def evaluate(args):
    from kvae.cli.progress import progress
    from kvae.evaluation import metrics as evaluation
    from kvae.training import runs
    from kvae.data.checks import validate
    from kvae.errors import ConfigError

    if args.dci_trees is not None:
        from kvae.evaluation.disentanglement_trees import check_trees

        check_trees(args.dci_trees)
    model, config = runs.load_run(args.run_dir)
    split = _split_for(args, config)
    if args.disentanglement and split.source is None:
        raise ConfigError(f"--disentanglement needs a data set with ground-truth factors (dsprites); "
                          f"{split.name} has none")
    table = args.nll or not args.disentanglement  # --disentanglement alone: the metrics only
    result = {}
    if table or args.diagnostics or args.sample_quality:
        x, y = split.arrays()
        validate(x, model.data_shape, model.likelihood.support, name=f"{split.name}/{split.split}")
        n = len(x) if args.limit is None else min(args.limit, len(x))
    if table:
        from kvae.evaluation.journal import NLLJournal, hold_run_dir

        journal, kept, held = None, 0, -1
        if model.has_density and model.has_likelihood:  # hours at k=1000 for big models: survive a kill
            held = hold_run_dir(args.run_dir)
            if held is None:
                print(f"another kvae evaluate of {args.run_dir} keeps its evaluate.journal.npz: this one keeps no "
                      "journal (an interruption restarts it)", file=sys.stderr)
            else:
                journal = NLLJournal.for_run(args.run_dir, model, x[:n],
                                             None if y is None or not model.conditional else y[:n], args.k,
                                             args.seed, args.batch_size, fresh=args.fresh)
                if args.fresh:
                    journal.remove()
                kept_values = journal.load()
                kept = 0 if kept_values is None else len(kept_values)
        # the bar counts this run's examples, so its rate and time left are this run's
        bar = progress(n - kept, "example", f"importance-sampled NLL at k={args.k}")
        try:
            result = evaluation.evaluate(model, x, y, k=args.k, batch_size=args.batch_size, seed=args.seed,
                                         limit=args.limit, progress=lambda done, total: bar.update(done - kept),
                                         journal=journal, jobs=args.nll_jobs,
                                         model_file=os.path.join(args.run_dir, runs.MODEL_FILE))
        finally:
            if held not in (None, -1):
                os.close(held)
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
                bar.append(progress(total_steps, "step", "disentanglement metrics"))
            bar[0].update(done)

        print("disentanglement metrics", file=sys.stderr)
        represent = evaluation.representation(model, batch_size=2048, seed=args.seed)
        scores = disentanglement.evaluate(split.source, represent, seed=args.seed, num_train=args.disentanglement_train,
                                          num_test=args.disentanglement_test, progress=shown, n_jobs=args.jobs,
                                          **({"trees": args.dci_trees} if args.dci_trees is not None else {}))
        result["disentanglement_seconds"] = scores.pop("seconds")
        result["disentanglement_encoding"] = scores.pop("encoding")
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


def sample(args):
    from kvae.evaluation import plotting
    from kvae.training import runs
    from kvae.errors import ConfigError

    model, _ = runs.load_run(args.run_dir)
    labels = args.labels
    if labels is not None and not model.conditional:
        raise ConfigError("--labels only applies to conditional models (e.g. --model cvae)")
    if labels is not None and len(labels) == 1:
        labels = labels[0]
    if args.layer is not None:
        if not hasattr(model, "sample_from_layer"):
            raise ConfigError(f"--layer needs a hierarchical model (lvae); {type(model).__name__} has one latent group")
        images = model.sample_from_layer(args.layer, rows=args.n, cols=8, seed=args.seed).numpy()
        plotting.save_image_grid(images, args.out, ncol=8)
        print(f"wrote {args.out}")
        return
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


def fit_density(args):
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


def fit_prior(args):
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


def reconstruct(args):
    import numpy as np

    from kvae.evaluation import plotting
    from kvae.training import runs

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

        raise ConfigError(f"this command needs {', '.join(missing)}, which {'are' if len(missing) > 1 else 'is'} "
                          f"not installed: "
                          f"pip install 'kvae[{extra}]'")


def export(args):
    _missing_extra(("onnx", "tf2onnx", "onnxruntime"), "export")
    from kvae.export import bundle
    from kvae.training import runs

    key = None
    if args.key_file is not None:
        try:
            with open(args.key_file, "rb") as f:
                key = f.read().strip()
        except OSError as err:
            raise UsageError(f"cannot read --key-file {args.key_file}: {err.strerror}") from None
        if not key:
            raise UsageError(f"--key-file {args.key_file} is empty")
    if os.path.isdir(args.out) and os.listdir(args.out) and not args.overwrite:
        raise UsageError(f"{args.out} exists and is not empty: pass --overwrite to replace it")
    model, config = runs.load_run(args.run_dir)
    extra = None
    if args.explorer_examples:
        from kvae.export import explorer

        found = explorer.run_examples(config, args.data_dir, n=args.explorer_examples)
        if found is None:
            print("no validation images found for the run's data set: explorer.json not written")
        else:
            extra = explorer.explorer_data(model, *found)
    manifest = bundle.export(model, args.out, opset=args.opset, check=not args.no_check, explorer=extra,
                             overwrite=args.overwrite, key=key)
    for name, diffs in manifest.get("parity", {}).items():
        print(f"{name:12s} |keras-savedmodel| {diffs['savedmodel_max_abs_diff']:.2e}  "
              f"|keras-onnx| {diffs['onnx_max_abs_diff']:.2e}")
    print(f"wrote {args.out}: savedmodel/1, onnx/*.onnx, manifest.json, bundle.sha256")


def explore(args):
    if (args.run_dir is None) == (args.pretrained is None):
        raise UsageError("give a run directory or --pretrained NAME (one of them)")
    if args.port > 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    _missing_extra(("onnx", "tf2onnx", "onnxruntime"), "export")
    from kvae.export import explorer

    explorer.explore(args.run_dir, args.pretrained, args.host, args.port, not args.no_browser, args.data_dir)


def pretrained(args):
    from kvae.pretrained import store

    if args.action == "list":
        for name in store.names():
            info = store.manifest(name)
            m = info.get("measured", {})
            nll = f"NLL {m['nll']:.2f} nats (k={m['k']}, n={m['n']}, {m.get('split', 'valid')})" if "nll" in m else ""
            print(f"{name:24s} {info.get('description', '')}  {nll}")
        return
    store.fetch(args.name, args.out, with_optimizer=args.with_optimizer)
    note = " (with the run's optimizer, its moments at zero)" if args.with_optimizer else ""
    print(f"wrote {args.out}: model.keras{note}, config.json, pretrained.json")


#: ``kvae COMMAND``'s body, by command
COMMANDS = {"train": train, "evaluate": evaluate, "sample": sample, "reconstruct": reconstruct, "export": export,
            "fit-density": fit_density, "fit-prior": fit_prior, "pretrained": pretrained, "explore": explore}
