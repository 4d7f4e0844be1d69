"""User-facing errors: one line that names what is wrong and what is accepted.

The CLI turns every :class:`BitsmithError` into that line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations


class BitsmithError(ValueError):
    """Bad input from a user: an unknown name, an out-of-range value, a missing or corrupt file."""


class DataError(BitsmithError):
    """A dataset folder or file that is missing, incomplete or corrupt."""


class CheckpointError(BitsmithError):
    """A run directory or checkpoint that is missing, corrupt, or not a bitsmith checkpoint."""


class ConfigError(BitsmithError):
    """A configuration value or file that is out of range or malformed."""


class UnsupportedLayerError(BitsmithError):
    """A module that a bitsmith transformation (tracing, costing, quantization) cannot handle."""


class MissingDependencyError(BitsmithError):
    """An optional package a feature needs is not installed (the message names the pip extra)."""


class ParityError(BitsmithError):
    """An exported model does not compute what the PyTorch model computes (the message names the first layer that
    diverges)."""
