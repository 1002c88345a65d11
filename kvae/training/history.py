"""A run's history across all its invocations: ``history.csv`` and ``history.json``.

One row per epoch, keyed by the epoch: a resumed run keeps the rows of the epochs finished before
its checkpoint and replaces the rest, so a kill, a resume or a continuation with a larger ``--epochs``
leaves one row per epoch, as an uninterrupted run writes them.  Both files are rewritten whole
(atomically, :mod:`kvae.training.files`) at the end of every epoch.  ``history.json`` holds the
metrics as lists (``{"loss": [epoch 1, epoch 2, ...], ...}``) and, once :func:`kvae.training.runs.train`
has written the model, the run's summary and ``"finished": true``.
"""
import csv
import io
import json
import os

import keras

from kvae.errors import RunError
from kvae.training import files

CSV_FILE = "history.csv"
JSON_FILE = "history.json"


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_rows(run_dir):
    """``{epoch (0-based): {metric: value}}`` from ``history.csv``; of an epoch written twice (a CSV
    appended to by kvae 0.1 across resumes) the later row."""
    path = os.path.join(run_dir, CSV_FILE)
    rows = {}
    if not os.path.isfile(path):
        return rows
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            epoch = _number(row.pop("epoch", None))
            if epoch is None:
                continue
            rows[int(epoch)] = {k: _number(v) for k, v in row.items() if k and v not in (None, "")}
    return rows


def read_summary(run_dir):
    """``history.json`` as a dict ({} when it is missing or not valid JSON)."""
    try:
        with open(os.path.join(run_dir, JSON_FILE)) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def as_lists(rows):
    """``{metric: [value of each epoch]}`` (None where an epoch lacks the metric) of :func:`read_rows`'s rows."""
    epochs = sorted(rows)
    keys = sorted({k for row in rows.values() for k in row})
    return {k: [rows[e].get(k) for e in epochs] for k in keys}


def write(run_dir, rows, summary=None):
    """Write ``history.csv`` (a column ``epoch``, 0-based, then the metrics in name order) and
    ``history.json`` (:func:`as_lists` plus ``summary``)."""
    keys = sorted({k for row in rows.values() for k in row})
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for epoch in sorted(rows):
        writer.writerow([epoch, *("" if rows[epoch].get(k) is None else repr(rows[epoch][k]) for k in keys)])
    files.write_text(os.path.join(run_dir, CSV_FILE), text.getvalue())
    files.write_json(os.path.join(run_dir, JSON_FILE), {**as_lists(rows), **(summary or {})}, indent=2,
                     default=float)


def finished_message(out, epochs):
    """The line to print when ``out`` holds a run finished at ``epochs`` or more epochs (or stopped
    early) whose model is written, else None (train or continue).  A finished run asked for more
    epochs continues from its last checkpoint (``out/backup``); without one, :class:`kvae.errors.RunError`."""
    summary = read_summary(out)
    if not os.path.isfile(os.path.join(out, "model.keras")) or not summary:
        return None
    checkpoint = os.path.join(out, "backup", "latest.weights.h5")
    if summary.get("finished"):
        done = summary.get("epochs_done")
    elif "steps" in summary and not os.path.exists(os.path.join(out, "backup")):  # finished by kvae 0.1
        try:
            with open(os.path.join(out, "config.json")) as f:
                done = json.load(f).get("epochs")
        except (OSError, ValueError):
            return None
    else:
        return None
    if not isinstance(done, int):
        return None
    if summary.get("stopped_epoch") is not None:
        return (f"{out} already stopped early at epoch {summary['stopped_epoch']} (no better validation −ELBO "
                f"for --early-stopping epochs): nothing to do")
    if epochs <= done:
        return f"{out} already finished {done} epochs: nothing to do (pass --epochs above {done} to continue it)"
    if not os.path.isfile(checkpoint):
        raise RunError(f"{out} finished {done} epochs and has no checkpoint to continue from ({checkpoint} is "
                       "gone); train into another --out")
    return None


class RunHistory(keras.callbacks.Callback):
    """Keeps ``run_dir``'s history whole across invocations (the module's docstring).  Place it after
    the run's :class:`kvae.training.checkpoint.SafeBackupAndRestore` (which sets the epoch training
    resumes at) and after callbacks that add to the logs (``LearningRateScheduler``)."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir
        self.rows = {}

    def on_train_begin(self, logs=None):
        start = int(getattr(self.model, "_initial_epoch", 0) or 0)
        self.rows = {e: row for e, row in read_rows(self.run_dir).items() if e < start}

    def on_epoch_end(self, epoch, logs=None):
        row = {}
        for key, value in (logs or {}).items():
            try:
                row[key] = float(value)
            except (TypeError, ValueError):
                continue
        self.rows[epoch] = row
        write(self.run_dir, self.rows)
