"""Mutation testing with mutmut (a maintained tool, https://github.com/boxed/mutmut) over the modules
whose maths is cheap to test, each with the fast tests that cover it; writes one JSON with the score
per module and the surviving mutants.

    pip install mutmut==3.8.1      # a development tool, not a kvae dependency
    python benchmarks/mutation_testing.py --out benchmarks/mutation_testing.json [--only NAME ...]

Each target is run in a scratch copy of the repository (``mutants/`` never touches the working
tree).  mutmut forks one child per mutant after the tests were imported once; a test that runs a
compiled TensorFlow function in such a child can hang, so TensorFlow runs with one thread per process,
the selected tests are eager ones and a timeout is reported as such, never counted as killed.  kvae/parts/densities.py is a Keras
layer, and mutmut's trampoline for ``__init__`` (``*args, **kwargs``) breaks Keras' ``Operation.__new__``,
which reads the constructor's argument names (its tests, tests/parts/test_density.py, run in the suite).  Score = killed / (killed + survived +
timeout); mutants in functions no selected test calls ("no tests") are listed apart.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

#: module -> (source path, the functions whose mutants count, the tests that cover them)
TARGETS = {
    "divergences": ("kvae/nn/divergences.py", None,
                    ["tests/models/test_regularised.py", "-k", "mmd or kernel"]),
    "schedules": ("kvae/parts/schedules.py", None, ["tests/parts/test_schedules.py"]),
    # validate() and _first_index(): loaders and fit's check_inputs call them.  check_inputs itself reads the
    # first batch of a tf.data pipeline, which hangs in mutmut's forked children, so it is not a target.
    "data_validation": ("kvae/data/checks.py", ("validate", "_first_index", "_where"),
                        ["tests/cli/test_boundaries.py", "tests/data/test_data.py", "tests/test_promises.py", "-k",
                         "checked_before_conversion or binarized_mnist_from or validate or fashion_mnist_is"]),
    # kvae_serve is copied to the top of the scratch copy (mutmut names mutants by the module path the tests
    # import); the bundles its tests read are exported once beforehand (KVAE_TEST_BUNDLES), so no forked child
    # runs TensorFlow
    "serving_validation": ("kvae_serve/bundle.py", None,
                           ["tests/export/test_serving_runtime.py", "tests/export/test_export.py", "-k",
                            "test_serving_runtime or runtime_rejects or runtime_fuzz or verifies_every"]),
    # the metrics' formulas, each with its transcription test (the end-to-end scores on known codes fit
    # classifiers for ~20 s per run and stay out of the mutation loop)
    "disentanglement_metrics": ("kvae/evaluation/disentanglement.py",
                                ("histogram_discretize", "discrete_mutual_info", "discrete_entropy", "mig",
                                 "modularity", "dci_from_importance", "sap_from_scores", "explicitness",
                                 "factorvae_votes"),
                                ["tests/evaluation/test_disentanglement.py", "-k",
                                 "formula or definition or discretisation or votes or copied or top_two or "
                                 "unnormalised or defaults_to or count_every"]),
    "dsprites_renderer": ("kvae/data/factors.py", None, ["tests/evaluation/test_disentanglement.py", "-k", "dsprites_grid or "
                                                    "dsprites_images or documented or factor_values"]),
    "sample_quality": ("kvae/evaluation/sample_quality.py", ("frechet_distance", "_kth_neighbour_radius", "_inside",
                                                  "precision_recall"),
                       ["tests/evaluation/test_sample_quality.py", "-k",
                        "formula or definition or mode_dropping or closed or jitter"]),
    "active_units": ("kvae/evaluation/metrics.py", ("active_units",), ["tests/evaluation/test_evaluation.py", "-k",
                                                               "subtract or strict or float64"]),
}


def run_target(name, timeout):
    path, functions, tests = TARGETS[name]
    work = tempfile.mkdtemp(prefix=f"mutation_{name}_")
    for item in ("kvae", "export", "tests", "kvae_cli.py", "pyproject.toml"):
        src = os.path.join(ROOT, item)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(work, item))
    env = dict(os.environ, KVAE_LAZY_IMPORT="", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
               OMP_NUM_THREADS="1")
    if path.startswith("kvae_serve/"):
        shutil.copytree(os.path.join(ROOT, "export", "kvae_serve"), os.path.join(work, "kvae_serve"))
        bundles = os.path.join(work, "bundles")
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'tests'); import test_export; "
                        f"test_export.make_bundles({bundles!r})"], cwd=work, env=env, check=True,
                       capture_output=True)
        env["KVAE_TEST_BUNDLES"] = bundles
    else:
        env["PYTHONPATH"] = os.path.join(work, "export")
    with open(os.path.join(ROOT, "setup.cfg")) as f:
        cfg = f.read()
    # mutmut runs pytest in its own process: the suite's pytest-xdist workers stay off
    cfg = re.sub(r" -n \S+| --maxprocesses=\S+| --dist \S+", "", cfg)
    source = os.path.dirname(path) + "/"
    cfg += ("\n[mutmut]\nsource_paths = " + source + "\nonly_mutate = " + path
            + "\nalso_copy =\n    kvae\n    kvae_cli.py\n    export\n    tests\n"
            + "pytest_add_cli_args_test_selection =\n" + "".join(f"    {t}\n" for t in tests))
    with open(os.path.join(work, "setup.cfg"), "w") as f:
        f.write(cfg)
    # (above: one TensorFlow thread per process, as thread pools made before mutmut forks do not exist in
    # its children)
    start = time.time()
    run = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", "2"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=timeout)
    seconds = time.time() - start
    listing = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work, env=env,
                             capture_output=True, text=True).stdout
    statuses = {}
    for line in listing.splitlines():
        m = re.match(r"\s*(\S+__mutmut_\d+): (.+)$", line)
        if not m:
            continue
        mutant, status = m.groups()
        function = re.sub(r"__mutmut_\d+$", "", mutant.split(".")[-1]).replace("x_", "", 1).split("ǁ")[-1]
        if functions and function not in functions:
            continue
        statuses[mutant] = status.strip()
    counts = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    killed = counts.get("killed", 0)
    scored = killed + counts.get("survived", 0) + counts.get("timeout", 0)
    survivors = sorted(m for m, s in statuses.items() if s == "survived")
    diffs = {}
    for mutant in survivors:
        diffs[mutant] = subprocess.run([sys.executable, "-m", "mutmut", "show", mutant], cwd=work, env=env,
                                       capture_output=True, text=True).stdout[-1500:]
    shutil.rmtree(work, ignore_errors=True)
    return {"module": path, "functions": functions or "all", "tests": tests, "counts": counts,
            "score": None if not scored else killed / scored, "survivors": diffs,
            "timeouts": sorted(m for m, s in statuses.items() if s == "timeout"), "seconds": seconds,
            "mutmut_exit_code": run.returncode}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=sorted(TARGETS))
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out")
    args = p.parse_args(argv)
    import mutmut

    report = {"benchmark": "mutation_testing", "date": time.strftime("%Y-%m-%d"), "tool": f"mutmut {mutmut.__version__}",
              "command": "python benchmarks/mutation_testing.py --out benchmarks/mutation_testing.json", "modules": {}}
    for name in args.only or TARGETS:
        report["modules"][name] = run_target(name, args.timeout)
        print(name, report["modules"][name]["counts"], flush=True)
    emit(report, args.out)


if __name__ == "__main__":
    main()
