r"""Autoregressive flows as TFP bijectors driven by kvae's Keras 3 MADE layers.

* MAF (Papamakarios et al. 2017): ``tfb.MaskedAutoregressiveFlow``:
  forward  y_d = x_d exp(s_d(y_<d)) + m_d(y_<d)   (sequential, D passes),
  inverse  x_d = (y_d - m_d(y_<d)) exp(-s_d(y_<d))  (one pass), so density evaluation is cheap.
* IAF as the inverse of a MAF, ``tfb.Invert(MAF)`` (the flow prior ``kind="iaf"``): sampling is one
  pass and the density of the flow's own samples is read from TFP's bijector cache.
* The IAF posterior step of Kingma et al. 2016 (eq. 14-15, Algorithm 2): :class:`GatedIAFStep`,
  ``[m, s] = MADE(z, h)``, ``sigma = sigmoid(s + forget_bias)``, ``z <- sigma * z + (1 - sigma) * m``,
  ``log|det| = sum log sigma``: a convex combination, so a step never expands z.

Steps are stacked with alternating input orders (natural, reversed, ...), which is the order
reversal between steps of both papers.
"""
import tensorflow as tf
import tensorflow_probability as tfp

from kvae.nn.made import MADE

tfb = tfp.bijectors


def made_stack(event_size, num_steps, hidden_units, context_size=None, log_scale="tanh", name="made"):
    """``num_steps`` MADE layers with alternating natural / reversed orders."""
    return [MADE(event_size, hidden_units, order="natural" if i % 2 == 0 else "reversed",
                 context_size=context_size, log_scale=log_scale, name=f"{name}_{i}") for i in range(num_steps)]


def _fn(made, context):
    if context is None:
        return lambda x: made(x)
    return lambda x: made(x, context)


def masked_autoregressive_flow(mades, context=None):
    """MAF chain: MADE 0 acts first in the forward (sampling) direction."""
    steps = [tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=_fn(m, context), name=f"maf_{i}")
             for i, m in enumerate(mades)]
    return tfb.Chain(steps[::-1])


def inverse_autoregressive_flow(mades, context=None):
    """IAF chain: each step is the inverse of a MAF step; MADE 0 acts first in the forward direction."""
    steps = [tfb.Invert(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=_fn(m, context)), name=f"iaf_{i}")
             for i, m in enumerate(mades)]
    return tfb.Chain(steps[::-1])


class GatedIAFStep(tfb.Bijector):
    r"""One IAF step as Kingma et al. 2016 write it (eq. 14-15, Algorithm 2):

        [m, s] = MADE(z_{t-1}; h),  sigma = sigmoid(s + forget_bias),
        z_t = sigma * z_{t-1} + (1 - sigma) * m,   log|det dz_t/dz_{t-1}| = sum_d log sigma_d.

    m_d and sigma_d depend on z_{<d} only, so the Jacobian is triangular with diagonal sigma.
    The forget-gate bias makes s "sufficiently positive, close to +1 or +2" before training (the
    paper), so a step starts by updating z only slightly (the MADE's last layer starts at zero:
    sigma = sigmoid(2) = 0.88, m = 0).  z_t is a convex combination of z_{t-1} and m, so samples
    stay finite whatever the weights.  The inverse (needed only for codes the flow did not
    produce; TFP caches it for its own samples) runs D passes of the MADE.
    """

    def __init__(self, made, context=None, forget_bias=2.0, name="gated_iaf"):
        self.made, self.context, self.forget_bias = made, context, float(forget_bias)
        super().__init__(forward_min_event_ndims=1, validate_args=False, name=name)

    def _gate(self, x):
        m, s = self.made(x) if self.context is None else self.made(x, self.context)
        return m, s + self.forget_bias

    def _forward(self, x):
        m, s = self._gate(x)
        sigma = tf.sigmoid(s)
        return sigma * x + (1.0 - sigma) * m

    def _forward_log_det_jacobian(self, x):
        _, s = self._gate(x)
        return tf.reduce_sum(tf.math.log_sigmoid(s), axis=-1)

    def _inverse(self, y):
        def body(i, x):
            m, s = self._gate(x)
            sigma = tf.sigmoid(s)
            return i + 1, (y - (1.0 - sigma) * m) / sigma

        size = tf.shape(y)[-1]
        _, x = tf.while_loop(lambda i, x: i < size, body, (tf.constant(0), tf.zeros_like(y)))
        return x


def gated_inverse_autoregressive_flow(mades, context=None, forget_bias=2.0):
    """Chain of :class:`GatedIAFStep`; MADE 0 acts first in the forward (sampling) direction."""
    steps = [GatedIAFStep(m, context, forget_bias, name=f"gated_iaf_{i}") for i, m in enumerate(mades)]
    return tfb.Chain(steps[::-1])
