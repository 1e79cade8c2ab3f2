"""The LLM experiment recipe: one YAML file, every section a typed config with defaults."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from obliviate.core.recipe import AttackSection, RecipeBase, StrictModel, UnlearnSection
from obliviate.llm.attacks.base import ProbeOptions
from obliviate.llm.methods.base import SelectionConfig, UnlearnTrainConfig
from obliviate.llm.models import LoraSettings, ModelConfig
from obliviate.llm.task import TaskConfig
from obliviate.llm.training import TrainConfig


class EvaluationConfig(StrictModel):
    """Which evaluation suites run on each model, and their options."""

    suites: list[str] = Field(default_factory=lambda: ["tofu", "mia", "memorization"])
    options: dict[str, Any] = Field(default_factory=dict)


class UnlearnConfig(UnlearnSection):
    """Which methods to run and how to optimise them; ``train`` is shared by every method."""

    methods: list[str] = Field(default_factory=lambda: ["grad_ascent", "grad_diff", "npo"],
                               min_length=1)
    train: UnlearnTrainConfig = UnlearnTrainConfig()
    lora: LoraSettings = LoraSettings()
    selection: SelectionConfig = SelectionConfig()


class AttackSettings(AttackSection):
    """Which attacks run against each unlearned model (and the oracle), and their options."""

    attacks: list[str] = Field(default_factory=lambda: [
        "relearning", "quantization", "rephrasing", "logit_lens", "linear_probe"], min_length=1)
    probe: ProbeOptions = ProbeOptions()


class LLMRecipe(RecipeBase):
    """An LLM unlearning experiment: task, model, fine-tuning, unlearning and evaluation."""

    modality: Literal["llm"] = "llm"
    task: TaskConfig = TaskConfig()
    model: ModelConfig = ModelConfig()
    finetune: TrainConfig = TrainConfig()
    unlearn: UnlearnConfig = UnlearnConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    attack: AttackSettings = AttackSettings()
