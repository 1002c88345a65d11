"""Posterior heads q(z|x): Keras 3 layers that turn encoder features into a ``tfd.Distribution``.

Contract (shared by every posterior):

* ``layer(h)`` returns the posterior *parameters* as a tuple of tensors (exportable);
* ``layer.distribution(params)`` returns a reparameterised ``tfd.Distribution`` with
  event shape ``[latent_dim]``;
* ``layer.reparameterize(q, eps)`` (optional) maps standard-normal noise [B, latent_dim] to a
  sample of q, so the noise can be given explicitly (distributed training, exported endpoints);
* ``layer.factorized`` tells whether ``distribution(params).distribution`` is a batch of
  univariate distributions (one per latent dimension), which enables KL per dimension
  and free bits.
"""
import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kvae import registry
from kvae.errors import ConfigError
from kvae.nn.flows import GatedIAFStep, made_stack
from kvae.nn.planar_radial import PlanarFlow, RadialFlow
from kvae.parts.contracts import Posterior

tfb, tfd = tfp.bijectors, tfp.distributions


@keras.saving.register_keras_serializable(package="kvae")
class GaussianPosterior(Posterior):
    r"""Diagonal Gaussian q(z|x) = N(mu(x), diag sigma(x)^2) (Kingma & Welling 2013).

    ``sigma = softplus(a) + min_scale`` keeps the scale positive and away from 0;
    samples are reparameterised, z = mu + sigma * eps.
    """

    factorized = True
    param_names = ("loc", "scale")

    def __init__(self, latent_dim, min_scale=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.min_scale = float(min_scale)
        self.dense = keras.layers.Dense(2 * self.latent_dim, name="params")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, h):
        raw = keras.ops.cast(self.dense(h), "float32")
        loc, raw_scale = keras.ops.split(raw, 2, axis=-1)
        scale = keras.ops.softplus(raw_scale) + self.min_scale
        return loc, scale

    def distribution(self, params):
        loc, scale = params
        return tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)

    def reparameterize(self, q, eps):
        """z = mu + sigma * eps for standard-normal noise eps of shape [B, latent_dim]."""
        normal = q.distribution
        return normal.loc + normal.scale * eps

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "min_scale": self.min_scale}


#: the steps a :class:`FlowPosterior` can apply to z_0
FLOW_STEPS = ("iaf", "planar", "radial")


@keras.saving.register_keras_serializable(package="kvae")
class FlowPosterior(Posterior):
    r"""q(z|x): a Gaussian N(mu(x), sigma(x)^2) pushed through a sequence of flow steps,
    ``flows="iaf,planar,iaf,radial"`` (comma-separated or a list), each one of:

    * ``"iaf"``: a gated inverse-autoregressive-flow step (Kingma et al. 2016),
      z_t = sigma_t * z_{t-1} + (1 - sigma_t) * m_t with [m_t, s_t] = MADE_t(z_{t-1}; c(x)),
      sigma_t = sigmoid(s_t + ``forget_bias``) (:class:`kvae.nn.flows.GatedIAFStep`), amortised: the
      MADEs (``iaf_hidden`` units) also see a context c(x) of ``context_size`` computed from the
      encoder features;
    * ``"planar"`` / ``"radial"``: the flows of Rezende & Mohamed 2015
      (:class:`kvae.nn.planar_radial.PlanarFlow`, :class:`~kvae.nn.planar_radial.RadialFlow`) with
      global (not amortised) parameters, as in pythae's VAE_LinNF.

    log q(z_K|x) = log N(z_0) - sum_k log|det J_k(z_{k-1})| (change of variables, TFP's
    ``TransformedDistribution``).  Planar and radial flows have no closed-form inverse: the
    log-determinants of the posterior's own samples come from TFP's bijector cache, so no inverse
    is run.  :class:`IAFPosterior` (IAF steps only) and :class:`PlanarRadialPosterior` are this
    layer under their kvae 0.1 names and constructor arguments.
    """

    factorized = False

    def __init__(self, latent_dim, flows="iaf,iaf", min_scale=1e-4, iaf_hidden=(320, 320), context_size=64,
                 forget_bias=2.0, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.min_scale = int(latent_dim), float(min_scale)
        self.flows = [f.strip() for f in (flows.split(",") if isinstance(flows, str) else flows) if f.strip()]
        bad = [f for f in self.flows if f not in FLOW_STEPS]
        if bad or not self.flows:
            raise ConfigError(f"flows must be a comma-separated list of planar/radial/iaf, got {flows!r}")
        self.iaf_hidden, self.context_size = [int(h) for h in iaf_hidden], int(context_size)
        self.forget_bias = float(forget_bias)
        # sub-layers in this order (gaussian, context, MADEs), the flows' own weights in build():
        # kvae 0.1's weight paths and creation order, which its .keras files are read by
        self.gaussian = GaussianPosterior(self.latent_dim, min_scale=min_scale, name="gaussian")
        num_iaf = self.flows.count("iaf")
        self.param_names = ("loc", "scale", "context") if num_iaf else ("loc", "scale")
        self.mades = []
        if num_iaf:
            self.context = keras.layers.Dense(self.context_size, activation="elu", name="context")
            self.mades = made_stack(self.latent_dim, num_iaf, self.iaf_hidden, context_size=self.context_size,
                                    log_scale="raw", name="iaf_made")

    def build(self, input_shape):
        if not self.gaussian.built:
            self.gaussian.build(input_shape)
        if self.mades:
            if not self.context.built:
                self.context.build(input_shape)
            for made in self.mades:
                if not made.built:
                    made.build((None, self.latent_dim))
        d = self.latent_dim
        self.flow_params = []
        for i, kind in enumerate(self.flows):
            init = keras.initializers.RandomNormal(0.0, 0.01, seed=i)
            if kind == "iaf":
                self.flow_params.append(None)  # its MADE is in self.mades
            elif kind == "planar":
                self.flow_params.append((
                    self.add_weight(shape=(d,), initializer=init, name=f"planar{i}_w"),
                    self.add_weight(shape=(d,), initializer=init, name=f"planar{i}_u"),
                    self.add_weight(shape=(), initializer="zeros", name=f"planar{i}_b")))
            else:
                self.flow_params.append((
                    self.add_weight(shape=(d,), initializer=init, name=f"radial{i}_z0"),
                    self.add_weight(shape=(), initializer="zeros", name=f"radial{i}_alpha"),
                    self.add_weight(shape=(), initializer="zeros", name=f"radial{i}_beta")))
        self.built = True

    def call(self, h):
        loc, scale = self.gaussian(h)
        if not self.mades:
            return loc, scale
        return loc, scale, tf.cast(self.context(h), tf.float32)

    def bijectors(self, context=None):
        """The flows in the order they are applied to z_0 (``context`` [B, context_size] for IAF steps)."""
        out, mades = [], iter(self.mades)
        for i, (kind, p) in enumerate(zip(self.flows, self.flow_params)):
            if kind == "iaf":
                out.append(GatedIAFStep(next(mades), context, self.forget_bias, name=f"gated_iaf_{i}"))
            else:
                out.append(PlanarFlow(*p) if kind == "planar" else RadialFlow(*p))
        return out

    def distribution(self, params):
        loc, scale = params[0], params[1]
        context = params[2] if len(params) > 2 else None
        base = tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)
        return tfd.TransformedDistribution(base, tfb.Chain(list(reversed(self.bijectors(context)))))

    def reparameterize(self, q, eps):
        """z_K = f_K(...f_1(mu + sigma eps)); q.log_prob(z_K) reads the pre-images from TFP's cache."""
        normal = q.distribution.distribution
        return q.bijector.forward(normal.loc + normal.scale * eps)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "flows": ",".join(self.flows),
                "min_scale": self.min_scale, "iaf_hidden": self.iaf_hidden, "context_size": self.context_size,
                "forget_bias": self.forget_bias}


@keras.saving.register_keras_serializable(package="kvae")
class PlanarRadialPosterior(FlowPosterior):
    """:class:`FlowPosterior` with planar flows by default (``flows="planar,planar"``; pythae's VAE_LinNF):
    kvae 0.1's name, arguments and config."""

    def __init__(self, latent_dim, flows="planar,planar", min_scale=1e-4, iaf_hidden=(320, 320), context_size=64,
                 forget_bias=2.0, **kwargs):
        super().__init__(latent_dim, flows, min_scale=min_scale, iaf_hidden=iaf_hidden, context_size=context_size,
                         forget_bias=forget_bias, **kwargs)


@keras.saving.register_keras_serializable(package="kvae")
class IAFPosterior(FlowPosterior):
    r"""Gaussian posterior followed by ``num_steps`` gated IAF steps (Kingma et al. 2016): a
    :class:`FlowPosterior` with ``flows="iaf,...,iaf"``, under kvae 0.1's name, arguments
    (``hidden_units``: the MADEs' units) and config."""

    def __init__(self, latent_dim, num_steps=2, hidden_units=(320, 320), context_size=64, min_scale=1e-4,
                 forget_bias=2.0, **kwargs):
        if int(num_steps) < 1:
            raise ConfigError(f"an IAF posterior needs num_steps >= 1, got {num_steps}")
        super().__init__(latent_dim, ["iaf"] * int(num_steps), min_scale=min_scale, iaf_hidden=hidden_units,
                         context_size=context_size, forget_bias=forget_bias, **kwargs)
        self.num_steps, self.hidden_units = int(num_steps), self.iaf_hidden

    def get_config(self):
        return {**keras.layers.Layer.get_config(self), "latent_dim": self.latent_dim, "num_steps": self.num_steps,
                "hidden_units": self.hidden_units, "context_size": self.context_size, "min_scale": self.min_scale,
                "forget_bias": self.forget_bias}


@keras.saving.register_keras_serializable(package="kvae")
class DeterministicPosterior(Posterior):
    """z = E(x), a point mass (RAE and plain autoencoders, Ghosh et al. 2020): no density, no KL."""

    factorized = False
    deterministic = True
    param_names = ("z",)

    def __init__(self, latent_dim, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.dense = keras.layers.Dense(self.latent_dim, name="code")

    def build(self, input_shape):
        if not self.dense.built:
            self.dense.build(input_shape)
        self.built = True

    def call(self, h):
        return (keras.ops.cast(self.dense(h), "float32"),)

    def distribution(self, params):
        return tfd.Independent(tfd.Deterministic(params[0]), reinterpreted_batch_ndims=1)

    def reparameterize(self, q, eps):
        """The code itself (eps enters with weight 0 so exported graphs keep the same inputs)."""
        return q.distribution.loc + 0.0 * eps

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


def _planar_radial(kinds):
    def make(latent_dim, name="posterior"):
        """A :class:`PlanarRadialPosterior` over ``latent_dim`` codes with four flows of one kind."""
        return PlanarRadialPosterior(latent_dim, kinds, name=name)

    return make


planar_posterior = _planar_radial("planar,planar,planar,planar")  # posterior="planar"
"""``posterior="planar"``: ``planar_posterior(latent_dim)`` is a Gaussian followed by four planar flows."""
radial_posterior = _planar_radial("radial,radial,radial,radial")  # posterior="radial"
"""``posterior="radial"``: ``radial_posterior(latent_dim)`` is a Gaussian followed by four radial flows."""


def get(identifier, latent_dim):
    """Return a posterior from a name ("gaussian"; :func:`kvae.registry.names` ``("posterior")``), a config
    dict or a layer (passed through)."""
    return registry.build("posterior", identifier, latent_dim, name="posterior")


def register(name, cls):
    """Make ``cls(latent_dim, name=...)`` available as ``posterior=name``
    (``kvae.registry.register("posterior", name, cls)``)."""
    registry.register("posterior", name, cls)
