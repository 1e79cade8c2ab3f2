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
    """optimiser steps for every method (None: each method's paper value)"""
    learning_rate: float | None = Field(default=None, gt=0)
    """learning rate for every method (None: each method's paper value)"""
    batch_size: int | None = Field(default=None, ge=1)
    """images per step, for every method (None: each method's paper value)"""
    checkpoint_every: int | None = Field(default=None, ge=1)
    """checkpoint interval for every method (None: each method's)"""
    log_every: int | None = Field(default=None, ge=1)
    """loss logging interval for every method (None: each method's)"""
    gradient_accumulation_steps: int | None = Field(default=None, ge=1)
    """micro-batches per step for every method (None: each method's)"""
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    """autocast precision for every method (None: each method's)"""
    seed: int | None = None
    """the unlearning seed of every method (None: each method's; a sweep's seeds set it)"""


class UnlearnConfig(UnlearnSection):
    """Which methods to run on the target, with which hyperparameters. ``target`` may be a
    folder holding an obliviate model or a diffusers ``UNet2DConditionModel`` (with
    ``model.architecture=diffusers_unet``)."""

    methods: list[str] = Field(default_factory=lambda: ["esd_x", "salun", "uce"], min_length=1)
    """the unlearning methods to run, by registered name (`obliviate methods` lists them)"""
    train: UnlearnTrainConfig = UnlearnTrainConfig()
    """settings for every method at once (a method's own unlearn.method_args win)"""


class AttackSettings(AttackSection):
    """Which attacks run against each model (and the oracle), their options and the probe."""

    attacks: list[str] = Field(default_factory=lambda: ["embedding", "concept_vector",
                                                        "relearning"], min_length=1)
    """the attacks to run, by registered name"""
    probe: ProbeOptions = ProbeOptions()
    """how the forget concept is probed on the attacked model and the oracle"""


class DiffusionRecipe(RecipeBase):
    """A diffusion unlearning experiment: task, model, fine-tuning, unlearning, evaluation."""

    name: str = "diffusion"
    """the experiment's name: the run directory is runs/<name> unless output_dir says otherwise"""
    modality: Literal["diffusion"] = "diffusion"
    """diffusion (selects this recipe type)"""
    task: TaskConfig = TaskConfig()
    """the images and which classes to forget"""
    model: ModelConfig = ModelConfig()
    """the denoiser and its noise schedule"""
    finetune: TrainConfig = TrainConfig()
    """training of the target (forget and retain) and the oracle (retain only)"""
    unlearn: UnlearnConfig = UnlearnConfig()
    """the unlearning methods and their settings"""
    evaluation: EvaluationConfig = EvaluationConfig()
    """how generated images are scored (samples, judge, FID/KID)"""
    attack: AttackSettings = AttackSettings()
    """attacks on the unlearned models, each compared with the oracle"""
