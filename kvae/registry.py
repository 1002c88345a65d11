"""Every name kvae knows, in one registry: ``--model vae``, ``posterior="iaf"``, ``decoder="pixelcnn"``,
``network="conv"``, ``objective="iwae"``, ``density="maf"``, ``--dataset digits``, ...

:data:`TABLE` declares each built-in name as a ``"module.path:attribute"`` string, so listing names
(:func:`names`, what ``kvae --help`` shows) imports nothing, and nothing registers itself by an
import side effect.  :func:`get` imports an entry's module the first time the entry is used.

Kinds, and what an entry is (how the part modules call it):

* ``model`` — a :class:`kvae.VariationalModel` subclass (``kvae train --model NAME``, :func:`kvae.models.get`);
* ``posterior`` / ``prior`` — ``factory(latent_dim, name=...)`` returning a layer (``posterior=``, ``prior=``);
* ``likelihood`` — ``factory(event_shape, name="likelihood")`` returning a layer (the ``decoder=`` option);
* ``network`` — a pair ``(encoder_builder, decoder_builder)`` (``network=``, :func:`kvae.parts.networks.build`);
* ``objective`` — ``factory()`` returning an :class:`kvae.parts.objectives.Objective` (``objective=``;
  ``"elbo"`` is the plain ELBO, no entry);
* ``regularizer`` — a :class:`kvae.parts.regularizers.Regularizer` class (for ``regularizers=[...]``);
* ``density`` — ``factory(latent_dim, components, name=...)`` returning an ex-post density layer (``density=``);
* ``dataset`` — ``loader(split, data_dir)`` returning a :class:`kvae.data.Split` (:func:`kvae.data.load`);
* ``hook`` — functions the core calls by name: ``fit`` (``fit``'s input checks and pipelines, :mod:`kvae.training.fit`).

Users add their own with :func:`register` (an object, or a lazy ``"module:attribute"`` string)::

    import kvae.registry
    kvae.registry.register("prior", "wide", "my_package.priors:WidePrior")
"""
import importlib

from kvae.errors import ConfigError

#: The built-in names of each kind: ``{kind: {name: "module.path:attribute"}}``.
TABLE = {
    "model": {
        "vae": "kvae.models.vae:VAE",
        "beta-vae": "kvae.models.vae:BetaVAE",
        "cvae": "kvae.models.vae:ConditionalVAE",
        "vlae": "kvae.models.vlae:VLAE",
        "infovae": "kvae.models.regularised:InfoVAE",
        "factorvae": "kvae.models.regularised:FactorVAE",
        "beta-tcvae": "kvae.models.regularised:BetaTCVAE",
        "mae": "kvae.models.regularised:MAE",
        "rae": "kvae.models.regularised:RAE",
        "ae": "kvae.models.regularised:AE",
        "iwae": "kvae.models.iwae:IWAE",
        "miwae": "kvae.models.iwae:MIWAE",
        "ciwae": "kvae.models.iwae:CIWAE",
        "piwae": "kvae.models.iwae:PIWAE",
        "wae-mmd": "kvae.models.wae:WAE",
        "annealed-beta-vae": "kvae.models.annealed_capacity:AnnealedCapacityBetaVAE",
        "vamp": "kvae.models.vamp:VampVAE",
        "linnf": "kvae.models.linnf:LinNFVAE",
        "aae": "kvae.models.aae:AdversarialAE",
        "msssim-vae": "kvae.models.msssim:MSSSIMVAE",
        "hvae": "kvae.models.hvae.model:HVAE",
        "rhvae": "kvae.models.rhvae.model:RHVAE",
        "vq-vae": "kvae.models.vqvae.model:VQVAE",
        "vae-gan": "kvae.models.vaegan:VAEGAN",
        "poincare-vae": "kvae.models.poincare.model:PoincareVAE",
        "svae": "kvae.models.svae.model:SVAE",
        "lvae": "kvae.models.lvae.model:LadderVAE",
    },
    "posterior": {
        "gaussian": "kvae.parts.posteriors:GaussianPosterior",
        "iaf": "kvae.parts.posteriors:IAFPosterior",
        "deterministic": "kvae.parts.posteriors:DeterministicPosterior",
        "planar": "kvae.parts.posteriors:planar_posterior",
        "radial": "kvae.parts.posteriors:radial_posterior",
    },
    "prior": {
        "normal": "kvae.parts.priors:StandardNormalPrior",
        "maf": "kvae.parts.priors:FlowPrior",
        "iaf": "kvae.parts.priors:iaf_prior",
        "vamp": "kvae.parts.priors:VampPrior",
    },
    "likelihood": {
        "bernoulli": "kvae.parts.likelihoods:BernoulliLikelihood",
        "gaussian": "kvae.parts.likelihoods:GaussianLikelihood",
        "pixelcnn": "kvae.parts.likelihoods:PixelCNNLikelihood",
    },
    "network": {
        "mlp": "kvae.parts.networks:MLP",
        "conv": "kvae.parts.networks:CONV",
        "conv4": "kvae.parts.networks:CONV4",
        "resnet": "kvae.parts.networks:RESNET",
    },
    "objective": {
        "iwae": "kvae.parts.objectives:IWAEBound",
        "miwae": "kvae.parts.objectives:MIWAEBound",
        "ciwae": "kvae.parts.objectives:CIWAEBound",
        "piwae": "kvae.parts.objectives:PIWAEBound",
        "hvae": "kvae.models.hvae.hamiltonian:HamiltonianBound",
        "rhvae": "kvae.models.rhvae.riemannian:RiemannianHamiltonianBound",
    },
    "regularizer": {
        "latent-l2": "kvae.parts.regularizers:LatentL2",
        "mmd": "kvae.parts.regularizers:MMDPenalty",
        "adversarial": "kvae.parts.regularizers:AdversarialDivergence",
        "image-discriminator": "kvae.parts.regularizers:ImageDiscriminator",
        "total-correlation": "kvae.parts.regularizers:TotalCorrelation",
        "minibatch-total-correlation": "kvae.parts.regularizers:MinibatchTotalCorrelation",
        "mutual-posterior-divergence": "kvae.parts.regularizers:MutualPosteriorDivergence",
        "decoder-l2": "kvae.parts.regularizers:DecoderL2",
        "decoder-gradient-penalty": "kvae.parts.regularizers:DecoderGradientPenalty",
    },
    "density": {
        "gmm": "kvae.parts.densities:GaussianMixtureDensity",
        "maf": "kvae.parts.densities:maf_density",
        "iaf": "kvae.parts.densities:iaf_density",
        "two-stage": "kvae.parts.densities:two_stage_density",
        "none": "kvae.parts.no_density:NoDensity",
    },
    "hook": {  # extension points the core calls by name, so that it imports nothing above it
        "fit": "kvae.training.fit:checked_fit",
        "check_inputs": "kvae.data.checks:check_inputs",
    },
    "dataset": {
        "digits": "kvae.data.datasets:_digits",
        "binarized_mnist": "kvae.data.datasets:_binarized_mnist",
        "mnist": "kvae.data.datasets:_mnist",
        "fashion_mnist": "kvae.data.datasets:_fashion_mnist",
        "dsprites": "kvae.data.datasets:_dsprites",
    },
}

#: The kinds of names, in the order of :data:`TABLE`.
KINDS = tuple(TABLE)

_entries = {kind: dict(entries) for kind, entries in TABLE.items()}  # TABLE plus register(); strings until used


def _check_kind(kind):
    if kind not in _entries:
        raise ConfigError(f"unknown kind of name {kind!r}; the registry's kinds: {', '.join(KINDS)}")
    return _entries[kind]


def register(kind, name, obj):
    """Make ``obj`` available as ``name`` of ``kind`` (a :data:`KINDS` entry), e.g.
    ``register("prior", "wide", WidePrior)`` makes ``prior="wide"`` build ``WidePrior(latent_dim, name="prior")``.

    ``obj`` is the object itself (a class or factory, called as the kind expects: see the module
    docstring) or a ``"module.path:attribute"`` string, imported when the name is first used.  A name
    registered again replaces the earlier entry.
    """
    entries = _check_kind(kind)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a {kind} name must be a non-empty string, got {name!r}")
    if isinstance(obj, str) and not _is_target(obj):
        raise ConfigError(f"register({kind!r}, {name!r}, {obj!r}): a string must be 'module.path:attribute'")
    entries[name] = obj


def _is_target(text):
    module, _, attr = text.partition(":")
    return bool(module and attr) and all(p.isidentifier() for p in module.split(".") + attr.split("."))


def names(kind):
    """The names of ``kind``, sorted (imports nothing)."""
    return sorted(_check_kind(kind))


def entry(kind, name):
    """What ``name`` of ``kind`` is registered as, unresolved: a ``"module:attribute"`` string or the object."""
    entries = _check_kind(kind)
    try:
        return entries[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown {kind} {name!r}; choose one of {', '.join(sorted(entries))}") from None


def resolve(target):
    """The object a ``"module.path:attribute"`` string names (importing the module)."""
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def get(kind, name):
    """The object registered as ``name`` of ``kind`` (its module imported on first use).

    Raises :class:`kvae.errors.ConfigError` naming the kind, the name and the valid names.
    """
    obj = entry(kind, name)
    if isinstance(obj, str):
        obj = _entries[kind][name] = resolve(obj)
    return obj


def build(kind, identifier, *args, label=None, **kwargs):
    """A part from ``identifier``: a layer is returned as is, a config dict is deserialised, a name
    calls the registered factory with ``args``/``kwargs`` (what ``posterior=``, ``prior=`` and
    ``decoder=`` accept).  ``label`` names the option in errors (default: ``kind``)."""
    if isinstance(identifier, str):
        try:
            factory = get(kind, identifier)
        except ConfigError:
            raise ConfigError(f"unknown {label or kind} {identifier!r}; choose one of {', '.join(names(kind))} "
                              "or pass a layer") from None
        return factory(*args, **kwargs)
    import keras

    if isinstance(identifier, keras.layers.Layer):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    raise ConfigError(f"unknown {label or kind} {identifier!r}; choose one of {', '.join(names(kind))} "
                      "or pass a layer")


__all__ = ["TABLE", "KINDS", "register", "names", "get", "entry", "resolve", "build"]
