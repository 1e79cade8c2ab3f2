"""SalUn: Saliency Unlearning (Fan et al., "SalUn: Empowering Machine Unlearning via
Gradient-based Weight Saliency in Both Image Classification and Generation", ICLR 2024;
github.com/OPTML-Group/Unlearn-Saliency).

1. Weight saliency: the gradient of the diffusion loss on the forget set is accumulated over
   the forget images; the mask keeps the ``threshold`` fraction of weights with the largest
   ``|∇|`` (top 50%, ranked across the whole network).
2. Random-label unlearning, only on the masked weights: on noised forget images the model's
   prediction under the forget class is pulled to its own (detached) prediction under a random
   other class, ``MSE(ε_θ(x_t, c_f), sg[ε_θ(x_t, c_r)])``, plus ``α`` × the usual loss on retain
   images.

Defaults are the DDPM code's (``cifar10_saliency_unlearn.yml`` and README): mask threshold 0.5,
α = 1e-3, Adam lr 1e-4, 500 iterations of batch 128, gradient clipping 1. The paper draws the
random label at random; its DDPM code uses ``(c_f + 1) mod 10``; here it is uniform over the
retained classes.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from obliviate.core.registry import METHODS
from obliviate.diffusion.methods.base import (
    DiffusionMethodConfig,
    DiffusionUnlearningMethod,
    UnlearnContext,
    noised,
)
from obliviate.diffusion.models import Denoiser
from obliviate.diffusion.training import LoopOutcome, ddpm_loss, latest_checkpoint, load_extra


class SalUnConfig(DiffusionMethodConfig):
    threshold: float = Field(default=0.5, gt=0, le=1, description="fraction of weights kept")
    alpha: float = Field(default=1e-3, ge=0, description="weight of the retain loss")
    mask_batches: int | None = Field(default=None, ge=1,
                                     description="forget batches for the saliency (all: None)")
    steps: int = Field(default=500, ge=0)
    learning_rate: float = Field(default=1e-4, gt=0)
    batch_size: int = Field(default=128, ge=1)


def saliency_mask(model: Denoiser, params: list[tuple[str, torch.nn.Parameter]],
                  grads: dict[str, torch.Tensor], threshold: float) -> dict[str, torch.Tensor]:
    """1 for the ``threshold`` fraction of entries with the largest ``|grad|`` (global rank)."""
    flat = torch.cat([grads[n].abs().flatten() for n, _ in params])
    k = max(1, int(round(threshold * flat.numel())))
    cutoff = torch.topk(flat, k, sorted=True).values[-1]
    return {n: (grads[n].abs() >= cutoff).to(grads[n].dtype) for n, _ in params}


@METHODS.register("salun", modality="diffusion")
class SalUn(DiffusionUnlearningMethod):
    """SalUn: saliency-masked random-label unlearning with a retain term."""

    config_class: ClassVar[type[SalUnConfig]] = SalUnConfig
    paper: ClassVar[str] = "Fan et al. 2024, SalUn: Empowering Machine Unlearning via " \
                           "Gradient-based Weight Saliency"

    def forget_gradients(self, model: Denoiser, params: list[tuple[str, torch.nn.Parameter]],
                         ctx: UnlearnContext) -> dict[str, torch.Tensor]:
        """Σ over forget batches of ∇ of the conditional diffusion loss."""
        x, y = ctx.images("forget")
        grads = {n: torch.zeros_like(p) for n, p in params}
        gen = torch.Generator().manual_seed(self.config.seed + 7)
        model.train()
        for i, start in enumerate(range(0, len(x), self.config.batch_size)):
            if self.config.mask_batches is not None and i >= self.config.mask_batches:
                break
            model.zero_grad(set_to_none=True)
            end = start + self.config.batch_size
            ddpm_loss(model, x[start:end], y[start:end], gen).backward()
            for n, p in params:
                if p.grad is not None:
                    grads[n] += p.grad
        model.zero_grad(set_to_none=True)
        return grads

    def unlearn(self, model: Denoiser, ctx: UnlearnContext) -> LoopOutcome:
        cfg = self.config
        params = model.parameter_group("full")
        stored = load_extra(latest_checkpoint(ctx.checkpoint_dir))
        if stored:  # resuming: the mask was computed on the original weights
            mask = {n: stored[f"mask.{n}"].to(p.device) for n, p in params}
        else:
            mask = saliency_mask(model, params, self.forget_gradients(model, params, ctx),
                                 cfg.threshold)
        dropout = model.config.cond_dropout
        kept = sum(float(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())

        def step_fn(step: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
            xf, yf = ctx.batch("forget", cfg.batch_size, gen)
            xt, t, _ = noised(model, xf, gen)
            with torch.no_grad():
                pseudo = model.eps(xt, t, ctx.retain_labels(len(xf), gen))
            forget = F.mse_loss(model.eps(xt, t, yf), pseudo)
            logs = {"forget_loss": float(forget.detach()), "mask_fraction": kept}
            if cfg.alpha:
                xr, yr = ctx.batch("retain", cfg.batch_size, gen)
                retain = ddpm_loss(model, xr, yr, gen, cond_dropout=dropout)
                logs["retain_loss"] = float(retain.detach())
                return forget + cfg.alpha * retain, logs
            return forget, logs

        def apply_mask() -> None:
            for n, p in params:
                if p.grad is not None:
                    p.grad.mul_(mask[n])

        return self.optimise(model, params, step_fn, ctx, grad_hook=apply_mask,
                             extra_state={f"mask.{n}": m for n, m in mask.items()})
