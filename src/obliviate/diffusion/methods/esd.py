"""ESD: Erased Stable Diffusion (Gandikota et al., "Erasing Concepts from Diffusion Models",
ICCV 2023; github.com/rohitgandikota/erasing).

The model is fine-tuned so that, under the forget condition, it predicts the frozen model's
noise *guided away* from the concept:

    ε_θ(x_t, c_f)  →  ε*(x_t, ∅) − η·[ε*(x_t, c_f) − ε*(x_t, ∅)]

where x_t is produced by the model being trained itself: DDIM from pure noise under c_f (with
guidance ``start_guidance``) for a random number of the ``ddim_steps`` steps. No data is used.

ESD-x trains the parameters that read the condition (cross-attention ``attn2`` in Stable
Diffusion; here, on ``class_unet``, the ``cond_proj`` FiLM maps that read the class embedding);
ESD-u trains the rest of the UNet except the time embedding and the output layer (as ESD's
``noxattn``). The condition embeddings themselves (the text encoder's role) stay frozen.

Defaults are the repository's: η = 1, start guidance 3, 50 DDIM steps, 1,000 iterations of
batch 1 at lr 1e-5. One deviation: the original pairs the DDIM state after ``k`` steps with a
DDPM timestep drawn from the bin ``[k·T/S, (k+1)·T/S)``; here it is paired with the timestep
of its DDIM grid point, the noise level it actually has.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from obliviate.core.registry import METHODS
from obliviate.diffusion.methods.base import (
    DiffusionMethodConfig,
    DiffusionUnlearningMethod,
    UnlearnContext,
    frozen_copy,
)
from obliviate.diffusion.models import Denoiser
from obliviate.diffusion.sampling import ddim_timesteps, sample_cond
from obliviate.diffusion.training import LoopOutcome


def esd_target(eps_null: torch.Tensor, eps_cond: torch.Tensor, eta: float) -> torch.Tensor:
    """``ε*(x_t, ∅) − η·(ε*(x_t, c) − ε*(x_t, ∅))``: negative guidance away from c."""
    return eps_null - eta * (eps_cond - eps_null)


class ESDConfig(DiffusionMethodConfig):
    train_method: Literal["xattn", "noxattn", "full"] = "xattn"
    """which weights train: xattn (cross-attention, ESD-x), noxattn (all but it, ESD-u) or full"""
    negative_guidance: float = Field(default=1.0, ge=0, description="η")
    start_guidance: float = Field(default=3.0, ge=0)
    """guidance used to sample x_t from the forget concept"""
    ddim_steps: int = Field(default=50, ge=1)
    """DDIM steps of the partial sample x_t that ESD trains on"""
    steps: int = Field(default=1000, ge=0)
    learning_rate: float = Field(default=1e-5, gt=0)
    batch_size: int = Field(default=1, ge=1)


class ESDUConfig(ESDConfig):
    train_method: Literal["xattn", "noxattn", "full"] = "noxattn"


class _ESD(DiffusionUnlearningMethod):
    config_class: ClassVar[type[ESDConfig]] = ESDConfig
    paper: ClassVar[str] = "Gandikota et al. 2023, Erasing Concepts from Diffusion Models"

    def unlearn(self, model: Denoiser, ctx: UnlearnContext) -> LoopOutcome:
        cfg = self.config
        original = frozen_copy(model)
        times = ddim_timesteps(model.schedule.timesteps, cfg.ddim_steps)

        def step_fn(step: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
            labels = ctx.forget_labels(cfg.batch_size, gen)
            k = int(torch.randint(0, len(times), (1,), generator=gen))
            with torch.no_grad():
                model.eval()
                x = sample_cond(model, model.embed(labels), steps=cfg.ddim_steps,
                                guidance=cfg.start_guidance, generator=gen, stop_at=k)
                model.train()
                t = torch.full_like(labels, times[k])
                target = esd_target(original.eps(x, t, model.null_like(labels)),
                                    original.eps(x, t, labels), cfg.negative_guidance)
            return F.mse_loss(model.eps(x, t, labels), target), {}

        return self.optimise(model, model.parameter_group(cfg.train_method), step_fn, ctx)


@METHODS.register("esd_x", modality="diffusion")
class ESDX(_ESD):
    """ESD-x: negative-guidance fine-tuning of the maps that read the condition."""

    config_class: ClassVar[type[ESDConfig]] = ESDConfig


@METHODS.register("esd_u", modality="diffusion")
class ESDU(_ESD):
    """ESD-u: negative-guidance fine-tuning of the layers that do not read the condition.

    All but the condition maps, the time embedding and the output layer."""

    config_class: ClassVar[type[ESDConfig]] = ESDUConfig
