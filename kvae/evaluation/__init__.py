"""Evaluation: what the papers report, as pure functions of a model and data.

:mod:`kvae.evaluation.metrics` (NLL, ELBO, KL per dimension, active units, MI, MMD), plus
:mod:`~kvae.evaluation.disentanglement`, :mod:`~kvae.evaluation.sample_quality` and
:mod:`~kvae.evaluation.plotting`.
"""
from kvae.evaluation.metrics import (  # noqa: F401
    ACTIVE_UNIT_THRESHOLD, MC_MEAN_SAMPLES, posterior_mean_and_noise, posterior_mean, posterior_statistics, representation,
    active_units, importance_sampled_nll, mutual_information, mmd_to_prior, log_det_covariance, probe_accuracy,
    diagnostics, evaluate, format_table,
)


def __getattr__(name):  # submodules as attributes (kvae.evaluation.<module>), imported on first use
    from kvae._lazy import submodule

    return submodule(__name__, name)
