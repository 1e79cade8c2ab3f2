"""Build an LLM :class:`~obliviate.core.task.UnlearningTask` from a recipe's ``task`` section.

``task.benchmark`` (alias ``task.source``) names a registered benchmark (``synthetic``, the
default, needs no download; ``tofu`` reads a local TOFU folder or the hub; ``jsonl`` reads a
user's own files; see :mod:`obliviate.llm.benchmarks`); the section's other keys are that
benchmark's config.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

import obliviate.llm.benchmarks  # noqa: F401  (registers the benchmarks)
from obliviate.core.benchmark import TaskSection
from obliviate.core.task import UnlearningTask
from obliviate.llm import MODALITY
from obliviate.llm.benchmarks.base import limit_split
from obliviate.llm.data.wmdp import MCQItem


class TaskConfig(TaskSection):
    """Where the forget and retain sets come from: a benchmark and its settings."""

    modality: ClassVar[str] = MODALITY
    default_benchmark: ClassVar[str] = "synthetic"
    retain_limit: int | None = Field(default=None, ge=1,
                                     description="keep the first N retain records (CPU slices)")


def build_task(config: TaskConfig, seed: int = 0) -> UnlearningTask:
    """Load the data and return a validated task (overlap and emptiness checked)."""
    task = config.load(seed)
    task.retain = limit_split(task.retain, config.retain_limit)
    return task.validate()


def task_texts(task: UnlearningTask) -> list[str]:
    """Every string in the task (used to train a tiny model's tokenizer)."""
    texts: list[str] = []
    for split in [task.forget, task.retain, *task.eval_splits.values()]:
        for r in split.records:
            if isinstance(r, MCQItem):  # WMDP-style questions: the text the mcq suite shows
                texts += [r.question, *r.choices]
                continue
            texts += [r.question, r.answer, r.paraphrased_question or "",
                      r.paraphrased_answer or "", *r.perturbed_answers]
    return [t for t in texts if t]
