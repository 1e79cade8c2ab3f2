"""EraseDiff (Wu et al., "Erasing Undesirable Influence in Diffusion Models", 2024;
github.com/JingWu321/EraseDiff).

A bilevel problem solved with BOME-style first-order steps (Liu et al. 2022). The inner problem
makes the model predict uniform noise ``u ~ U[0, 1)`` instead of the Gaussian ε on forget
images, ``f(θ) = MSE(ε_θ(x_t, c_f), u)``; each outer step first takes ``K`` inner steps from θ
to estimate ``f* = f(θ_K)``, restores θ, then descends

    L_retain(θ) + λ·(f(θ) − f*)

where L_retain is the usual diffusion loss on retain images. Defaults: K = 1 and λ = 1 (the
authors' class-forgetting script), Adam lr 1e-4, batch 128, gradient clipping 1 (their DDPM
config); the number of outer steps is ours (the code runs epochs over the forget set). With a
fixed λ the inner estimate shifts the loss by a constant, so its gradient is
``∇L_retain + λ∇f``; it is reported as ``q = f(θ) − f*``.
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


class EraseDiffConfig(DiffusionMethodConfig):
    inner_steps: int = Field(default=1, ge=0, description="K")
    lambda_bome: float = Field(default=1.0, ge=0, description="λ")
    steps: int = Field(default=500, ge=0)
    learning_rate: float = Field(default=1e-4, gt=0)
    batch_size: int = Field(default=128, ge=1)


def uniform_target(shape: torch.Size, gen: torch.Generator, device: torch.device
                   ) -> torch.Tensor:
    return torch.rand(shape, generator=gen).to(device)


@METHODS.register("erasediff", modality="diffusion")
class EraseDiff(DiffusionUnlearningMethod):
    """EraseDiff: retain loss + λ·(forget deviation to uniform noise − its inner optimum)."""

    config_class: ClassVar[type[EraseDiffConfig]] = EraseDiffConfig
    paper: ClassVar[str] = "Wu et al. 2024, Erasing Undesirable Influence in Diffusion Models"

    def unlearn(self, model: Denoiser, ctx: UnlearnContext) -> LoopOutcome:
        cfg = self.config
        params = model.parameter_group("full")
        inner_opt = torch.optim.Adam([p for _, p in params], lr=cfg.learning_rate)

        def deviation(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            return ddpm_loss(model, x, y, gen, target=uniform_target(x.shape, gen, x.device))

        def step_fn(step: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
            xf, yf = ctx.batch("forget", cfg.batch_size, gen)
            saved = [p.detach().clone() for _, p in params]
            for _ in range(cfg.inner_steps):
                loss = deviation(xf, yf, gen)
                inner_opt.zero_grad(set_to_none=True)
                loss.backward()
                inner_opt.step()
            with torch.no_grad():
                f_star = float(deviation(xf, yf, gen)) if cfg.inner_steps else 0.0  # f(θ_K)
                for (_, p), value in zip(params, saved, strict=True):
                    p.copy_(value)
            inner_opt.zero_grad(set_to_none=True)
            xr, yr = ctx.batch("retain", cfg.batch_size, gen)
            retain = ddpm_loss(model, xr, yr, gen)
            q = deviation(xf, yf, gen) - f_star
            logs = {"retain_loss": float(retain.detach()), "q": float(q.detach())}
            return retain + cfg.lambda_bome * q, logs

        # the inner Adam's moments carry over between outer steps: checkpointed with the rest
        return self.optimise(model, params, step_fn, ctx, aux_optimizers={"inner": inner_opt})
