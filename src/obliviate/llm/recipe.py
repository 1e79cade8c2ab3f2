"""The LLM experiment recipe: one YAML file, every section a typed config with defaults."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from obliviate.core.recipe import (
    AttackSection,
    EvaluationSection,
    RecipeBase,
    UnlearnSection,
)
from obliviate.llm.attacks.base import ProbeOptions
from obliviate.llm.methods.base import SelectionConfig, UnlearnTrainConfig
from obliviate.llm.models import LoraSettings, ModelConfig
from obliviate.llm.task import TaskConfig
from obliviate.llm.training import TrainConfig


class EvaluationConfig(EvaluationSection):
    """Which evaluation suites run on each model, and their options.

    Without ``suites`` the task's benchmark chooses them for its data (:meth:`for_task`): a
    user's plain-text JSONL gets MUSE's VerbMem, MIA and memorisation, question-answer data
    TOFU's suite, MIA and memorisation, MUSE its ``muse`` suite."""

    suites: list[str] | None = Field(
        default=None, description="suites to run; unset: the benchmark's for the task's data")
    options: dict[str, Any] = Field(default_factory=dict)
    """each suite's options, keyed by its name (evaluation.options.<suite>.<key>)"""

    def for_task(self, bench: Any, task: Any) -> tuple[EvaluationConfig, dict[str, str]]:
        """``(this section with suites, the benchmark's suites left out -> why)``: where the
        recipe names no suites, ``bench``'s for ``task`` (its default options under the
        recipe's own; the recipe's options of a suite the data does not get are set aside)."""
        if self.suites is not None:
            return self, {}
        suites, defaults, left_out = bench.default_evaluation(task)
        options = {k: v for k, v in {**defaults, **self.options}.items()
                   if k in suites or k == "engine"}
        return self.model_copy(update={"suites": suites, "options": options}), left_out


class UnlearnConfig(UnlearnSection):
    """Which methods to run and how to optimise them; ``train`` is shared by every method."""

    methods: list[str] = Field(default_factory=lambda: ["grad_ascent", "grad_diff", "npo"],
                               min_length=1)
    """the unlearning methods to run, by registered name (`obliviate methods` lists them)"""
    train: UnlearnTrainConfig = UnlearnTrainConfig()
    """optimisation of every method (each method's paper values fill what the recipe leaves out)"""
    lora: LoraSettings = LoraSettings()
    """LoRA adapters for unlearning (the methods train them, then they are merged)"""
    selection: SelectionConfig = SelectionConfig()
    """which checkpoint of the unlearning run is kept"""


class AttackSettings(AttackSection):
    """Which attacks run against each unlearned model (and the oracle), and their options."""

    attacks: list[str] = Field(default_factory=lambda: [
        "relearning", "quantization", "rephrasing", "logit_lens", "linear_probe"], min_length=1)
    """the attacks to run, by registered name"""
    probe: ProbeOptions = ProbeOptions()
    """how the forget set is probed on the attacked model and the oracle"""


class LLMRecipe(RecipeBase[TaskConfig, ModelConfig, TrainConfig, UnlearnConfig, EvaluationConfig,
                           AttackSettings]):
    """An LLM unlearning experiment: task, model, fine-tuning, unlearning and evaluation."""

    modality: Literal["llm"] = "llm"
    """llm (selects this recipe type)"""
