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

from obliviate.core.recipe import AttackSection, RecipeBase
from obliviate.diffusion.attacks import ProbeOptions
from obliviate.diffusion.evaluation import EvaluationConfig
from obliviate.diffusion.models import ModelConfig
from obliviate.diffusion.task import TaskConfig
from obliviate.diffusion.training import TrainConfig
from obliviate.diffusion.unlearning import UnlearnConfig, UnlearnTrainConfig  # noqa: F401


class AttackSettings(AttackSection):
    """Which attacks run against each model (and the oracle), their options and the probe."""

    attacks: list[str] = Field(default_factory=lambda: ["embedding", "concept_vector",
                                                        "relearning"], min_length=1)
    """the attacks to run, by registered name"""
    probe: ProbeOptions = ProbeOptions()
    """how the forget concept is probed on the attacked model and the oracle"""


class DiffusionRecipe(RecipeBase[TaskConfig, ModelConfig, TrainConfig, UnlearnConfig,
                                 EvaluationConfig, AttackSettings]):
    """A diffusion unlearning experiment: task, model, fine-tuning, unlearning, evaluation."""

    name: str = "diffusion"
    """the experiment's name: the run directory is runs/<name> unless output_dir says otherwise"""
    modality: Literal["diffusion"] = "diffusion"
    """diffusion (selects this recipe type)"""
