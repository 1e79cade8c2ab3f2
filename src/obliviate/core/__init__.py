"""Modality-neutral core: tasks, registries, results, run directories, recipes.

Nothing in this package imports :mod:`obliviate.llm` or :mod:`obliviate.diffusion`.
"""

from obliviate.core.errors import ObliviateError
from obliviate.core.registry import ATTACKS, METHODS, SUITES, Registry
from obliviate.core.task import DataSplit, UnlearningTask

__all__ = [
    "ATTACKS",
    "METHODS",
    "SUITES",
    "DataSplit",
    "ObliviateError",
    "Registry",
    "UnlearningTask",
]
