"""VLAE's defaults against its earlier configuration, trained with the same budget.

Trains, with ``kvae.training.runs.train`` (what ``kvae train --model vlae`` runs: Adamax 2e-3, Polyak
averaging 0.998, batch 100, seed 0), on static binarised MNIST:

* ``resnet_input``:      the defaults: ResNet encoder (pythae's MNIST ResNet), z's 4-channel map
                         concatenated to the image at the PixelCNN's input
* ``mlp_every_layer``:   ``--network mlp --conditioning every_layer`` (MLP 500-500 encoder, the map
                         seen by every masked layer; the pretrained VLAE's configuration)

and reports, per epoch, the validation -ELBO and KL of the raw weights (Keras' validation pass),
then the importance-sampled NLL (k samples), KL and active units of the final (averaged) weights
on the first ``--eval-limit`` validation images, and the training time.  Writes
``OUT/vlae_defaults.json`` and ``OUT/vlae_defaults.png`` (validation -ELBO and KL by epoch).

    python apps/vlae_defaults.py --data-dir DIR --epochs 3 --out runs/vlae_defaults
"""
import argparse
import csv
import json
import os
import time

from kvae.data import datasets as data
from kvae.evaluation import metrics as evaluation
from kvae.training import runs

VARIANTS = {
    "resnet_input": dict(),
    "mlp_every_layer": dict(network="mlp", conditioning="every_layer"),
}


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, result in report["results"].items():
        epochs = range(1, len(result["val_neg_elbo"]) + 1)
        axes[0].plot(epochs, result["val_neg_elbo"], marker="o", label=name)
        axes[1].plot(epochs, result["val_kl"], marker="o", label=name)
    axes[0].set(xlabel="epoch", ylabel="validation -ELBO (nats)", title="raw weights, all 10000 valid images")
    axes[1].set(xlabel="epoch", ylabel="validation KL (nats)", title="how much z carries")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("KVAE_DATA_DIR"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--eval-limit", type=int, default=2000)
    p.add_argument("--only", nargs="*", choices=sorted(VARIANTS))
    p.add_argument("--out", default="runs/vlae_defaults")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    valid_x, _ = data.load("binarized_mnist", "valid", args.data_dir).arrays()
    path = os.path.join(args.out, "vlae_defaults.json")
    report = json.load(open(path)) if os.path.isfile(path) else {"settings": vars(args), "results": {}}
    for name in args.only or VARIANTS:
        start = time.time()
        model, _ = runs.train(model="vlae", dataset="binarized_mnist", data_dir=args.data_dir,
                              out=os.path.join(args.out, name), epochs=args.epochs, verbose=2,
                              **VARIANTS[name])
        seconds = time.time() - start
        result = evaluation.evaluate(model, valid_x, k=args.k, limit=args.eval_limit)
        result.pop("kl_per_dim", None)
        with open(os.path.join(args.out, name, "history.csv")) as f:  # every epoch, across resumed runs
            rows = list(csv.DictReader(f))
        hist = {key: [float(r[key]) for r in rows] for key in ("val_neg_elbo", "val_kl")}
        result.update(train_seconds=seconds, options=VARIANTS[name], val_neg_elbo=hist["val_neg_elbo"],
                      val_kl=hist["val_kl"], weights=model.count_params())
        report["results"][name] = result
        print(f"{name}: NLL {result['nll']:.2f} ± {result['nll_stderr']:.2f} (k={args.k}), KL {result['kl']:.2f}, "
              f"AU {result['active_units']}, last validation -ELBO {hist['val_neg_elbo'][-1]:.2f}, "
              f"{seconds:.0f} s", flush=True)
        with open(path, "w") as f:
            json.dump(report, f, indent=2, default=str)
    plot(report, os.path.join(args.out, "vlae_defaults.png"))


if __name__ == "__main__":
    main()
