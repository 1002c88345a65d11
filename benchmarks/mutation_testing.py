"""Mutation testing with mutmut (a maintained tool, https://github.com/boxed/mutmut) over the modules
whose maths matters (the loss code: terms, objectives, regularisers, posteriors, priors, likelihoods,
flows, checkpointing) and over data checks, serving validation and the evaluation metrics, each with
the fast eager tests that cover it; writes one JSON with the score per module and the surviving mutants.

    pip install mutmut==3.8.1      # a development tool, not a kvae dependency
    python benchmarks/mutation_testing.py --out benchmarks/mutation_testing.json [--only NAME ...]

With ``--only`` the other modules already in ``--out`` are kept.  Each target is run in a scratch copy
of the repository (``mutants/`` never touches the working tree).  mutmut forks one child per mutant
after the tests were imported once; a test that runs a compiled TensorFlow function in such a child
can hang, so TensorFlow runs with one thread per process, the selected tests are eager ones and a
timeout is reported as such, never counted as killed.

Which functions are mutated: a target names them (``functions``: ``"name"`` for a module-level
function or every method of that name, ``"Class.name"`` for one method).  In the scratch copy every
other module-level function and method gets ``# pragma: no mutate block`` on its ``def`` line, which
in mutmut 3.8.1 puts the whole function in ``ignore_node_lines``: it is neither mutated nor replaced by
a trampoline.  That is what makes Keras layers measurable: mutmut's trampoline has the signature
``(*args, **kwargs)``, and Keras' ``Operation.__new__`` reads the constructor's argument names, so a
trampolined ``__init__`` (or ``build`` / ``get_config``, which hold no maths) is left out and the
layer's maths (``call``, ``distribution``, ``penalty``, ``per_example_loss`` ...) is mutated.  A
selected ``@property`` (which mutmut skips, as any decorated function) is rewritten in the scratch copy
as a plain method followed by ``name = property(name)``, so the trampoline is wrapped by the property.
Score = killed / (killed + survived + timeout); mutants in functions no selected test calls ("no
tests") are listed apart.  Survivors argued equivalent are in :data:`EQUIVALENT`, copied to the JSON.
"""
import argparse
import json
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

#: module -> (source path, the functions whose mutants count (None: all), the tests that cover them)
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
    "dsprites_renderer": ("kvae/data/factors.py", None, ["tests/evaluation/test_disentanglement.py", "-k",
                                                         "dsprites_grid or dsprites_images or documented or "
                                                         "factor_values"]),
    "sample_quality": ("kvae/evaluation/sample_quality.py", ("frechet_distance", "_kth_neighbour_radius", "_inside",
                                                             "precision_recall"),
                       ["tests/evaluation/test_sample_quality.py", "-k",
                        "formula or definition or mode_dropping or closed or jitter"]),
    "active_units": ("kvae/evaluation/metrics.py", ("active_units",), ["tests/evaluation/test_evaluation.py", "-k",
                                                                       "subtract or strict or float64"]),
    # --- the loss code ---
    "terms": ("kvae/core/terms.py", ("Terms.__init__", "_one_or_all", "q", "z", "prior", "kl", "kl_per_dim",
                                     "__getattr__", "__getitem__", "__iter__", "__len__"),
              ["tests/core/test_terms_and_importance.py", "-k", "not converges and not uses_the_one"]),
    "importance": ("kvae/core/importance.py", None,
                   ["tests/core/test_terms_and_importance.py", "-k", "not converges and not uses_the_one"]),
    "elbo": ("kvae/core/objective.py", ("kl_divergence", "kl_per_dimension", "latent_groups", "latent_draws",
                                        "decode_groups", "compute_terms", "standard_noise", "sample_posterior",
                                        "kl_penalty", "bound_loss", "per_example_loss", "elbo"),
             ["tests/core/test_objective.py", "-k", "transcription"]),
    "objectives": ("kvae/parts/objectives.py", ("iwae_bound", "check", "log_weights", "per_example_loss",
                                                "encoder_loss", "feature_loss", "discriminator", "get"),
                   ["tests/parts/test_objectives.py", "-k", "not cli and not piwae_steps"]),
    "regularizers": ("kvae/parts/regularizers.py", ("penalty", "_fold", "_discriminator", "logits", "after_step",
                                                    "real_and_fake", "features", "_flat", "generated", "permute_dims",
                                                    "pairwise_gaussian_kl"),
                     ["tests/parts/test_regularizers.py"]),
    "posteriors": ("kvae/parts/posteriors.py", ("call", "distribution", "reparameterize", "bijectors"),
                   ["tests/parts/test_posteriors_and_priors.py"]),
    "priors": ("kvae/parts/priors.py", ("call", "distribution", "from_noise", "bijector", "bind", "components"),
               ["tests/parts/test_posteriors_and_priors.py"]),
    # (PixelCNNLikelihood.images and PixelCNNBernoulli._sample_n run the compiled ancestral sampler: left out)
    "likelihoods": ("kvae/parts/likelihoods.py", ("LikelihoodHead.images", "named_params", "raw_params", "call",
                                                  "bernoulli_log_prob", "_log_prob", "distribution",
                                                  "PixelCNNBernoulli.logits", "_mean", "MSSSIMReconstruction._sample_n"),
                    ["tests/parts/test_likelihoods.py"]),
    "flows": ("kvae/nn/flows.py", ("made_stack", "_fn", "masked_autoregressive_flow", "inverse_autoregressive_flow",
                                   "_gate", "_forward", "_forward_log_det_jacobian", "_inverse",
                                   "gated_inverse_autoregressive_flow"),
              ["tests/nn/test_flows.py", "-k", "not saves_and_exports"]),
    "planar_radial": ("kvae/nn/planar_radial.py", ("u_hat", "_forward", "_forward_log_det_jacobian", "_alpha_beta"),
                      ["tests/nn/test_planar_radial.py"]),
    # (on_train_begin, on_epoch_end and on_train_batch_end need a running fit: tests/training/test_fault_tolerance.py
    # and test_resume.py cover them with real runs and kills)
    "checkpoint": ("kvae/training/checkpoint.py", ("_finite", "metrics_state", "restore_metrics_state", "_metadata",
                                                   "_tmp_paths", "_promote_previous", "_restore", "_check",
                                                   "_save_model", "_checkpoint_bytes", "discard_previous",
                                                   "_should_save_on_batch"),
                   ["tests/training/test_checkpoint_units.py"]),
}

#: target -> {regular expression over surviving mutants' names: why they are equivalent}; the JSON's
#: ``equivalent`` maps each matching survivor to its reason, and survivors matched by none count against the score
EQUIVALENT = {
    "terms": {
        r"ǁkl__mutmut_2$": "tf.add_n of a one-element list returns that tensor: the single group's KL either way",
        r"ǁkl_per_dim__mutmut_13$": "tf.concat(axis=+1) for axis=-1: the per-dimension KLs are [B, D_g], rank 2",
    },
    "elbo": {
        r"ǁkl_penalty__mutmut_(3|5|30|32)$": "tf.constant(x, None) or no dtype for tf.float32: a Python float becomes a "
                                             "float32 constant either way",
        r"ǁkl_penalty__mutmut_14$": "floor / tf.ones_like(kl) for floor * tf.ones_like(kl): the same tensor",
        r"ǁkl_penalty__mutmut_(40|43|45)$": "reduce_mean(keepdims=None/False/absent): a [D] batch mean broadcasts "
                                            "against [B, D] as the [1, D] one does",
        r"ǁkl_penalty__mutmut_57$": "reduce_sum(axis=+1) for axis=-1: the per-dimension KLs are [B, D], rank 2",
        r"ǁlatent_groups__mutmut_(31|34|37|40)$": "kl_divergence / kl_per_dimension with prior None or left out: None "
                                                  "means the model's prior, which is the one passed",
        r"ǁstandard_noise__mutmut_13$": "replicas == 2 for == 1: with one replica the sliced branch takes rows 0..B of "
                                        "B rows, the same noise (two replicas are tested with a stand-in replica "
                                        "context, where both forms slice)",
    },
    "schedules": {
        r"x_beta_value__mutmut_(8|10)$": "tf.constant(float(beta)) with dtype None or left out: a Python float becomes "
                                         "a float32 constant",
    },
    "divergences": {
        r"x__sq_dists__mutmut_(7|15)$|x_kernel_matrix__mutmut_26$": "reduce_sum(., +1) / tf.shape(a)[+1] for -1: the "
                                                                    "codes are always rank 2 ([N, D])",
    },
    "regularizers": {
        r"after_step__mutmut_(26|28|44|46)$": "optimizer.apply(grads, None) or without variables: the discriminator's "
                                              "optimizer was built on exactly those variables and applies to them",
        r"ǁ_DiscriminatorPenaltyǁafter_step__mutmut_(13|20)$": "ones_like(real[:, 1]) for [:, 0]: only the shape [B] "
                                                               "of the labels is used",
        r"ǁ(LatentL2|MinibatchTotalCorrelation)ǁpenalty__mutmut_(16|48)$": "reduce_sum(axis=+1) for axis=-1 on rank-2 "
                                                                           "tensors",
        r"ǁMutualPosteriorDivergenceǁpenalty__mutmut_19$": "tf.shape(kl)[1] for [0]: kl is [B, B, D]",
        r"ǁTotalCorrelationǁreal_and_fake__mutmut_33$": "start = 1 for 0 on one replica: lo = start // 2 = 0 either way",
    },
    "data_validation": {
        r"x_validate__mutmut_(4|6|10|11)$": "hasattr(x, 'numpy') mutated or bypassed: np.asarray of an eager tensor is "
                                            "its .numpy()",
        r"x_validate__mutmut_14$": "'XXbiufXX' for 'biuf': a dtype kind is one letter and never X",
    },
    "disentanglement_metrics": {
        r"x_(dci_from_importance|histogram_discretize|modularity|sap_from_scores)__mutmut_(3|4|5|6|7|9|11)$":
            "np.asarray / np.zeros with dtype None or left out: the inputs are float64 (or int) arrays already and "
            "the outputs are only compared and summed",
        r"x_factorvae_votes__mutmut_(3|5)$": "votes as float counts instead of int: the same sums and argmax",
        r"x_factorvae_votes__mutmut_(13|15)$": "only how many batches are encoded together; the votes are the same",
        r"x_factorvae_votes__mutmut_54$": "reshape(..., -2): numpy treats any negative size as the inferred one",
        r"x_factorvae_votes__mutmut_(65|67)$": "np.var with ddof 0 or 2: scales every dimension's batch variance by "
                                               "the same factor, so the argmin is unchanged",
        r"x_modularity__mutmut_1[0-3]$": "np.errstate arguments: only which floating-point warnings are shown",
    },
    "checkpoint": {
        r"x_restore_metrics_state__mutmut_(23|25|28|30)$": "np.asarray / np.zeros without the variable's dtype: "
                                                           "assign casts to it",
        r"x_restore_metrics_state__mutmut_9$": "np.shape(None) = () for the value's shape: a value of another shape is "
                                               "then refused by assign and handled by the except branch alike",
        r"ǁ_restore__mutmut_(10|12|14)$": "print's flush argument: only when the line reaches the terminal",
        r"ǁ_save_model__mutmut_18$": "float('NAN') is float('nan')",
        r"ǁ_save_model__mutmut_(65|67|68)$": "save_weights' overwrite flag on the temporary path, which never exists "
                                             "there (_restore removes a left-over one first)",
    },
    "dsprites_renderer": {
        r"ǁDSpritesǁ_render__mutmut_(3|10|49|51|61|65)$": "astype(None) / window dtype (float64 instead of float32): "
                                                          "differs only for pixel centres within float32 rounding of a "
                                                          "boundary (the transcription test allows 2 such pixels)",
        r"ǁDSpritesǁ_render__mutmut_(99|108|139)$": "< for <= on the square, ellipse and heart boundaries: ties exactly on "
                                                    "a boundary (measure zero at pixel centres)",
        r"ǁDSpritesǁ_render__mutmut_(18|26|27|30|33|41|42|45)$": "window clip 0 -> None / 1, offset 14 -> 15, upper 36 "
                                                                 "-> 35: the 28-pixel window still covers every sprite "
                                                                 "(at most 10.2 pixels from its centre)",
        r"ǁDSpritesǁ_render__mutmut_7$": "cx from factor_values[4]: x and y take the same 32 values",
        r"ǁDSpritesǁimages__mutmut_(1|38)$": "chunk default 2049, range step default: chunking and re-rendering "
                                             "overlapping rows give the same images",
        r"ǁFactorDataǁ(sample_factors__mutmut_9|sample_with_fixed__mutmut_9)$": "rng.integers(s) / integers(size): "
                                                                                "low defaults to 0",
    },
    "sample_quality": {
        r"x_(frechet_distance|precision_recall)__mutmut_(3|5|7|9|11)$": "np.asarray(..., None) or no dtype: the inputs "
                                                                         "are float arrays already",
        r"x__inside__mutmut_(3|5)$": "np.empty(n, None): 0/1 floats average as booleans do",
        r"x_frechet_distance__mutmut_(17|22)$": "np.cov(rowvar=None): None is falsy, as False",
        r"x__kth_neighbour_radius__mutmut_38$": "np.partition without axis: the default -1 is axis 1 of these 2-D arrays",
        r"x_frechet_distance__mutmut_(27|29)$": "warnings.simplefilter arguments: only which warnings are shown",
        r"x_precision_recall__mutmut_2$": "chunk 1025 for 1024: only how many rows are compared at once",
    },
    "posteriors": {
        r"distribution__mutmut_(2|3|4|5|12|14)$": "tfd.Independent without reinterpreted_batch_ndims (or None): TFP "
                                                  "then reinterprets all batch dimensions but the first, which for "
                                                  "[B, D] parameters is the 1 given",
        r"ǁGaussianPosteriorǁcall__mutmut_17$": "split(axis=+1) for axis=-1: encoder features are [B, F], rank 2",
        r"ǁ(GaussianPosteriorǁcall__mutmut_3|DeterministicPosteriorǁcall__mutmut_2)$": "keras.ops.cast(x, None) casts to "
                                                                                     "Keras' floatx, float32",
        r"ǁDeterministicPosteriorǁreparameterize__mutmut_1$": "loc - 0.0 * eps for loc + 0.0 * eps: the same values",
    },
    "priors": {
        r"ǁStandardNormalPriorǁdistribution__mutmut_5$": "tf.zeros without a dtype is float32",
        r"ǁVampPriorǁdistribution__mutmut_(9|11)$": "tfd.Independent without reinterpreted_batch_ndims (or None) on [K, D] "
                                                    "parameters reinterprets the 1 dimension given",
        r"ǁVampPriorǁbind__mutmut_(67|68)$": "built = None / False after binding: the model builds the prior right after "
                                             "binding it (VampPrior.build sets built), before any use",
        r"ǁVampPriorǁbind__mutmut_(6|14|16|19|20|21|22|26|29)$": "the first two conditions of the posterior check are "
                                                                  "implied by the third: every kvae posterior has "
                                                                  "reparameterize (the base class defines it), "
                                                                  "param_names and deterministic, and the deterministic "
                                                                  "one's param_names ('z',) already fail "
                                                                  "('loc', 'scale')",
    },
    "likelihoods": {
        r"ǁ(MSSSIMReconstructionǁ_log_prob__mutmut_(2|9)|PixelCNNBernoulliǁlogits__mutmut_(7|11))$":
            "a - tf.zeros_like(.) for + tf.zeros_like(.): the same broadcast values",
        r"ǁPixelCNNLikelihoodǁcall__mutmut_2$": "split=None for split=False: both falsy",
        r"ǁLikelihoodHeadǁraw_params__mutmut_17$": "keras.ops.cast(x, None) casts to Keras' floatx, float32 (the test "
                                                   "under the mixed_float16 policy sees float32 either way)",
    },
    "objectives": {
        r"x_iwae_bound__mutmut_14$": "s / M for s // M: S = M K, so the quotient is integral and the reshape the same",
        r"ǁfeature_loss__mutmut_19$": "reduce_sum(axis=+1) for axis=-1: the features are [B, units], rank 2",
    },
}


def _selected(functions, name, cls):
    return functions is None or name in functions or (cls is not None and f"{cls}.{name}" in functions)


def prepare_source(source, functions):
    """``source`` with every function and method not in ``functions`` marked ``# pragma: no mutate block``
    (mutmut 3.8.1 then neither mutates nor trampolines it) and each selected ``@property`` rewritten as a plain
    method followed by ``name = property(name)`` (mutmut skips decorated functions)."""
    import libcst as cst

    def mark(func):
        if not isinstance(func.body, cst.IndentedBlock):
            return func
        header = func.body.header.with_changes(whitespace=cst.SimpleWhitespace("  "),
                                               comment=cst.Comment("# pragma: no mutate block"))
        return func.with_changes(body=func.body.with_changes(header=header))

    def is_property(func):
        return (len(func.decorators) == 1 and isinstance(func.decorators[0].decorator, cst.Name)
                and func.decorators[0].decorator.value == "property")

    body = []
    for stmt in cst.parse_module(source).body:
        if isinstance(stmt, cst.FunctionDef):
            stmt = stmt if _selected(functions, stmt.name.value, None) else mark(stmt)
        elif isinstance(stmt, cst.ClassDef) and isinstance(stmt.body, cst.IndentedBlock):
            methods = []
            for item in stmt.body.body:
                if not isinstance(item, cst.FunctionDef):
                    methods.append(item)
                elif not _selected(functions, item.name.value, stmt.name.value):
                    methods.append(mark(item))
                elif is_property(item):
                    name = item.name.value
                    methods += [item.with_changes(decorators=[]),
                                cst.parse_statement(f"{name} = property({name})\n")]
                else:
                    methods.append(item)
            stmt = stmt.with_changes(body=stmt.body.with_changes(body=methods))
        body.append(stmt)
    return cst.parse_module(source).with_changes(body=body).code


def _function_of(mutant):
    """(class or None, function) of a mutant name such as ``kvae.core.terms.xǁTermsǁkl__mutmut_3``."""
    mangled = re.sub(r"__mutmut_\d+$", "", mutant.split(".")[-1])
    if mangled.startswith("xǁ"):
        _, cls, name = mangled.split("ǁ", 2)
        return cls, name
    return None, mangled[2:]


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
        subprocess.run([sys.executable, "-c", "import sys; sys.path[:0] = ['tests', 'tests/export', '.']; import test_export; "
                        f"test_export.make_bundles({bundles!r})"], cwd=work, env=env, check=True,
                       capture_output=True)
        env["KVAE_TEST_BUNDLES"] = bundles
    else:
        env["PYTHONPATH"] = os.path.join(work, "export")
    target = os.path.join(work, path)
    with open(target) as f:
        source = f.read()
    with open(target, "w") as f:
        f.write(prepare_source(source, functions))
    with open(os.path.join(ROOT, "setup.cfg")) as f:
        cfg = f.read()
    # mutmut runs pytest in its own process: the suite's pytest-xdist workers stay off
    cfg = re.sub(r" -n \S+| --maxprocesses=\S+| --dist \S+", "", cfg)
    source_dir = os.path.dirname(path) + "/"
    cfg += ("\n[mutmut]\nsource_paths = " + source_dir + "\nonly_mutate = " + path
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
        cls, function = _function_of(mutant)
        if not _selected(functions, function, cls):
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
    if run.returncode != 0 and not statuses:
        print(run.stdout[-3000:], run.stderr[-3000:], file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    return argue(name, {"module": path, "functions": list(functions) if functions else "all", "tests": tests,
                        "counts": counts, "score": None if not scored else killed / scored, "survivors": diffs,
                        "timeouts": sorted(m for m, s in statuses.items() if s == "timeout"),
                        "seconds": round(seconds, 1), "mutmut_exit_code": run.returncode})


def argue(name, result):
    """Add ``equivalent`` (each survivor :data:`EQUIVALENT` argues, with the reason) and ``score_not_equivalent``
    = killed / (mutants scored - survivors argued equivalent) to a target's result."""
    equivalent = {}
    for mutant in result["survivors"]:
        for pattern, reason in EQUIVALENT.get(name, {}).items():
            if re.search(pattern, mutant):
                equivalent[mutant] = reason
                break
    result["equivalent"] = equivalent
    counts = result["counts"]
    scored = counts.get("killed", 0) + counts.get("survived", 0) + counts.get("timeout", 0) - len(equivalent)
    result["score_not_equivalent"] = None if not scored else counts.get("killed", 0) / scored
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=sorted(TARGETS))
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--out")
    p.add_argument("--argue", action="store_true", help="only re-apply EQUIVALENT to the results in --out")
    args = p.parse_args(argv)
    if args.argue:
        with open(args.out) as f:
            report = json.load(f)
        for name, result in report["modules"].items():
            argue(name, result)
        emit(report, args.out)
        return
    import mutmut

    report = {"benchmark": "mutation_testing", "date": time.strftime("%Y-%m-%d"), "tool": f"mutmut {mutmut.__version__}",
              "command": "python benchmarks/mutation_testing.py --out benchmarks/mutation_testing.json", "modules": {}}
    if args.only and args.out and os.path.exists(args.out):
        with open(args.out) as f:
            report["modules"] = {k: v for k, v in json.load(f)["modules"].items() if k in TARGETS}
    for name in args.only or TARGETS:
        report["modules"][name] = run_target(name, args.timeout)
        report["modules"] = {k: report["modules"][k] for k in TARGETS if k in report["modules"]}
        print(name, report["modules"][name]["counts"], report["modules"][name]["seconds"], flush=True)
        if args.out:
            emit(report, args.out)
    emit(report, args.out)


if __name__ == "__main__":
    main()
