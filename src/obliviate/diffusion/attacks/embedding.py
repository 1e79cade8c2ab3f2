"""``embedding``: UnlearnDiffAtk-style (Zhang et al., "To Generate or Not? Safety-Driven
Unlearned Diffusion Models Are Still Easy to Generate Unsafe Images ... For Now", ECCV 2024):
optimise the condition tensor against the attacked model's own denoising loss on a few real
images of the forgotten class.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from obliviate.core.recipe import StrictModel
from obliviate.core.registry import ATTACKS
from obliviate.diffusion.attacks.base import AttackContext, DiffusionAttack, mean, probe
from obliviate.diffusion.models import Denoiser
from obliviate.diffusion.task import forget_classes


class EmbeddingAttackConfig(StrictModel):
    steps: int = Field(default=100, ge=1)
    """optimisation steps of the adversarial condition embedding"""
    learning_rate: float = Field(default=0.05, gt=0)
    """Adam's learning rate on the adversarial condition embedding"""
    images: int = Field(default=16, ge=1, description="real forget images the attacker has")
    batch_size: int = Field(default=16, ge=1)
    """forget images per step of the embedding optimisation"""


@ATTACKS.register("embedding", modality="diffusion")
class EmbeddingAttack(DiffusionAttack):
    """UnlearnDiffAtk-style condition optimisation against the model's denoising loss."""

    config_class: ClassVar[type[StrictModel]] = EmbeddingAttackConfig

    def attack(self, model: Denoiser, ctx: AttackContext
               ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        cfg = self.config
        labels = ctx.forget_labels()
        dev = model.device
        x, y = ctx.forget_images(model, cfg.images)
        out: dict[str, float] = {}
        curve = []
        gen = torch.Generator().manual_seed(ctx.seed)
        for c in forget_classes(ctx.task):
            mine = x[y == c] if (y == c).any() else x
            cond = model.embed(torch.tensor([c], device=dev)).detach().clone().requires_grad_()
            opt = torch.optim.Adam([cond], lr=cfg.learning_rate)
            frozen = [p.requires_grad for p in model.parameters()]
            model.requires_grad_(False)
            try:
                for _ in range(cfg.steps):
                    idx = torch.randint(0, len(mine), (cfg.batch_size,), generator=gen).to(dev)
                    x0 = mine[idx]
                    t = torch.randint(0, model.schedule.timesteps, (len(x0),),
                                      generator=gen).to(dev)
                    noise = torch.randn(x0.shape, generator=gen).to(dev)
                    c_batch = cond.expand(len(x0), *cond.shape[1:])
                    loss = ((model(model.schedule.q_sample(x0, t, noise), t, c_batch)
                             - noise) ** 2).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            finally:
                for p, flag in zip(model.parameters(), frozen, strict=True):
                    p.requires_grad_(flag)
            curve.append({"class": c, "final_loss": float(loss.detach())})
            mask = labels == c
            out[f"class_{c}"] = mean(probe(model, ctx,
                                           cond.detach().expand(int(mask.sum()),
                                                                *cond.shape[1:]),
                                           labels[mask]))
        total = len(labels)
        overall = sum(out[f"class_{c}"] * int((labels == c).sum()) for c in
                      forget_classes(ctx.task)) / total
        return {"optimised": overall}, curve
