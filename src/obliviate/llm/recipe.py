"""The LLM experiment recipe: one YAML file, every section a typed config with defaults."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from obliviate.core.recipe import StrictModel
from obliviate.llm.models import ModelConfig
from obliviate.llm.task import TaskConfig
from obliviate.llm.training import TrainConfig


class EvaluationConfig(StrictModel):
    """Which evaluation suites run on each model, and their options."""

    suites: list[str] = Field(default_factory=lambda: ["tofu", "mia", "memorization"])
    options: dict[str, Any] = Field(default_factory=dict)


class LLMRecipe(StrictModel):
    """An LLM unlearning experiment: task, model, fine-tuning, unlearning and evaluation."""

    name: str = "experiment"
    modality: Literal["llm"] = "llm"
    seed: int = 0
    output_dir: str | None = Field(default=None, description="default: runs/<name>")
    task: TaskConfig = TaskConfig()
    model: ModelConfig = ModelConfig()
    finetune: TrainConfig = TrainConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
