"""kvae against pythae (PyTorch) on the same models, data, network, optimizer, batch and epochs:
seconds per training step and per epoch, and held-out NLL, side by side in one run.

pythae and a CPU build of PyTorch are installed by this script into their own virtual environment
(``--venv``, default ``benchmarks/.peer_pythae_venv``; never a dependency of kvae).  Each library
trains in its own process, ``--repeats`` times per model, interleaved (each of kvae, kvae-1 and pythae
first in turn), so that a slow spell of the shared machine falls on all; steps and epochs are
pooled over the repeats.  Models both libraries have:
VAE, β-VAE (β = 4), IWAE (K = 5), RAE-L2, InfoVAE-MMD (the MMD-VAE) and VQ-VAE with the MLP
784-500-500-50 and a Bernoulli decoder, Adam 1e-3, batch 100, on the first ``--limit`` images of
static binarised MNIST (``$KVAE_DATA_DIR``), NLL on the first ``--n-eval`` validation images with
each library's own importance-sampled estimator at the same k (not for the RAE and the VQ-VAE,
whose encoders are deterministic), and for every model the reconstruction error -log p(x | E[x|z]) at the posterior
mean code, computed by the same arithmetic on both sides.  pythae is trained by a plain loop over its models' loss (its trainer
adds logging on top), kvae by ``model.fit`` twice: as ``kvae train`` runs it (``kvae``: its default
``steps_per_execution``, several steps per call of the compiled step) and at Keras' compile default
of one step per call (``kvae-1``); the arithmetic of a step is the same in both.

    python benchmarks/peer_pythae.py [--models vae,beta-vae,iwae,rae,infovae,vq-vae] [--epochs 3] [--repeats 3] [--limit 10000]
                                     [--k 500] [--n-eval 500] [--out benchmarks/peer_pythae.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _timing  # noqa: E402
from _peer_metrics import bernoulli_error  # noqa: E402
from _report import emit  # noqa: E402

from kvae.training import runs  # noqa: E402

#: what the peer environment gets; torch 2.13.0 is the CPU build on this machine's package mirror
PEER_PACKAGES = (os.environ.get("KVAE_PEER_TORCH", "torch==2.13.0"), "pythae==0.1.2")
#: kvae's side of each model; the pythae side is ``_pythae_worker.build``.  RAE: pythae's decoder
#: optimizer decays by reg_weight = 1e-7 (the gradient of 1/2 * 1e-7 * ||w||^2), kvae's DecoderL2 is
#: reg_weight * ||w||^2, hence 5e-8.  InfoVAE: the MMD-VAE (alpha 1, lambda 1000, RBF exp(-d^2 / 2D)).
#: VQ-VAE: pythae's MLP VQ-VAE reshapes the 50-d code to [B, 1, 1, 50] and permutes it to
#: [B, 1, 50, 1] before quantising, so its embedding_dim is 1: each of the 50 numbers is quantised
#: on its own among 512 scalar entries (kvae: a 1 x 50 grid of 1-d codes), EMA codebook; its
#: commitment term is 0.25 times the *mean* squared error over the 50 numbers, kvae's a
#: per-example sum, hence 0.25 / 50.
KVAE_NAMES = {"vae": ("vae", {}), "beta-vae": ("beta-vae", {"beta": 4.0}), "iwae": ("iwae", {"num_samples": 5}),
              "rae": ("rae", {"latent_weight": 1e-4, "reg_weight": 5e-8}),
              "infovae": ("infovae", {"alpha": 1.0, "lambda_": 1000.0, "kernel": "rbf", "bandwidths": (1.0,)}),
              "vq-vae": ("vq-vae", {"grid": (1, 50), "embedding_dim": 1, "num_embeddings": 512,
                                    "commitment": 0.25 / 50, "codebook": "ema", "decay": 0.99})}
#: kvae runs as ``kvae train`` does (its default steps per call of the compiled step) and, for
#: comparison, one step per call (Keras' compile default); the maths is the same
KVAE_STEPS = {"kvae": runs.STEPS_PER_EXECUTION, "kvae-1": 1}
LIBRARIES = ("kvae", "kvae-1", "pythae")
#: models without a likelihood estimate (deterministic encoder): compared on reconstruction error
NO_NLL = ("rae", "vq-vae")



def ensure_venv(path):
    """Create the peer virtual environment with PyTorch and pythae unless it already imports them."""
    python = os.path.join(path, "bin", "python")
    if os.path.isfile(python) and subprocess.run([python, "-c", "import pythae, torch"],
                                                 capture_output=True).returncode == 0:
        return python
    print(f"installing {' and '.join(PEER_PACKAGES)} into {path} (once)", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", path], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", PEER_PACKAGES[0]], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", PEER_PACKAGES[1]], check=True)
    return python


def kvae_side(name, data, epochs, batch_size, k, steps_per_execution, seed=0):
    """Train and evaluate the kvae model in this process; returns the same fields as the worker."""
    import keras

    import kvae

    with np.load(data) as d:
        train, valid = d["train"].astype("float32"), d["valid"].astype("float32")
    registered, options = KVAE_NAMES[name]
    keras.utils.set_random_seed(seed)
    model = kvae.models.get(registered)(input_shape=(28, 28, 1), latent_dim=50, hidden=(500, 500), seed=seed,
                                        **options)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=steps_per_execution)
    clock, epoch_seconds = _timing.keras_step_clock(), []

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self.t)

    model.fit(train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0, callbacks=[clock, EpochClock()])
    start = time.perf_counter()
    nll = None if name in NO_NLL else float(-model.log_likelihood(valid, k=k, seed=seed).numpy().mean())
    nll_seconds = time.perf_counter() - start
    mean = np.asarray(model.reconstruct(valid)).reshape(len(valid), -1)
    return {"library": "kvae", "steps_per_execution": steps_per_execution, "step_seconds": clock.seconds,
            "epoch_seconds": epoch_seconds, "nll": nll, "nll_seconds": nll_seconds, "rec_bce": bernoulli_error(valid.reshape(len(valid), -1), mean)}


def _summarise(raws, warmup=5):
    """One library's repeats pooled: steps after ``warmup`` of every repeat, epochs after the first of
    every repeat (the first traces the step); NLL and reconstruction error of the first repeat (the
    same seed each time), every repeat's kept beside them."""
    steps = [s for raw in raws for s in raw["step_seconds"][warmup:]]
    steady = [e for raw in raws for e in (raw["epoch_seconds"][1:] or raw["epoch_seconds"])]
    first = raws[0]
    return {"steps": _timing.summary(steps), "steady_epochs": _timing.summary(steady),
            "first_step_seconds": [raw["step_seconds"][0] for raw in raws],
            "epoch_seconds": [raw["epoch_seconds"] for raw in raws], "repeats": len(raws),
            "nll": first["nll"], "nll_seconds": first["nll_seconds"], "rec_bce": first["rec_bce"],
            "nll_repeats": [raw["nll"] for raw in raws],
            **{k: first[k] for k in ("torch", "threads", "steps_per_execution") if k in first}}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(KVAE_NAMES))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3,
                   help="runs per library and model, interleaved (kvae first, then pythae first, ...)")
    p.add_argument("--limit", type=int, default=10000, help="training images")
    p.add_argument("--n-eval", type=int, default=500, help="validation images for the NLL")
    p.add_argument("--k", type=int, default=500, help="importance samples for the NLL")
    p.add_argument("--data-dir", default=os.environ.get("KVAE_DATA_DIR"))
    p.add_argument("--venv", default=os.path.join(HERE, ".peer_pythae_venv"))
    p.add_argument("--out")
    p.add_argument("--_kvae", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._kvae:
        print(json.dumps(kvae_side(args._kvae[0], args._kvae[1], args.epochs, 100, args.k, int(args._kvae[2]))))
        return
    models = [m.strip() for m in args.models.split(",")]
    unknown = [m for m in models if m not in KVAE_NAMES]
    if unknown:
        p.error(f"unknown model(s) {unknown}; both libraries have: {', '.join(KVAE_NAMES)}")
    from kvae.data import datasets as data

    python = ensure_venv(args.venv)
    train = data.load("binarized_mnist", "train", args.data_dir).arrays()[0][:args.limit]
    valid = data.load("binarized_mnist", "valid", args.data_dir).arrays()[0][:args.n_eval]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        npz = os.path.join(tmp, "data.npz")
        np.savez(npz, train=train, valid=valid)
        for name in models:
            results[name] = {}
            raws = {library: [] for library in LIBRARIES}
            for repeat in range(args.repeats):
                order = LIBRARIES[repeat % 3:] + LIBRARIES[:repeat % 3]  # each library first in turn
                for library in order:
                    if library.startswith("kvae"):
                        cmd = [sys.executable, __file__, "--_kvae", name, npz, str(KVAE_STEPS[library]),
                               "--epochs", str(args.epochs), "--k", str(args.k)]
                    else:
                        cmd = [python, os.path.join(HERE, "_pythae_worker.py"), "--model", name, "--data", npz,
                               "--epochs", str(args.epochs), "--k", str(args.k)]
                    print(f"{name}: {library} (repeat {repeat + 1}/{args.repeats}) ...", file=sys.stderr, flush=True)
                    done = subprocess.run(cmd, capture_output=True, text=True,
                                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
                    if done.returncode != 0:
                        results[name][library] = {"error": done.stderr.strip().splitlines()[-5:]}
                        continue
                    raws[library].append(json.loads(done.stdout.strip().splitlines()[-1]))
            for library in LIBRARIES:
                if "error" not in results[name].get(library, {}) and raws[library]:
                    results[name][library] = _summarise(raws[library])
            py = results[name].get("pythae", {})
            for library in ("kvae", "kvae-1"):
                kv = results[name].get(library, {})
                if "steps" not in kv or "steps" not in py:
                    continue
                suffix = "" if library == "kvae" else "_one_step_per_call"
                results[name]["step_ratio_kvae_over_pythae" + suffix] = kv["steps"]["median"] / py["steps"]["median"]
                results[name]["epoch_ratio_kvae_over_pythae" + suffix] = (kv["steady_epochs"]["median"]
                                                                          / py["steady_epochs"]["median"])
                if library == "kvae":
                    if kv["nll"] is not None and py["nll"] is not None:
                        results[name]["nll_kvae_minus_pythae"] = kv["nll"] - py["nll"]
                    results[name]["rec_bce_kvae_minus_pythae"] = kv["rec_bce"] - py["rec_bce"]
    report = {"benchmark": "peer_pythae", "models": models, "epochs": args.epochs, "repeats": args.repeats, "train_images": len(train),
              "nll_images": len(valid), "k": args.k, "network": "MLP 784-500-500-50, Bernoulli decoder",
              "optimizer": "Adam 1e-3, batch 100", "kvae_steps_per_execution": KVAE_STEPS, "peer": list(PEER_PACKAGES), "results": results,
              "machine": _timing.machine(), "commit": _timing.commit()}
    emit(report, args.out)


if __name__ == "__main__":
    main()
