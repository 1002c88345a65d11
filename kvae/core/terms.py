r"""The pieces of the objective for one batch: :class:`Terms`, over a structure of latent groups.

A model's latents are a tuple of :class:`LatentGroup` — one group for the single-latent models, one
per stochastic layer for a hierarchy.  Each group carries its posterior q_g, its draw z_g, the prior
p_g it is scored against (conditional on the groups above in a hierarchy) and KL_g, so

    KL = sum_g KL_g,     log w = log p(x|z) + sum_g [log p_g(z_g) - log q_g(z_g)]

(:func:`kvae.core.importance.log_importance_weights`) hold for every model alike.
"""
import collections.abc

import tensorflow as tf


class LatentGroup:
    """One group of latent variables: ``name``, posterior ``q`` (a ``tfd.Distribution``), draw ``z``,
    prior ``prior`` (p(z_g | groups above)), ``kl`` [B], ``kl_per_dim`` [B, D_g] (or None when q or
    p does not factorise) and ``context`` (what the decoder needs beyond z, e.g. the top-down
    features a hierarchy computed while drawing the group; None for single-latent models)."""

    __slots__ = ("name", "q", "z", "prior", "kl", "kl_per_dim", "context")

    def __init__(self, name, q, z, prior, kl=None, kl_per_dim=None, context=None):
        self.name, self.q, self.z, self.prior = name, q, z, prior
        self.kl, self.kl_per_dim, self.context = kl, kl_per_dim, context

    def __repr__(self):
        return f"LatentGroup({self.name!r}, z={getattr(self.z, 'shape', None)})"


class Terms(collections.abc.Mapping):
    r"""The pieces of the objective for one batch.

    Fields: ``x``, ``y`` (labels or None), ``groups`` (tuple of :class:`LatentGroup`), ``px`` (p(x|z)),
    ``log_px_z`` [B], ``seed``, ``training``, ``decode_params`` (the decoder, for penalties on it),
    ``encoder_loss`` (the inference network's own per-example loss, set by objectives that split the
    gradients: PIWAE, VAE-GAN) and the model's declared ``extras`` (e.g. VQ-VAE's ``z_e`` and
    ``codes``).  Derived: ``kl`` = sum_g KL_g; ``kl_per_dim`` (the groups' per-dimension KLs side by
    side, or None); ``q``, ``z``, ``prior`` — the group's own for a single group, tuples for several.

    Regularisers and objectives read them as attributes or as ``terms["kl"]`` (a read-only mapping
    of every field; an unknown key raises ``KeyError`` naming the known ones).
    """

    FIELDS = ("x", "y", "groups", "px", "log_px_z", "seed", "training", "decode_params", "encoder_loss")
    DERIVED = ("kl", "kl_per_dim", "q", "z", "prior")

    def __init__(self, x, y, groups, px, log_px_z, seed=None, training=False, decode_params=None, **extras):
        self.x, self.y, self.groups, self.px, self.log_px_z = x, y, tuple(groups), px, log_px_z
        self.seed, self.training, self.decode_params = seed, training, decode_params
        self.encoder_loss = None
        clash = set(extras) & set(self.FIELDS + self.DERIVED)
        if clash:
            raise TypeError(f"extra terms {sorted(clash)} shadow Terms fields")
        self.extras = dict(extras)

    def _one_or_all(self, attr):
        values = tuple(getattr(g, attr) for g in self.groups)
        return values[0] if len(values) == 1 else values

    @property
    def q(self):
        return self._one_or_all("q")

    @property
    def z(self):
        return self._one_or_all("z")

    @property
    def prior(self):
        return self._one_or_all("prior")

    @property
    def kl(self):
        kls = [g.kl for g in self.groups]
        return kls[0] if len(kls) == 1 else tf.add_n(kls)

    @property
    def kl_per_dim(self):
        per_dim = [g.kl_per_dim for g in self.groups]
        if any(p is None for p in per_dim):
            return None
        return per_dim[0] if len(per_dim) == 1 else tf.concat(per_dim, axis=-1)

    def __getattr__(self, name):  # only called for names that are not fields: the declared extras
        extras = self.__dict__.get("extras")
        if extras is None:  # an object not initialised yet (copy, pickle): no extras, and sorted(self) would recurse
            raise AttributeError(name)
        if name in extras:
            return extras[name]
        raise AttributeError(f"Terms has no field {name!r}; fields: {sorted(self)}")

    def __getitem__(self, key):
        if key in self.FIELDS or key in self.DERIVED or key in self.extras:
            return getattr(self, key)
        raise KeyError(f"{key!r} is not a term; terms: {sorted(self)}")

    def __iter__(self):
        return iter((*self.FIELDS, *self.DERIVED, *self.extras))

    def __len__(self):
        return len(self.FIELDS) + len(self.DERIVED) + len(self.extras)
