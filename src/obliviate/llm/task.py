"""Build an LLM :class:`~obliviate.core.task.UnlearningTask` from a recipe's ``task`` section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from obliviate.core.recipe import StrictModel
from obliviate.core.task import DataSplit, UnlearningTask
from obliviate.llm import MODALITY
from obliviate.llm.data.jsonl import load_jsonl
from obliviate.llm.data.synthetic import SyntheticFactsConfig, generate_synthetic_facts
from obliviate.llm.data.tofu import FORGET_SPLITS, HUB_ID, default_tofu_root, load_tofu


class TaskConfig(StrictModel):
    """Where the forget and retain sets come from.

    ``synthetic`` (default) needs no download; ``tofu`` reads a local TOFU folder or the hub;
    ``jsonl`` reads a user's own files.
    """

    source: Literal["synthetic", "tofu", "jsonl"] = "synthetic"
    name: str | None = None
    synthetic: SyntheticFactsConfig = SyntheticFactsConfig()
    tofu_path: str | None = Field(default=None, description="TOFU folder or hub id")
    forget_split: str = "forget10"
    retain_limit: int | None = Field(default=None, ge=1,
                                     description="keep the first N retain records (CPU slices)")
    forget_path: str | None = None
    retain_path: str | None = None
    holdout_path: str | None = None

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        if self.source == "jsonl" and not (self.forget_path and self.retain_path):
            raise ValueError("task.source=jsonl needs task.forget_path and task.retain_path")
        if self.source == "tofu" and self.forget_split not in FORGET_SPLITS:
            raise ValueError(f"task.forget_split must be one of {', '.join(FORGET_SPLITS)}")
        return self


def _limit(split: DataSplit, n: int | None) -> DataSplit:
    if n is None or len(split) <= n:
        return split
    return DataSplit(split.name, list(split.records)[:n], source=f"{split.source}[:{n}]")


def build_task(config: TaskConfig, seed: int = 0) -> UnlearningTask:
    """Load the data and return a validated task (overlap and emptiness checked)."""
    extra: dict[str, DataSplit] = {}
    if config.source == "synthetic":
        facts = generate_synthetic_facts(config.synthetic)
        src = f"synthetic(seed={config.synthetic.seed})"
        forget = DataSplit("synthetic_forget", facts["forget"], source=src)
        retain = DataSplit("synthetic_retain", facts["retain"], source=src)
        if facts.get("holdout"):
            extra["holdout"] = DataSplit("synthetic_holdout", facts["holdout"], source=src)
        name = config.name or "synthetic"
    elif config.source == "tofu":
        root = config.tofu_path or default_tofu_root() or HUB_ID
        splits = load_tofu(Path(root) if Path(str(root)).exists() else str(root),
                           forget_splits=(config.forget_split,))
        named = splits.splits(config.forget_split)
        forget, retain = named.pop("forget"), named.pop("retain")
        extra = named
        name = config.name or f"tofu_{config.forget_split}"
    else:
        assert config.forget_path and config.retain_path
        forget = DataSplit(Path(config.forget_path).stem, load_jsonl(config.forget_path),
                           source=config.forget_path)
        retain = DataSplit(Path(config.retain_path).stem, load_jsonl(config.retain_path),
                           source=config.retain_path)
        if config.holdout_path:
            extra["holdout"] = DataSplit(Path(config.holdout_path).stem,
                                         load_jsonl(config.holdout_path),
                                         source=config.holdout_path)
        name = config.name or "jsonl"
    retain = _limit(retain, config.retain_limit)
    task = UnlearningTask(name=name, modality=MODALITY, forget=forget, retain=retain,
                          eval_splits=extra, seed=seed,
                          metadata={"source": config.source})
    return task.validate()


def task_texts(task: UnlearningTask) -> list[str]:
    """Every string in the task (used to train a tiny model's tokenizer)."""
    texts: list[str] = []
    for split in [task.forget, task.retain, *task.eval_splits.values()]:
        for r in split.records:
            texts += [r.question, r.answer, r.paraphrased_question or "",
                      r.paraphrased_answer or "", *r.perturbed_answers]
    return [t for t in texts if t]
