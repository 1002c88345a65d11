"""Moved to :mod:`kvae.options` (TensorFlow-free, shared by the CLI and :mod:`kvae.training.runs`)."""
from kvae.options import NOT_OPTIONS, PART_OPTIONS, Option, docstring_args, model_options  # noqa: F401
