"""A user's own JSONL files as a benchmark: forget, retain and (optional) holdout, one record a
line (``{"question", "answer"}`` or ``{"text"}``; see :mod:`obliviate.llm.data.jsonl`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import model_validator

from obliviate.core.recipe import StrictModel
from obliviate.core.registry import BENCHMARKS
from obliviate.core.task import DataSplit, UnlearningTask
from obliviate.llm.benchmarks.base import (
    QA_AXES,
    QA_HEADLINE,
    TEXT_AXES,
    TEXT_HEADLINE,
    LLMBenchmark,
    chain,
    suites_for_data,
)
from obliviate.llm.data.jsonl import load_jsonl


class JsonlConfig(StrictModel):
    """The files: forget and retain are required, holdout (non-members for MIA) optional."""

    forget_path: str | None = None
    """JSONL file of the forget set (one {"question", "answer"} or {"text"} object a line)"""
    retain_path: str | None = None
    """JSONL file of the retain set, same format as the forget set"""
    holdout_path: str | None = None
    """JSONL file of data the model never saw, for membership inference (optional)"""

    @model_validator(mode="after")
    def _check(self) -> JsonlConfig:
        if not (self.forget_path and self.retain_path):
            raise ValueError("task.source=jsonl needs task.forget_path and task.retain_path")
        return self


def _split(path: str) -> DataSplit:
    return DataSplit(Path(path).stem, load_jsonl(path), source=path)


@BENCHMARKS.register("jsonl", modality="llm")
class Jsonl(LLMBenchmark):
    """Your own forget/retain(/holdout) JSONL files."""

    config_class = JsonlConfig
    splits = {"forget": "forget", "retain": "retain", "holdout": "holdout"}
    axes = chain(QA_AXES, TEXT_AXES)  # questions and answers, or plain-text documents
    headline = (*QA_HEADLINE, *TEXT_HEADLINE)
    oracle = "the target's base model fine-tuned on the retain file only"

    def default_evaluation(self, task: UnlearningTask
                           ) -> tuple[list[str], dict[str, Any], dict[str, str]]:
        """The suites follow the data: plain text or questions and answers
        (:func:`~obliviate.llm.benchmarks.base.suites_for_data`)."""
        return suites_for_data(task)

    def load(self, config: JsonlConfig, seed: int = 0) -> UnlearningTask:
        assert config.forget_path and config.retain_path
        extra = {"holdout": _split(config.holdout_path)} if config.holdout_path else {}
        return UnlearningTask(name="jsonl", modality=self.modality,
                              forget=_split(config.forget_path),
                              retain=_split(config.retain_path), eval_splits=extra, seed=seed)
