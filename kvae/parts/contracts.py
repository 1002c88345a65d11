r"""The contract of each part kind, as base classes that declare their flags.

A model (:class:`kvae.core.model.VariationalModel`) composes an encoder network, a
:class:`Posterior` head q(z|x), a :class:`Prior` p(z), a decoder network and a :class:`Likelihood`
head p(x|z), plus an ex-post :class:`Density` over codes (``fit_density``).  Each base class states
what the model calls and which flags it reads; a part written by a user subclasses one of them (and
then exports and serves like the built-in ones).  The core reads flags only through :func:`flag`,
which also accepts a plain Keras layer that declares them itself (kvae 0.1's documented contract).

They live at the bottom of :mod:`kvae.parts` (not in :mod:`kvae.core`) so that parts can subclass them
without importing the model.
"""
import keras

#: every flag the core or the exporter reads, per kind, with its default
FLAGS = {
    "posterior": {"factorized": False, "deterministic": False, "param_names": None},
    "prior": {"factorized": False, "needs_component_noise": False},
    "likelihood": {"normalised": True, "needs_uniform": False, "memory_factor": 1},
    "density": {"needs_component_noise": False, "kind": None},
}


def flag(part, name, kind):
    """The value of flag ``name`` of a part of ``kind``: the part's own attribute, else the
    contract's default (:data:`FLAGS`)."""
    return getattr(part, name, FLAGS[kind][name])


def reparameterizes(posterior):
    """Whether the posterior maps standard-normal noise to its samples (``reparameterize``), so the
    noise can be given explicitly (distributed training, the exported endpoints)."""
    method = getattr(type(posterior), "reparameterize", None)
    return method is not None and method is not Posterior.reparameterize


class Posterior(keras.layers.Layer):
    r"""q(z|x): ``layer(h)`` turns encoder features h into a tuple of parameter tensors (what the
    ``encode`` endpoint exports, named by :attr:`param_names`), and :meth:`distribution` turns them
    into a reparameterised ``tfd.Distribution`` with event shape ``[latent_dim]``.

    Flags: ``factorized`` — ``distribution(params).distribution`` is a batch of univariate
    distributions, one per dimension (enables KL per dimension and per-dimension free bits);
    ``deterministic`` — q is a point mass (RAE/AE: no ELBO, no importance sampling).
    """

    factorized = False
    deterministic = False
    #: names of the tensors ``call`` returns (the exported ``encode`` endpoint's outputs)
    param_names = None

    def distribution(self, params):
        raise NotImplementedError

    def reparameterize(self, q, eps):
        """A sample of q from standard-normal noise eps [..., B, latent_dim] (optional)."""
        raise NotImplementedError


class Prior(keras.layers.Layer):
    r"""p(z): :meth:`distribution` with event shape ``[latent_dim]``; :meth:`from_noise` maps
    standard-normal noise (and, for mixtures, ``component_uniform`` [N] in [0, 1)) to draws, which is
    what the exported ``sample`` endpoint runs.  ``bind(model)`` is called once the model's networks
    exist (priors built from them, such as the VampPrior).

    Flags: ``factorized`` (as for posteriors); ``needs_component_noise`` — :meth:`from_noise` takes
    the uniform component noise.
    """

    factorized = False
    needs_component_noise = False

    def bind(self, model):
        """Called by the model after its networks are built."""

    def distribution(self):
        raise NotImplementedError

    def from_noise(self, eps, component_uniform=None):
        raise NotImplementedError


class Likelihood(keras.layers.Layer):
    r"""p(x|z): ``layer(features)`` returns the decoder's parameter tensors and :meth:`distribution`
    a ``tfd.Distribution`` over x with event shape ``input_shape``; :meth:`images` returns images for
    those parameters (E[x|z], or a draw with explicit ``uniform`` pixel noise).

    Flags: ``normalised`` — a density, so the ELBO and log p(x) are defined (not for a reconstruction
    score such as MS-SSIM); ``needs_uniform`` — sampling takes uniform pixel noise (PixelCNN);
    ``memory_factor`` — numbers held per pixel and sample while evaluating ``log_prob`` (sizes the
    chunks of importance sampling).
    """

    normalised = True
    needs_uniform = False
    memory_factor = 1

    def distribution(self, params):
        raise NotImplementedError

    def images(self, params, uniform=None):
        raise NotImplementedError


class Density(keras.layers.Layer):
    r"""An ex-post density over codes (``fit_density``, ``sample(source="density")``): ``fit(codes)``,
    ``is_fitted``, :meth:`distribution` and ``from_noise(eps, component_uniform=None)``.

    Flags: ``kind`` — its registry name; ``needs_component_noise`` — as for priors.
    """

    kind = None
    needs_component_noise = False

    def fit(self, codes, seed=0):
        raise NotImplementedError

    def distribution(self):
        raise NotImplementedError

    def from_noise(self, eps, component_uniform=None):
        raise NotImplementedError
