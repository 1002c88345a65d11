"""What the browser explorer (served by ``kvae-serve BUNDLE`` at ``/``) shows beside a bundle's
endpoints, and ``kvae explore``, which exports a run to a temporary bundle and serves it.

:func:`explorer_data` encodes a few held-out images once, at export time:

* ``kl_per_dim``: mean over the images of KL(q(z_d|x) || p(z_d)) per latent dimension (None
  when the KL is not per dimension); the explorer orders its sliders by it, largest first;
* ``codes`` [n, D]: posterior means E_q[z|x] (Monte-Carlo means for flow posteriors), with their
  2-D PCA map ``pca`` = {``mean`` [D], ``components`` [2, D] (unit rows), ``points`` [n, 2] =
  (codes - mean) @ components.T} and the images' labels when there are any;
* ``ranges`` [D, 2]: each slider's range, [-3, 3] widened to the codes' mean ± 3 sd;
* ``examples``: the first few images (values in [0, 1]) to encode and interpolate from;
* ``prior``: ``"standard_normal"`` (the explorer then draws z ~ N(0, I) itself and
  interpolates spherically) or the prior's class name (z drawn from the example codes);
* ``groups``: the latent groups (name, offset and size in z, in the model's order; a hierarchical
  model lists its top group first) and ``slider_dims``: the dimensions the page puts on sliders,
  those of the first group ordered by KL, at most ``MAX_SLIDERS`` (the other groups keep the
  values of the code loaded last).
"""
import os
import shutil
import signal
import tempfile
import threading

import numpy as np

from kvae.errors import DataError

#: numbers in explorer.json are rounded to this many decimals (a 500 x 50 map stays ~300 kB)
DECIMALS = 4
#: at most this many sliders; at most this many code numbers (images x latent dimensions) in the file
MAX_SLIDERS, MAX_CODE_NUMBERS = 64, 500 * 512


def _round(a, decimals=DECIMALS):
    return np.round(np.asarray(a, np.float64), decimals).tolist()


def pca_map(codes):
    """The 2-D principal-component map of ``codes`` [n, D]: (mean [D], components [2, D], points [n, 2]).

    Components are the top right-singular vectors of the centred codes, signed so that the
    largest-magnitude entry of each is positive; a 1-D latent gets a zero second axis."""
    codes = np.asarray(codes, np.float64)
    mean = codes.mean(axis=0)
    centred = codes - mean
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    components = np.zeros((2, codes.shape[1]))
    k = min(2, vt.shape[0])
    components[:k] = vt[:k]
    for row in components:
        if np.any(row):
            row *= np.sign(row[np.argmax(np.abs(row))])
    return mean, components, centred @ components.T


def explorer_data(model, x, y=None, n=500, num_examples=8, seed=0):
    """The ``explorer.json`` dict for ``model`` from held-out images x [N, *input_shape] (labels y)."""
    from kvae.evaluation import metrics as evaluation

    n = min(n, max(50, MAX_CODE_NUMBERS // model.latent_dim))  # a deep hierarchy's codes are long
    x = np.asarray(x)[:n]
    y = None if y is None else np.asarray(y)[:n]
    if len(x) < 2:
        raise DataError(f"explorer_data needs at least 2 images, got {len(x)}")
    stats = evaluation.posterior_statistics(model, x.astype(np.float32), y, seed=seed)
    codes = stats["z_mean"]
    kl = None if stats["kl_per_dim"] is None else _round(stats["kl_per_dim"].mean(axis=0))
    mean, components, points = pca_map(codes)
    sd = codes.std(axis=0)
    lo = np.minimum(-3.0, codes.mean(axis=0) - 3 * sd)
    hi = np.maximum(3.0, codes.mean(axis=0) + 3 * sd)
    from kvae.parts.priors import StandardNormalPrior

    prior = "standard_normal" if isinstance(model.prior, StandardNormalPrior) else type(model.prior).__name__
    examples = np.clip(x[:num_examples].astype(np.float64), 0.0, 1.0)
    groups = [{"name": name, "offset": int(d.start), "size": int(d.stop - d.start)}
              for name, d in zip(stats["group_names"], stats["group_dims"])]
    first = np.arange(groups[0]["offset"], groups[0]["offset"] + groups[0]["size"])
    if stats["kl_per_dim"] is not None:
        first = first[np.argsort(-stats["kl_per_dim"].mean(axis=0)[first], kind="stable")]
    return {
        "format": "kvae-explorer/1",
        "n": int(len(x)),
        "prior": prior,
        "kl_per_dim": kl,
        "codes": _round(codes),
        "labels": None if y is None else [int(v) for v in y],
        "pca": {"mean": _round(mean), "components": _round(components), "points": _round(points)},
        "ranges": _round(np.stack([lo, hi], axis=1), 3),
        "examples": _round(examples, 3),
        "groups": groups,
        "slider_dims": [int(d) for d in first[:MAX_SLIDERS]],
    }


def run_examples(config, data_dir=None, n=500):
    """(x, y) of the validation split of a run's data set (``config.json``), or None when it
    cannot be loaded here (e.g. an offline public data set)."""
    from kvae.data import datasets as data
    from kvae.errors import KvaeError

    name = config.get("dataset")
    if not name:
        return None
    try:
        x, y = data.load(name, "valid", data_dir or config.get("data_dir")).head(n).arrays()
    except (KvaeError, OSError, ValueError):
        return None
    return x, y


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _interrupt_on(signum):
    """Make ``signum`` raise KeyboardInterrupt in the main thread; returns the previous handler (None
    outside the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signum, _raise_interrupt)


def explore(run_dir=None, pretrained=None, host="127.0.0.1", port=8000, open_browser=True, data_dir=None):
    """Export a run directory (or a pretrained model) to a temporary bundle with explorer data and
    serve it with kvae-serve until interrupted; the bundle is deleted afterwards."""
    from kvae.export import bundle as export
    from kvae.training import runs

    try:
        from kvae_serve import server
    except ImportError:
        from kvae.errors import ConfigError

        raise ConfigError("kvae explore needs the serving package: pip install -e ./export (kvae-serve)") from None
    tmp = tempfile.mkdtemp(prefix="kvae-explore-")
    try:
        if pretrained is not None:
            from kvae.pretrained import store as pre

            pre.fetch(pretrained, os.path.join(tmp, "run"))
            run_dir = os.path.join(tmp, "run")
        model, config = runs.load_run(run_dir)
        found = run_examples(config, data_dir)
        extra = None if found is None else explorer_data(model, *found)
        if extra is None:
            print("no validation images found for the run's data set: the explorer shows no code map")
        bundle = os.path.join(tmp, "bundle")
        export.export(model, bundle, check=False, explorer=extra)
        srv = server.make_server(bundle, host, port)
        url = f"http://{host}:{srv.server_address[1]}/"
        print(f"explorer at {url} (Ctrl-C to stop)", flush=True)
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        # Ctrl-C (and SIGTERM) stop the server and remove the bundle, even when the process was started
        # with SIGINT ignored (a background job of a non-interactive shell inherits SIG_IGN)
        previous = _interrupt_on(signal.SIGINT), _interrupt_on(signal.SIGTERM)
        try:
            srv.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            srv.server_close()
            for signum, handler in zip((signal.SIGINT, signal.SIGTERM), previous):
                if handler is not None:
                    signal.signal(signum, handler)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

