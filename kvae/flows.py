r"""Autoregressive flows as TFP bijectors driven by kvae's Keras 3 MADE layers.

* MAF (Papamakarios et al. 2017): ``tfb.MaskedAutoregressiveFlow``:
  forward  y_d = x_d exp(s_d(y_<d)) + m_d(y_<d)   (sequential, D passes),
  inverse  x_d = (y_d - m_d(y_<d)) exp(-s_d(y_<d))  (one pass), so density evaluation is cheap.
* IAF (Kingma et al. 2016): the inverse of a MAF, ``tfb.Invert(MAF)``: sampling is one pass and the
  density of the flow's own samples is read from TFP's bijector cache.

Steps are stacked with alternating input orders (natural, reversed, ...), which is the order
reversal between steps of both papers.
"""
import tensorflow_probability as tfp

from .layers.made import MADE

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
