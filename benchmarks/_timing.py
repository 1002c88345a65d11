"""Shared by the benchmarks: the machine description, a per-batch clock, and summaries of
steady-state times.

Every speed figure is a median over steady-state steps (after warm-up), with its spread (10th
and 90th percentiles, and the interquartile range), timed one step at a time; fixed costs
(tracing, the first step) are reported apart.  kvae and its baseline run in *interleaved* blocks
in the same process, so both see the same machine load, and their ratio is a ratio of medians.
"""
import argparse
import os
import platform
import subprocess
import time

import numpy as np


def machine():
    """CPU model, cores, load, library versions and TensorFlow's build flags (oneDNN, XLA)."""
    info = {"python": platform.python_version(), "platform": platform.platform(), "logical_cpus": os.cpu_count()}
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu_model"] = models[0] if models else platform.processor()
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
        info["cpu_flags"] = sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))
    except OSError:
        info["cpu_model"] = platform.processor()
    try:
        info["load_average_at_start"] = list(os.getloadavg())
    except OSError:
        pass
    import keras
    import tensorflow as tf

    build = dict(tf.sysconfig.get_build_info())
    info.update({
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "tensorflow_build": {k: build[k] for k in sorted(build) if not k.startswith("msvcp")},
        # oneDNN is on by default on Linux x86 unless TF_ENABLE_ONEDNN_OPTS=0
        "onednn_enabled": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") not in ("0", "false", "False"),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "default (all cores)",
    })
    try:
        import tensorflow_probability as tfp

        info["tensorflow_probability"] = tfp.__version__
    except ImportError:
        pass
    return info


def commit():
    """The git commit benchmarks were run at (with '+dirty' when the tree has changes)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def summary(seconds):
    """Median and spread of a list of per-step seconds."""
    a = np.asarray(seconds, np.float64)
    if a.size == 0:
        return {"n": 0}
    q10, q25, q50, q75, q90 = np.percentile(a, [10, 25, 50, 75, 90])
    return {"n": int(a.size), "median": float(q50), "p10": float(q10), "p90": float(q90),
            "iqr": float(q75 - q25), "min": float(a.min()), "max": float(a.max())}


def keras_step_clock():
    """A Keras callback recording the wall time of each training step in ``.seconds``: the time from
    ``on_train_batch_begin`` to ``on_train_batch_end`` (TensorFlow runs a step synchronously on the
    CPU, so the step is done when the callback fires).  Under ``steps_per_execution`` = n the
    callbacks bracket a call of n steps: each of its steps is recorded as the call's time / n."""
    import keras

    class StepClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_train_batch_begin(self, batch, logs=None):
            self._t, self._first = time.perf_counter(), batch

        def on_train_batch_end(self, batch, logs=None):
            n = max(1, batch - self._first + 1)
            self.seconds.extend([(time.perf_counter() - self._t) / n] * n)

    return StepClock()


def interleaved_fit(models, dataset, blocks, steps_per_block, warmup_steps=3):
    """Train each model of ``models`` ({name: compiled keras.Model}) on ``dataset`` (a repeated
    tf.data.Dataset) in alternating blocks of ``steps_per_block`` steps, ``blocks`` times each.

    Returns {name: {"first_step_seconds": tracing + first step, "steps": summary of the steady
    steps}}; the first ``warmup_steps`` steps and the first step of every block are left out of
    the steady state.
    """
    out = {}
    for name, model in models.items():  # trace each model before any timing
        clock = keras_step_clock()
        start = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=warmup_steps, verbose=0, callbacks=[clock])
        out[name] = {"first_call_seconds": time.perf_counter() - start,
                     "first_step_seconds": clock.seconds[0], "_steady": []}
    for _ in range(blocks):
        for name, model in models.items():
            clock = keras_step_clock()
            model.fit(dataset, epochs=1, steps_per_epoch=steps_per_block, verbose=0, callbacks=[clock])
            out[name]["_steady"].extend(clock.seconds[1:])
    for name in out:
        out[name]["steps"] = summary(out[name].pop("_steady"))
    return out


def interleaved_calls(functions, repeats, warmup=1):
    """Time each zero-argument function of ``functions`` ({name: fn}) ``repeats`` times, alternating
    between them; returns {name: {"first_call_seconds", "calls": summary}}."""
    out = {}
    for name, fn in functions.items():
        start = time.perf_counter()
        for _ in range(warmup):
            fn()
        out[name] = {"first_call_seconds": time.perf_counter() - start, "_t": []}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            out[name]["_t"].append(time.perf_counter() - start)
    for name in out:
        out[name]["calls"] = summary(out[name].pop("_t"))
    return out


def ratio(result, name, baseline, key="steps"):
    """Median of ``name`` over median of ``baseline`` in a result of the functions above."""
    return result[name][key]["median"] / result[baseline][key]["median"]


def main(run, description):
    """The command line every timing benchmark shares: ``[--quick] [--data-dir DIR] [--out FILE]``;
    runs ``run(quick, data_dir)`` and prints (and writes) its report with the machine and commit."""
    from _report import emit

    p = argparse.ArgumentParser(description=description.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few steps only (a smoke run)")
    p.add_argument("--data-dir", default=os.environ.get("KVAE_DATA_DIR"))
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    report = run(args.quick, args.data_dir)
    report.update(machine=machine(), commit=commit())
    emit(report, args.out)
