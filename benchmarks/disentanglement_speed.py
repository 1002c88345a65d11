"""Time of each disentanglement metric (kvae.evaluation.disentanglement) on N codes, and its growth with N.

    python benchmarks/disentanglement_speed.py --out benchmarks/disentanglement_speed.json

Codes are a noisy random rotation of the factors of a toy grid shaped like dSprites' (3, 6, 40, 32,
32 values; 10 code dimensions), so only the metrics' own arithmetic and classifiers are timed (the
encoder and renderer are not).  The i.i.d. metrics are timed on N = n and n/2 training codes with
n/2 and n/4 test codes; the intervention metrics (β-VAE, FactorVAE) on N = n and n/2 training points
(each point a batch of 64 codes, from a free linear "representation").  Median of ``--repeats``
runs; the ratio time(n) / time(n/2) is ~2 for a linear metric and ~4 for a quadratic one.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from _report import emit  # noqa: E402

from kvae.evaluation import disentanglement as dm  # noqa: E402
from kvae.data.factors import FactorGrid  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out")
    args = p.parse_args(argv)
    data = FactorGrid((3, 6, 40, 32, 32))
    mix = np.random.default_rng(0).normal(size=(5, 10))

    def represent(x):
        return x @ mix + 0.05 * np.random.default_rng(len(x)).normal(size=(len(x), 10))

    def iid(n):
        rng = np.random.default_rng(n)
        v = data.sample_factors(n, rng)
        return represent(data.images(v)), v

    metrics = {
        "mig": lambda n: dm.mig(*iid(n)),
        "modularity": lambda n: dm.modularity(dm.discrete_mutual_info(dm.histogram_discretize(iid(n)[0]), iid(n)[1])),
        "explicitness": lambda n: dm.explicitness(*iid(n), *iid(n // 2)),
        "sap": lambda n: dm.sap(*iid(n), *iid(n // 2)),
        "dci": lambda n: dm.dci(*iid(n), *iid(n // 2)),
        "betavae_metric": lambda n: dm.betavae_metric(data, represent, np.random.default_rng(0), num_train=n,
                                                      num_eval=n // 2),
        "factorvae_metric": lambda n: dm.factorvae_metric(data, represent, np.random.default_rng(0), num_train=n,
                                                          num_eval=n // 2, num_variance_estimate=n),
    }
    results = {}
    for name, run in metrics.items():
        times = {}
        for n in (args.n // 2, args.n):
            spent = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                run(n)
                spent.append(time.perf_counter() - start)
            times[n] = statistics.median(spent)
        results[name] = {"seconds": times[args.n], "seconds_at_half": times[args.n // 2],
                         "growth_ratio": times[args.n] / times[args.n // 2]}
        print(name, results[name], file=sys.stderr, flush=True)
    emit({"benchmark": "disentanglement_speed", "date": time.strftime("%Y-%m-%d"), "n": args.n,
          "repeats": args.repeats, "machine": f"{os.cpu_count()} CPUs",
          "command": "python benchmarks/disentanglement_speed.py --out benchmarks/disentanglement_speed.json",
          "metrics": results}, args.out)


if __name__ == "__main__":
    main()
