"""Errors kvae raises for problems a user can fix (bad data, missing files, bad options).

Each message names the problem and, where there is one, the fix.  The CLI prints
them as one line and exits non-zero.
"""


class KvaeError(Exception):
    """Base class of the errors kvae raises on purpose."""


class DataError(KvaeError, ValueError):
    """Input data has the wrong shape, dtype or values, or cannot be found."""


class ConfigError(KvaeError, ValueError):
    """An option or a combination of options is invalid."""


class RunError(KvaeError):
    """A run directory, model file or checkpoint is missing, corrupt or incompatible."""
