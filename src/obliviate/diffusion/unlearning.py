"""The diffusion recipe's ``unlearn:`` section: which methods run on the target, and the
settings shared by every method (``unlearn.train``), below each method's own
``unlearn.method_args``. Its own module so a benchmark's recipe schema can use it without
importing the whole recipe (the recipe's task section imports the benchmarks)."""

from __future__ import annotations

from pydantic import Field

from obliviate.core.recipe import MixedPrecision, StrictModel, UnlearnSection


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
    mixed_precision: MixedPrecision | None = None
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
