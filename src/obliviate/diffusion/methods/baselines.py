"""Two baselines every unlearning benchmark reports.

* Gradient ascent ("NegGrad"): maximise the diffusion loss on the forget images. Unbounded, so
  it is run for a fixed, small number of steps at a small learning rate.
* Retain fine-tuning ("FT", Warnecke et al. 2023; the EraseDiff and SalUn DDPM baselines):
  keep training on the retain images only and rely on catastrophic forgetting.

Their defaults (lr 1e-5 for 100 steps; lr 1e-4 for 1,000 steps; batch 128) are ours: the
papers tune them per dataset.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from obliviate.core.registry import METHODS
from obliviate.diffusion.methods.base import (
    DiffusionMethodConfig,
    DiffusionUnlearningMethod,
    UnlearnContext,
)
from obliviate.diffusion.models import Denoiser
from obliviate.diffusion.training import LoopOutcome, ddpm_loss


class GradAscentConfig(DiffusionMethodConfig):
    steps: int = Field(default=100, ge=0)
    learning_rate: float = Field(default=1e-5, gt=0)


class RetainFinetuneConfig(DiffusionMethodConfig):
    steps: int = Field(default=1000, ge=0)
    learning_rate: float = Field(default=1e-4, gt=0)


@METHODS.register("grad_ascent", modality="diffusion")
class GradAscent(DiffusionUnlearningMethod):
    """Gradient ascent on the forget images' diffusion loss."""

    config_class: ClassVar[type[GradAscentConfig]] = GradAscentConfig
    paper: ClassVar[str] = "baseline (NegGrad; e.g. Wu et al. 2024, Fan et al. 2024)"

    def unlearn(self, model: Denoiser, ctx: UnlearnContext) -> LoopOutcome:
        def step_fn(step: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
            x, y = ctx.batch("forget", self.config.batch_size, gen)
            return -ddpm_loss(model, x, y, gen), {}

        return self.optimise(model, model.parameter_group("full"), step_fn, ctx)


@METHODS.register("retain_finetune", modality="diffusion")
class RetainFinetune(DiffusionUnlearningMethod):
    """Fine-tuning on the retain images only."""

    config_class: ClassVar[type[RetainFinetuneConfig]] = RetainFinetuneConfig
    paper: ClassVar[str] = "baseline (FT; e.g. Warnecke et al. 2023, Fan et al. 2024)"

    def unlearn(self, model: Denoiser, ctx: UnlearnContext) -> LoopOutcome:
        dropout = model.config.cond_dropout

        def step_fn(step: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
            x, y = ctx.batch("retain", self.config.batch_size, gen)
            return ddpm_loss(model, x, y, gen, cond_dropout=dropout), {}

        return self.optimise(model, model.parameter_group("full"), step_fn, ctx)
