"""Sample quality of the generative models and ex-post samplers at one budget on static binarised MNIST.

Trains (``kvae.training.runs.train``, what ``kvae train`` runs; a rerun resumes or reuses finished runs) each
model with its constructor's defaults for ``--epochs`` epochs on the 50000 training images (batch
100, Adam 1e-3), then draws ``--n`` samples from each sampler and scores them against as many
validation images with :func:`kvae.evaluation.sample_quality.evaluate` (FID in the shipped LeNet's feature
space and in a PCA(20) space, precision and recall):

* ``vae``: N(0, I);  ``vae + two-stage``: a second VAE fitted on the codes (Dai & Wipf 2019);
* ``rae + gmm`` / ``rae + maf``: the RAE-L2 with an ex-post Gaussian mixture / MAF (Ghosh et al. 2020);
* ``vq-vae + pixelcnn``: the VQ-VAE with the PixelCNN prior over its codes (van den Oord et al. 2017);
* ``aae``: the adversarial autoencoder's N(0, I) (Makhzani et al. 2016);
* ``vae-gan``: N(0, I) through the VAE-GAN's decoder (Larsen et al. 2016);
* ``rhvae`` / ``rhvae + manifold``: the RHVAE's N(0, I), and its manifold sampler (HMC on the
  learned metric's volume, Chadebec et al. 2020).

Pixels are drawn from p(x|z) (the data are binary).  Writes OUT/sample_quality.json (merged with
what is there) and OUT/samples.png (one row of samples per sampler; with ``--only``,
OUT/samples_<names>.png).

    python apps/sample_quality_zoo.py --data-dir DIR --epochs 5 --out runs/sample_quality
"""
import argparse
import json
import os
import time

import numpy as np

from kvae.data import datasets as data
from kvae.evaluation import plotting, sample_quality
from kvae.training import runs

MODELS = ("vae", "rae", "vq-vae", "aae", "vae-gan", "rhvae")
#: sampler name -> (model run, how z is drawn)
SAMPLERS = {"vae": ("vae", "prior"), "vae + two-stage": ("vae", "two-stage"), "rae + gmm": ("rae", "gmm"),
            "rae + maf": ("rae", "maf"), "vq-vae + pixelcnn": ("vq-vae", "pixelcnn"), "aae": ("aae", "prior"),
            "vae-gan": ("vae-gan", "prior"), "rhvae": ("rhvae", "prior"), "rhvae + manifold": ("rhvae", "manifold")}


def _trained(name, args):
    out = os.path.join(args.out, name)
    if os.path.isfile(os.path.join(out, runs.MODEL_FILE)) and os.path.isfile(os.path.join(out, "history.json")):
        model, _ = runs.load_run(out)
        return model, None
    start = time.time()
    model, _ = runs.train(model=name, dataset="binarized_mnist", data_dir=args.data_dir, out=out,
                          epochs=args.epochs, batch_size=100, lr=1e-3, optimizer="adam", seed=args.seed,
                          verbose=2, checkpoint_every=500)
    return model, time.time() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("KVAE_DATA_DIR"))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--n", type=int, default=2000, help="samples and validation images compared")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prior-epochs", type=int, default=20, help="epochs of the ex-post MAF, two-stage VAE and "
                                                                "the VQ-VAE's PixelCNN prior")
    p.add_argument("--only", nargs="*", choices=sorted(SAMPLERS))
    p.add_argument("--out", default="runs/sample_quality")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    train_x = data.load("binarized_mnist", "train", args.data_dir).arrays()[0]
    valid_x = data.load("binarized_mnist", "valid", args.data_dir).arrays()[0][:args.n]
    path = os.path.join(args.out, "sample_quality.json")
    report = json.load(open(path)) if os.path.isfile(path) else {"samplers": {}}
    report.update(budget=f"{args.epochs} epochs on 50000 images, batch 100, Adam 1e-3, each model's defaults",
                  n=args.n, seed=args.seed, prior_epochs=args.prior_epochs)
    models, rows = {}, []
    for name in args.only or list(SAMPLERS):
        run, how = SAMPLERS[name]
        if run not in models:
            models[run], seconds = _trained(run, args)
            if seconds is not None:
                report.setdefault("train_seconds", {})[run] = seconds
        model = models[run]
        start = time.time()
        fit = None
        if how in ("gmm", "maf", "two-stage"):
            sampler = model.with_density(how)
            if how != "gmm":
                sampler.density.epochs = args.prior_epochs
            fit = sampler.fit_density(train_x, seed=args.seed)
            source = "density"
        elif how == "pixelcnn":
            sampler, source = model, "prior"
            fit = model.fit_prior(train_x, seed=args.seed, epochs=args.prior_epochs, verbose=True)
        elif how == "manifold":
            sampler, source = model, "manifold"
        else:
            sampler, source = model, "prior"
        samples = np.asarray(sampler.sample(args.n, seed=args.seed, mean=False, source=source))
        scores = sample_quality.evaluate(samples, valid_x, train_x[:10000], seed=args.seed)
        fit = fit if isinstance(fit, dict) else None  # the GMM's fit returns scikit-learn's estimator
        report["samplers"][name] = {**scores, "fit": fit, "sampler_seconds": time.time() - start}
        rows.append(samples[:12])
        print(f"{name}: FID(LeNet) {scores['fid_lenet']:.1f}  FID(PCA) {scores['fid_pca']:.2f}  "
              f"precision {scores['precision']:.3f}  recall {scores['recall']:.3f}", flush=True)
        with open(path + ".tmp", "w") as f:  # replaced whole: a failure never leaves half a file
            json.dump(report, f, indent=2, default=float)
        os.replace(path + ".tmp", path)
    if rows:
        names = args.only or list(SAMPLERS)
        png = "samples.png" if not args.only else "samples_" + "_".join(
            "".join(c if c.isalnum() else "-" for c in n) for n in names) + ".png"
        plotting.save_image_grid(np.concatenate(rows), os.path.join(args.out, png), ncol=12,
                                 title="rows: " + ", ".join(names))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
