"""The LLM experiment recipe: one YAML file, every section a typed config with defaults."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from obliviate.core.recipe import StrictModel
from obliviate.llm.attacks.base import ProbeOptions
from obliviate.llm.methods.base import SelectionConfig, UnlearnTrainConfig
from obliviate.llm.models import LoraSettings, ModelConfig
from obliviate.llm.task import TaskConfig
from obliviate.llm.training import TrainConfig


class EvaluationConfig(StrictModel):
    """Which evaluation suites run on each model, and their options."""

    suites: list[str] = Field(default_factory=lambda: ["tofu", "mia", "memorization"])
    options: dict[str, Any] = Field(default_factory=dict)


class UnlearnConfig(StrictModel):
    """Which methods to run and how to optimise them.

    ``method_args`` maps a method name to its hyperparameters (validated by that method's
    config class, whose defaults are the paper's); ``train`` is shared by every method.
    ``target`` is the model to unlearn: a path, or ``None`` for this run's fine-tuned target.
    """

    methods: list[str] = Field(default_factory=lambda: ["grad_ascent", "grad_diff", "npo"],
                               min_length=1)
    method_args: dict[str, dict[str, Any]] = Field(default_factory=dict)
    train: UnlearnTrainConfig = UnlearnTrainConfig()
    lora: LoraSettings = LoraSettings()
    selection: SelectionConfig = SelectionConfig()
    target: str | None = None


class AttackSettings(StrictModel):
    """Which attacks run against each unlearned model (and the oracle), and their options."""

    attacks: list[str] = Field(default_factory=lambda: [
        "relearning", "quantization", "rephrasing", "logit_lens", "linear_probe"])
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    probe: ProbeOptions = ProbeOptions()
    models: list[str] | None = Field(
        default=None, description="models to attack, e.g. [unlearned/npo]; default: all but the "
                                  "oracle")


class LLMRecipe(StrictModel):
    """An LLM unlearning experiment: task, model, fine-tuning, unlearning and evaluation."""

    name: str = "experiment"
    modality: Literal["llm"] = "llm"
    seed: int = 0
    output_dir: str | None = Field(default=None, description="default: runs/<name>")
    task: TaskConfig = TaskConfig()
    model: ModelConfig = ModelConfig()
    finetune: TrainConfig = TrainConfig()
    unlearn: UnlearnConfig = UnlearnConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    attack: AttackSettings = AttackSettings()
