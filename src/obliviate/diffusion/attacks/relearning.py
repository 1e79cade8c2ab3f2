"""``relearning``: a few fine-tuning steps on a few forget images (Łucki et al. 2024 for the
LLM analogue); ``curve`` holds the probe after each listed step count.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from pydantic import Field

from obliviate.core.recipe import StrictModel
from obliviate.core.registry import ATTACKS
from obliviate.diffusion.attacks.base import METRIC, AttackContext, DiffusionAttack, mean, probe
from obliviate.diffusion.models import Denoiser
from obliviate.diffusion.training import ddpm_loss, step_generator


class RelearningConfig(StrictModel):
    steps: int = Field(default=50, ge=1)
    """fine-tuning steps on forget images before the probe"""
    curve: list[int] = Field(default_factory=list, description="extra step counts to probe")
    images: int = Field(default=32, ge=1, description="forget images used to relearn")
    batch_size: int = Field(default=16, ge=1)
    """forget images per fine-tuning step"""
    learning_rate: float = Field(default=1e-4, gt=0)
    """learning rate of the relearning fine-tune"""


@ATTACKS.register("relearning", modality="diffusion")
class RelearningAttack(DiffusionAttack):
    """A few DDPM fine-tuning steps on a few forget images, then the probe."""

    config_class: ClassVar[type[StrictModel]] = RelearningConfig

    def attack(self, model: Denoiser, ctx: AttackContext
               ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        cfg = self.config
        labels = ctx.forget_labels()
        victim = copy.deepcopy(model).train().requires_grad_(True)
        x, y = ctx.forget_images(victim, cfg.images)
        points = {k for k in cfg.curve if 0 < k < cfg.steps} | {cfg.steps}
        opt = torch.optim.Adam(victim.parameters(), lr=cfg.learning_rate)
        curve = []
        for step in range(cfg.steps):
            gen = step_generator(ctx.seed, step)
            idx = torch.randint(0, len(x), (cfg.batch_size,), generator=gen).to(x.device)
            loss = ddpm_loss(victim, x[idx], y[idx], gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(victim.parameters(), 1.0)
            opt.step()
            if step + 1 in points:
                value = mean(probe(victim, ctx, victim.embed(labels.to(victim.device)),
                                   labels))
                curve.append({"k": step + 1, METRIC: value, "loss": float(loss.detach())})
        return {f"k={cfg.steps}": curve[-1][METRIC]}, curve
