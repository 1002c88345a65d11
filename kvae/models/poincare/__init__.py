"""Poincaré VAE (Mathieu et al. 2019): wrapped normals on the Poincaré ball."""
from kvae.models.poincare.model import PoincareVAE  # noqa: F401
