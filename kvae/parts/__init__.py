"""The parts a model composes, by role: what ``network=``, ``posterior=``, ``prior=``, ``decoder=``,
``objective=``, ``regularizers=``, ``beta=`` and ``density=`` accept.

One module per role: :mod:`~kvae.parts.networks`, :mod:`~kvae.parts.posteriors`,
:mod:`~kvae.parts.priors`, :mod:`~kvae.parts.likelihoods`, :mod:`~kvae.parts.objectives`,
:mod:`~kvae.parts.regularizers`, :mod:`~kvae.parts.schedules`, :mod:`~kvae.parts.densities`.
"""


def __getattr__(name):  # submodules as attributes (kvae.parts.<module>), imported on first use
    from kvae._lazy import submodule

    return submodule(__name__, name)
