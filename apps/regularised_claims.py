"""The regularised family's claims, reproduced at a small budget on the bundled digits (8x8).

1. ``infovae``: with a powerful decoder (a PixelCNN that sees most of the image), the plain VAE
   lets the latent collapse while InfoVAE's MMD-VAE (alpha=1, lambda=1000) keeps more active
   units and a higher mutual information I(x; z) (Zhao, Song & Ermon).
2. ``mae``: the same VAE with MAE's mutual posterior-divergence regulariser (eta, gamma, free
   bits) raises the active units / KL over the model without it (Ma, Zhou & Hovy 2019).
3. ``rae``: an RAE sampled through the ex-post 10-component Gaussian mixture gives samples closer
   to held-out data than the same RAE sampled from N(0, I) (Ghosh et al. 2020).  Closeness is the
   MMD (IMQ kernel) between sample and test *features*, the features being a fixed PCA (20
   components) of the training images; the same for a VAE as a reference.

Each claim writes ``OUT/<claim>.json`` (numbers, settings, ``reproduced``) and ``OUT/<claim>.png``.

    python apps/regularised_claims.py --epochs 40 --out runs/regularised
"""
import argparse
import json
import os
import time

import keras
import numpy as np

import kvae
from kvae import data, evaluation, plotting
from kvae.divergences import mmd


def _train(model, x, y, args, lr=1e-3):
    keras.utils.set_random_seed(args.seed)
    model.compile(optimizer=keras.optimizers.Adam(lr))
    start = time.time()
    model.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0)
    return time.time() - start


def _summary(model, xv, yv, xt, yt):
    diag = evaluation.diagnostics(model, xv, yv, xt, yt)
    stats = evaluation.posterior_statistics(model, xv, yv) if model.has_density else None
    return {"active_units": diag["active_units"], "mutual_information": diag["mutual_information"],
            "kl": None if stats is None else float(stats["kl"].mean()), "mmd_to_prior": diag["mmd_to_prior"],
            "log_det_cov": diag["log_det_cov"], "probe_accuracy": diag.get("probe_accuracy")}


def _pixelcnn(shape):
    return kvae.likelihoods.PixelCNNLikelihood(shape, num_layers=5, kernel_size=3, filters=32, name="likelihood")


def claim_infovae_or_mae(kind, split, args):
    (xt, yt), (xv, yv) = split["train"].arrays(), split["test"].arrays()
    shape = split["train"].input_shape
    base = dict(input_shape=shape, latent_dim=args.latent_dim, hidden=(256,), seed=args.seed)
    plain = kvae.VAE(decoder=_pixelcnn(shape), **base)
    if kind == "infovae":
        other = kvae.InfoVAE(decoder=_pixelcnn(shape), alpha=1.0, lambda_=1000.0, kernel="imq", **base)
    else:
        other = kvae.MAE(decoder=_pixelcnn(shape), eta=args.eta, gamma=args.gamma, free_bits_total=0.05, **base)
    results = {}
    for name, model in (("vae", plain), (kind, other)):
        seconds = _train(model, xt, None, args)
        results[name] = {**_summary(model, xv, yv, xt, yt), "train_seconds": seconds}
        print(kind, name, results[name], flush=True)
    a, b = results["vae"], results[kind]
    criteria = {"more_active_units": b["active_units"] > a["active_units"],
                "active_units_at_ceiling": a["active_units"] == b["active_units"] == args.latent_dim,
                "higher_mutual_information": (b["mutual_information"] or 0) > (a["mutual_information"] or 0),
                "more_kl": (b["kl"] or 0) > (a["kl"] or 0)}
    key = "higher_mutual_information" if kind == "infovae" else "more_kl"
    # active units cannot grow past the latent size: a tie at the ceiling does not count against the claim
    reproduced = criteria[key] and (criteria["more_active_units"] or criteria["active_units_at_ceiling"])
    rows = [xv[:8]] + [m.reconstruct(xv[:8], seed=1).numpy() for m in (plain, other)]
    plotting.save_image_grid(np.concatenate(rows), os.path.join(args.out, f"{kind}.png"), ncol=8,
                             title=f"rows: data | VAE recon | {kind} recon (PixelCNN decoder)")
    return {"claim": f"with a PixelCNN decoder, {kind} keeps more active units and "
                     f"{'higher I(x;z)' if kind == 'infovae' else 'more KL'} than the plain VAE",
            "reproduced": bool(reproduced), "criteria": criteria, "results": results}


def claim_rae(split, args):
    from sklearn.decomposition import PCA

    (xt, _), (xv, _) = split["train"].arrays(), split["test"].arrays()
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
    p.add_argument("--out", default="runs/regularised")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    split = {s: data.load("digits", s) for s in ("train", "test")}
    for claim in args.only or ("infovae", "mae", "rae"):
        report = claim_rae(split, args) if claim == "rae" else claim_infovae_or_mae(claim, split, args)
        report["settings"] = vars(args)
        with open(os.path.join(args.out, f"{claim}.json"), "w") as f:
            json.dump(report, f, indent=2)
        print(f"{claim}: reproduced = {report['reproduced']}", flush=True)


if __name__ == "__main__":
    main()
