"""The regularised family's claims, reproduced at a small budget on the bundled digits (8x8) or on
static binarised MNIST (``--dataset binarized_mnist --data-dir DIR``; evaluated on its validation
split: there is no test split).

1. ``infovae``: with a powerful decoder (a PixelCNN that sees most of the image), the plain VAE
   lets the latent collapse while InfoVAE's MMD-VAE (alpha=1, lambda=1000) keeps more active
   units and a higher mutual information I(x; z) (Zhao, Song & Ermon).
2. ``mae``: the same VAE with MAE's mutual posterior-divergence regulariser (eta, gamma, free
   bits) raises the active units / KL over the model without it, with a held-out NLL no worse
   (Ma, Zhou & Hovy 2019).
3. ``rae``: an RAE sampled through the ex-post 10-component Gaussian mixture gives samples closer
   to held-out data than the same RAE sampled from N(0, I) (Ghosh et al. 2020).  Closeness is the
   MMD (IMQ kernel) between sample and test *features*, the features being a fixed PCA (20
   components) of the training images; the same for a VAE as a reference.

Each claim writes ``OUT/<claim>.json`` (numbers, settings, ``reproduced``) and ``OUT/<claim>.png``.

    python apps/regularised_claims.py --epochs 40 --out runs/regularised
    python apps/regularised_claims.py --dataset binarized_mnist --data-dir DIR --limit 20000 --epochs 5 \
        --eval-limit 1000 --out runs/regularised_mnist
"""
import argparse
import json
import os
import time

import keras
import numpy as np

import kvae
from kvae.data import datasets as data
from kvae.evaluation import metrics as evaluation, plotting
from kvae.nn.divergences import mmd


def _train(model, x, y, args, lr=1e-3):
    keras.utils.set_random_seed(args.seed)
    model.compile(optimizer=keras.optimizers.Adam(lr))
    start = time.time()
    model.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0)
    return time.time() - start


def _summary(model, xv, yv, xt, yt, k=100):
    diag = evaluation.diagnostics(model, xv, yv, xt, yt)
    stats = evaluation.posterior_statistics(model, xv, yv) if model.has_density else None
    nll = float(evaluation.importance_sampled_nll(model, xv, yv, k=k).mean()) if model.has_density else None
    return {"active_units": diag["active_units"], "mutual_information": diag["mutual_information"],
            "kl": None if stats is None else float(stats["kl"].mean()), "mmd_to_prior": diag["mmd_to_prior"],
            "log_det_cov": diag["log_det_cov"], "probe_accuracy": diag.get("probe_accuracy"), "nll": nll,
            "nll_k": k}


def _pixelcnn(shape):
    """A PixelCNN whose receptive field covers most of the image (5 x 3x3 layers on 8x8 digits,
    8 x 5x5 with 16 filters on 28x28 MNIST): a decoder powerful enough to ignore z."""
    layers, kernel, filters = (5, 3, 32) if shape[0] <= 8 else (8, 5, 16)
    return kvae.parts.likelihoods.PixelCNNLikelihood(shape, num_layers=layers, kernel_size=kernel, filters=filters,
                                               name="likelihood")


def claim_infovae_or_mae(kind, split, args):
    (xt, yt), (xv, yv) = split["train"].arrays(), split["eval"].arrays()
    shape = split["train"].input_shape
    base = dict(input_shape=shape, latent_dim=args.latent_dim, hidden=(256,), seed=args.seed)
    plain = kvae.VAE(decoder=_pixelcnn(shape), **base)
    if kind == "infovae":
        other = kvae.InfoVAE(decoder=_pixelcnn(shape), alpha=1.0, lambda_=1000.0, **base)  # the authors' kernel
    else:
        other = kvae.MAE(decoder=_pixelcnn(shape), eta=args.eta, gamma=args.gamma, free_bits_total=0.05, **base)
    results = {}
    for name, model in (("vae", plain), (kind, other)):
        seconds = _train(model, xt, None, args)
        results[name] = {**_summary(model, xv, yv, xt, yt, k=args.k), "train_seconds": seconds}
        print(kind, name, results[name], flush=True)
    a, b = results["vae"], results[kind]
    criteria = {"more_active_units": b["active_units"] > a["active_units"],
                "active_units_at_ceiling": a["active_units"] == b["active_units"] == args.latent_dim,
                "higher_mutual_information": (b["mutual_information"] or 0) > (a["mutual_information"] or 0),
                "more_kl": (b["kl"] or 0) > (a["kl"] or 0),
                "nll_no_worse": b["nll"] <= a["nll"]}
    key = "higher_mutual_information" if kind == "infovae" else "more_kl"
    # active units cannot grow past the latent size: a tie at the ceiling does not count against the claim
    reproduced = criteria[key] and (criteria["more_active_units"] or criteria["active_units_at_ceiling"])
    if kind == "mae":
        reproduced = reproduced and criteria["nll_no_worse"]
    rows = [xv[:8]] + [m.reconstruct(xv[:8], seed=1).numpy() for m in (plain, other)]
    plotting.save_image_grid(np.concatenate(rows), os.path.join(args.out, f"{kind}.png"), ncol=8,
                             title=f"rows: data | VAE recon | {kind} recon (PixelCNN decoder)")
    return {"claim": f"with a PixelCNN decoder, {kind} keeps more active units and "
                     f"{'higher I(x;z)' if kind == 'infovae' else 'more KL'} than the plain VAE",
            "reproduced": bool(reproduced), "criteria": criteria, "results": results}


def claim_rae(split, args):
    from sklearn.decomposition import PCA

    (xt, _), (xv, _) = split["train"].arrays(), split["eval"].arrays()
    shape = split["train"].input_shape
    pca = PCA(20, random_state=0).fit(xt.reshape(len(xt), -1))

    def features(images):
        return pca.transform(np.asarray(images).reshape(len(images), -1)).astype(np.float32)

    test_f = features(xv)
    results = {}
    models = {"rae": kvae.RAE(input_shape=shape, latent_dim=args.latent_dim, hidden=(256, 256),
                              regularization="l2", latent_weight=1e-2, reg_weight=1e-4, seed=args.seed),
              "vae": kvae.VAE(input_shape=shape, latent_dim=args.latent_dim, hidden=(256, 256), seed=args.seed)}
    grids = []
    for name, model in models.items():
        seconds = _train(model, xt, None, args)
        model.fit_density(xt)
        entry = {"train_seconds": seconds}
        for source in ("density", "prior"):
            samples = model.sample(len(xv), seed=3, source=source).numpy()
            entry[f"mmd_features_{source}"] = float(mmd(features(samples), test_f, "imq", (1.0,)))
            grids.append(samples[:8])
        results[name] = entry
        print("rae claim", name, entry, flush=True)
    results["reference_train_vs_test"] = float(mmd(features(xt[:len(xv)]), test_f, "imq", (1.0,)))
    plotting.save_image_grid(np.concatenate(grids), os.path.join(args.out, "rae.png"), ncol=8,
                             title="rows: RAE+GMM | RAE+N(0,I) | VAE+GMM | VAE+N(0,I)")
    reproduced = results["rae"]["mmd_features_density"] < results["rae"]["mmd_features_prior"]
    return {"claim": "RAE samples through the ex-post GMM are closer to held-out data than through N(0,I)",
            "feature_extractor": "PCA(20) of the training images (scikit-learn, random_state=0)",
            "reproduced": bool(reproduced), "results": results}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--gamma", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", choices=("infovae", "mae", "rae"))
    p.add_argument("--dataset", default="digits", choices=("digits", "binarized_mnist"))
    p.add_argument("--data-dir", default=os.environ.get("KVAE_DATA_DIR"))
    p.add_argument("--limit", type=int, help="training examples used (default: all)")
    p.add_argument("--eval-limit", type=int, default=1000, help="held-out examples evaluated")
    p.add_argument("--k", type=int, default=100, help="importance samples for the held-out NLL")
    p.add_argument("--out", default="runs/regularised")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    eval_split = "test" if args.dataset == "digits" else "valid"  # binarised MNIST: no test split here
    split = {"train": data.load(args.dataset, "train", args.data_dir),
             "eval": data.load(args.dataset, eval_split, args.data_dir)}
    split["train"].x = split["train"].x[:args.limit]
    split["eval"].x = split["eval"].x[:args.eval_limit]
    for s in split.values():
        s.y = None if s.y is None else s.y[:len(s.x)]
    for claim in args.only or ("infovae", "mae", "rae"):
        report = claim_rae(split, args) if claim == "rae" else claim_infovae_or_mae(claim, split, args)
        report["settings"] = vars(args)
        with open(os.path.join(args.out, f"{claim}.json"), "w") as f:
            json.dump(report, f, indent=2)
        print(f"{claim}: reproduced = {report['reproduced']}", flush=True)


if __name__ == "__main__":
    main()
