"""Build a diffusion :class:`~obliviate.core.task.UnlearningTask` from a recipe's ``task``
section.

``task.benchmark`` names a registered benchmark (``mnist``, the default; ``digits``;
``image_folder``; see :mod:`obliviate.diffusion.benchmarks`); the section's other keys are that
benchmark's config. ``task.dataset`` is the older spelling (``dataset: folder`` is
``benchmark: image_folder``), so ``{dataset: digits, image_size: 8, forget_classes: [3]}``
still reads as it did.
"""

from __future__ import annotations

from typing import Any, ClassVar

import obliviate.diffusion.benchmarks  # noqa: F401  (registers the benchmarks)
from obliviate.core.benchmark import TaskSection
from obliviate.core.task import UnlearningTask
from obliviate.diffusion import MODALITY

DOMAINS = ("style", "object")
"""The two domains a paired-domain task's classes combine (UnlearnCanvas's)."""


class TaskConfig(TaskSection):
    """Which images, which classes to forget, at which resolution: a benchmark and its
    settings."""

    modality: ClassVar[str] = MODALITY
    default_benchmark: ClassVar[str] = "mnist"
    aliases: ClassVar[dict[str, dict[str, str]]] = {"source": {},
                                                    "dataset": {"folder": "image_folder"}}


def build_task(config: TaskConfig, seed: int = 0) -> UnlearningTask:
    """Load the benchmark's images and return the validated task (overlap, emptiness)."""
    return config.load(seed).validate()


def forget_classes(task: UnlearningTask) -> list[int]:
    """The task's forget classes that its forget images hold: all of them for a whole task,
    one deletion request's (or one forget-set size's) for the tasks
    :mod:`obliviate.core.requests` cuts from it."""
    classes = list(task.metadata["forget_classes"])
    present = {getattr(r, "label", None) for r in task.forget.records}
    return [c for c in classes if c in present] or classes


def retain_classes(task: UnlearningTask) -> list[int]:
    gone = set(forget_classes(task))
    return [c for c in range(task.metadata["num_classes"]) if c not in gone]


def erased_domain(task: UnlearningTask, judge_factors: Any) -> int | None:
    """For a task whose classes pair two domains (``metadata["factors"]``: domain → concept
    names, class ``k`` = ``(k // len(second), k % len(second))``, as styles × objects), judged by
    a two-head judge (``judge_factors``): which domain the task erases (0 or 1, from
    ``metadata["erase"]``). ``None`` for plain classes, where the judge reads whole classes."""
    meta = task.metadata
    factors = meta.get("factors")
    if not factors or judge_factors is None or set(factors) != set(DOMAINS) or \
            meta.get("erase") not in factors:
        return None
    return list(factors).index(meta["erase"])


def factors_input(task: UnlearningTask) -> dict[str, Any]:
    """What a stage that reads the judge adds to its inputs for a paired-domain task (the
    domains' sizes: such a task's judge, evaluation and attack success differ); ``{}`` for
    plain classes, so their runs' stages stay as recorded."""
    factors = task.metadata.get("factors")
    return {"factors": [len(v) for v in factors.values()]} if factors else {}
