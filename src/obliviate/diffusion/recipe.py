"""The diffusion experiment recipe: one YAML file, every section a typed config with defaults.

::

    modality: diffusion
    task:       {benchmark: mnist, forget_classes: [7], image_size: 16}
    model:      {architecture: class_unet, channels: [16, 32, 32]}
    finetune:   {steps: 2500, batch_size: 128}          # target, oracle (and the judge)
    unlearn:    {methods: [esd_x, salun, uce], method_args: {salun: {steps: 100}}}
    evaluation: {samples_per_class: 50, judge: {epochs: 6}}
    attack:     {attacks: [embedding, concept_vector, relearning]}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from obliviate.core.recipe import AttackSection, RecipeBase, StrictModel, UnlearnSection
from obliviate.diffusion.attacks import ProbeOptions
from obliviate.diffusion.evaluation import EvaluationConfig
from obliviate.diffusion.models import ModelConfig
from obliviate.diffusion.task import TaskConfig
from obliviate.diffusion.training import TrainConfig


class UnlearnTrainConfig(StrictModel):
    """Optimisation settings applied to every method that has them (``None``: the method's
    paper default). ``unlearn.method_args.<method>`` overrides these per method."""

    steps: int | None = Field(default=None, ge=0)
    learning_rate: float | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, ge=1)
    checkpoint_every: int | None = Field(default=None, ge=1)
    log_every: int | None = Field(default=None, ge=1)
    gradient_accumulation_steps: int | None = Field(default=None, ge=1)
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None


class UnlearnConfig(UnlearnSection):
    """Which methods to run on the target, with which hyperparameters. ``target`` may be a
    folder holding an obliviate model or a diffusers ``UNet2DConditionModel`` (with
    ``model.architecture=diffusers_unet``)."""

    methods: list[str] = Field(default_factory=lambda: ["esd_x", "salun", "uce"], min_length=1)
    train: UnlearnTrainConfig = UnlearnTrainConfig()


class AttackSettings(AttackSection):
    """Which attacks run against each model (and the oracle), their options and the probe."""

    attacks: list[str] = Field(default_factory=lambda: ["embedding", "concept_vector",
                                                        "relearning"], min_length=1)
    probe: ProbeOptions = ProbeOptions()


class DiffusionRecipe(RecipeBase):
    """A diffusion unlearning experiment: task, model, fine-tuning, unlearning, evaluation."""

    name: str = "diffusion"
    modality: Literal["diffusion"] = "diffusion"
    task: TaskConfig = TaskConfig()
    model: ModelConfig = ModelConfig()
    finetune: TrainConfig = TrainConfig()
    unlearn: UnlearnConfig = UnlearnConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    attack: AttackSettings = AttackSettings()
