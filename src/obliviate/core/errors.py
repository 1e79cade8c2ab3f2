"""User-facing errors.

An :class:`ObliviateError` is a problem with the user's input or environment that the CLI
prints as one line (``error: ...``) with a non-zero exit, never as a traceback.
"""

from __future__ import annotations


class ObliviateError(Exception):
    """A problem the user can fix: bad input, a missing file, an impossible setting."""


class DataError(ObliviateError):
    """A data file or record is missing, malformed or inconsistent."""


class ConfigError(ObliviateError):
    """A recipe, override or hyperparameter is invalid."""


class ModelLoadError(ObliviateError):
    """A model or tokenizer cannot be loaded from the given path or id."""


class TrainingDivergedError(ObliviateError):
    """A training loss became NaN/inf or exploded; the last good checkpoint is kept."""
