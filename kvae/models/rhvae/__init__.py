"""RHVAE (Chadebec et al. 2020): a learned Riemannian metric and its Hamiltonian flow."""
from kvae.models.rhvae.model import RHVAE  # noqa: F401
