"""HVAE (Caterini et al. 2018): the Hamiltonian-flow bound."""
from kvae.models.hvae.model import HVAE  # noqa: F401
