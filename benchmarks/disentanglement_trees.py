"""DCI with LightGBM's trees against disentanglement_lib's (scikit-learn's GradientBoostingClassifier):
|difference| of dci_disentanglement, dci_completeness and dci_informativeness, and CPU seconds.

    python benchmarks/disentanglement_trees.py --run R --out benchmarks/disentanglement_trees.json

Cases (:func:`kvae.evaluation.disentanglement.dci` with ``trees="lightgbm"`` and ``trees="sklearn"``
on the same codes, seed 0):

1. Synthetic codes of known structure on a factor grid of (3, 6, 10, 8) values, ``--synthetic-train``
   / ``--synthetic-test`` points: ``aligned`` (each factor, scaled to [0, 1], in its own dimension plus
   two pure-noise dimensions, noise 0.05), ``rotated`` (a random rotation of the aligned code),
   ``nonlinear`` (tanh of a sparse random mixing, noise 0.2), ``noise`` (codes independent of the
   factors).  For scale, each also gives the scikit-learn learner's own change on a second,
   independent draw of the points (``resampled_sklearn_delta``): the metric's sampling noise.
2. ``--run R``: the codes DCI scores in ``kvae evaluate R --disentanglement`` (posterior means of
   10,000 training and 5,000 test points drawn as :func:`kvae.evaluation.disentanglement.evaluate`
   draws them with seed 0), e.g. the FactorVAE of issue 31's command; each learner's factors fitted
   in turn, with their CPU seconds; and scikit-learn's ``HistGradientBoostingClassifier`` with the same
   settings, one thread (CPU seconds and accuracy only: it exposes no feature importances).

``--work DIR`` keeps each synthetic case's results, the run's codes (``codes.npz``) and each
learner's fits on them (``fits_<learner>.npz``), and reuses them when present (a long scikit-learn
fit is not repeated when the report is written again).
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
from _report import emit  # noqa: E402
from _timing import commit, machine  # noqa: E402

from kvae.evaluation import disentanglement as dm  # noqa: E402
from kvae.evaluation.disentanglement_trees import TOLERANCE, fit_trees  # noqa: E402

KEYS = ("dci_disentanglement", "dci_completeness", "dci_informativeness")
SIZES = (3, 6, 10, 8)


def synthetic(kind, n, rng):
    """``(codes [n, D], factors [n, F])`` of one synthetic case."""
    v = np.stack([rng.integers(0, s, size=n) for s in SIZES], axis=1)
    u = v / (np.array(SIZES) - 1.0)
    fixed = np.random.default_rng(100)  # the structure is the same for every draw of points
    aligned = np.concatenate([u, np.zeros((n, 2))], axis=1)
    if kind == "aligned":
        return aligned + 0.05 * rng.normal(size=aligned.shape), v
    if kind == "rotated":
        q = np.linalg.qr(fixed.normal(size=(6, 6)))[0]
        return (aligned + 0.05 * rng.normal(size=aligned.shape)) @ q, v
    if kind == "nonlinear":
        w = fixed.normal(size=(len(SIZES), 8)) * (fixed.uniform(size=(len(SIZES), 8)) < 0.4)
        return np.tanh(2.0 * u @ w) + 0.2 * rng.normal(size=(n, 8)), v
    if kind == "noise":
        return rng.normal(size=(n, 6)), v
    raise ValueError(kind)


def compare(z_train, v_train, z_test, v_test):
    """Both learners' DCI scores, CPU seconds and |differences| on the same codes."""
    out = {}
    for trees in ("lightgbm", "sklearn"):
        cpu = time.process_time()
        out[trees] = dm.dci(z_train, v_train, z_test, v_test, seed=0, n_jobs=1, trees=trees)
        out[f"{trees}_cpu_seconds"] = time.process_time() - cpu
    out["abs_delta"] = {k: abs(out["lightgbm"][k] - out["sklearn"][k]) for k in KEYS}
    return out


def metric_codes(run_dir, path, num_train=10000, num_test=5000, seed=0):
    """The i.i.d. codes :func:`dm.evaluate` scores DCI on for the run (same draws, same encoder, read
    as float64), saved to / read from ``path`` (npz)."""
    if os.path.exists(path):
        saved = np.load(path)
        return tuple(saved[k] for k in ("z_train", "v_train", "z_test", "v_test"))
    from kvae.data import datasets
    from kvae.evaluation import metrics
    from kvae.training import runs

    model, _ = runs.load_run(run_dir)
    source = datasets.load("dsprites", "test").source
    represent = metrics.representation(model, batch_size=2048, seed=seed)
    rng = np.random.default_rng(seed)
    v_train, v_test = source.sample_factors(num_train, rng), source.sample_factors(num_test, rng)
    codes = (np.asarray(represent(source.images(v_train)), np.float64), v_train,
             np.asarray(represent(source.images(v_test)), np.float64), v_test)
    np.savez(path, **dict(zip(("z_train", "v_train", "z_test", "v_test"), codes)))
    return codes


def per_factor_fits(codes, trees, path, seed=0):
    """One learner's per-factor fits on the codes (:func:`fit_trees`, in turn): ``importance [D, F]``,
    ``accuracy [F]``, ``cpu_seconds [F]``, saved to / read from ``path`` (npz: a long scikit-learn
    fit is not repeated when the report is written again)."""
    if os.path.exists(path):
        return dict(np.load(path))
    z_train, v_train, z_test, v_test = codes
    out = {"importance": np.zeros((z_train.shape[1], v_train.shape[1])), "accuracy": np.zeros(v_train.shape[1]),
           "cpu_seconds": np.zeros(v_train.shape[1])}
    for k in range(v_train.shape[1]):
        cpu = time.process_time()
        weights, predicted = fit_trees(z_train, v_train[:, k], z_test, seed, trees)
        out["cpu_seconds"][k] = time.process_time() - cpu
        out["importance"][:, k], out["accuracy"][k] = weights, np.mean(predicted == v_test[:, k])
    np.savez(path, **out)
    return out


def compare_run(codes, work):
    """Both learners on a run's metric codes: scores, CPU seconds per factor, |differences|."""
    out = {}
    for trees in ("lightgbm", "sklearn"):
        fits = per_factor_fits(codes, trees, os.path.join(work, f"fits_{trees}.npz"))
        d, c = dm.dci_from_importance(fits["importance"])
        out[trees] = {"dci_disentanglement": d, "dci_completeness": c,
                      "dci_informativeness": float(np.mean(fits["accuracy"]))}
        out[f"{trees}_cpu_seconds"] = float(fits["cpu_seconds"].sum())
        out[f"{trees}_cpu_seconds_per_factor"] = fits["cpu_seconds"].tolist()
        out[f"{trees}_accuracy_per_factor"] = fits["accuracy"].tolist()
    out["abs_delta"] = {k: abs(out["lightgbm"][k] - out["sklearn"][k]) for k in KEYS}
    out["hist_gradient_boosting"] = hist_gradient_boosting(codes)
    return out


def hist_gradient_boosting(codes):
    """scikit-learn's HistGradientBoostingClassifier with the same settings, for its CPU seconds and
    accuracy alone (it has no feature importances, so no DCI)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    z_train, v_train, z_test, v_test = codes
    cpu, accuracy = time.process_time(), []
    with threadpool_limits(limits=1):  # one thread, as each LightGBM fit
        for k in range(v_train.shape[1]):
            model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_depth=3, max_leaf_nodes=8,
                                                   min_samples_leaf=1, l2_regularization=0.0, early_stopping=False,
                                                   random_state=0).fit(z_train, v_train[:, k])
            accuracy.append(float(np.mean(model.predict(z_test) == v_test[:, k])))
    return {"cpu_seconds": time.process_time() - cpu, "accuracy_per_factor": accuracy,
            "informativeness": float(np.mean(accuracy)),
            "has_feature_importances": hasattr(model, "feature_importances_")}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a trained dSprites run (kvae train ... --dataset dsprites)")
    p.add_argument("--work", help="where each case's results (the run's codes and per-learner fits too) are kept and "
                                  "reused (default: a temporary folder)")
    p.add_argument("--synthetic-train", type=int, default=2000)
    p.add_argument("--synthetic-test", type=int, default=1000)
    p.add_argument("--out")
    args = p.parse_args(argv)
    report = {"benchmark": "disentanglement_trees", "date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit(),
              "machine": machine(), "load_average_before": list(os.getloadavg()), "tolerance_stated": TOLERANCE,
              "synthetic": {"factor_sizes": list(SIZES), "num_train": args.synthetic_train,
                            "num_test": args.synthetic_test}}
    work = args.work or tempfile.mkdtemp(prefix="kvae-dci-trees-")
    os.makedirs(work, exist_ok=True)
    for kind in ("aligned", "rotated", "nonlinear", "noise"):
        path = os.path.join(work, f"synthetic_{kind}_{args.synthetic_train}_{args.synthetic_test}.json")
        if os.path.exists(path):
            with open(path) as f:
                case = json.load(f)
        else:
            rng = np.random.default_rng(0)
            z_train, v_train = synthetic(kind, args.synthetic_train, rng)
            z_test, v_test = synthetic(kind, args.synthetic_test, rng)
            case = compare(z_train, v_train, z_test, v_test)
            again = dm.dci(*synthetic(kind, args.synthetic_train, rng), *synthetic(kind, args.synthetic_test, rng),
                           seed=0, trees="sklearn")
            case["resampled_sklearn_delta"] = {k: abs(again[k] - case["sklearn"][k]) for k in KEYS}
            with open(path, "w") as f:
                json.dump(case, f)
        report["synthetic"][kind] = case
        print(kind, case["abs_delta"], file=sys.stderr, flush=True)
    if args.run:
        codes = metric_codes(args.run, os.path.join(work, "codes.npz"))
        report["run"] = {"run_dir": os.path.abspath(args.run), "num_train": len(codes[0]), "num_test": len(codes[2]),
                         "code_dims": int(codes[0].shape[1]), **compare_run(codes, work)}
        print("run", report["run"]["abs_delta"], file=sys.stderr, flush=True)
    cases = [report["synthetic"][k] for k in ("aligned", "rotated", "nonlinear", "noise")] + (
        [report["run"]] if args.run else [])
    report["largest_abs_delta"] = {k: max(c["abs_delta"][k] for c in cases) for k in KEYS}
    report["load_average_after"] = list(os.getloadavg())
    emit(report, args.out)


if __name__ == "__main__":
    main()
