"""Gradient difference (Liu et al. 2022, "Continual Learning and Private Unlearning"; TOFU's
GradDiff, Maini et al. 2024): ascend on the forget set, descend on the retain set."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from obliviate.core.method import MethodConfig
from obliviate.core.registry import METHODS
from obliviate.llm.methods.base import LLMUnlearningMethod
from obliviate.llm.methods.losses import nll


class GradDiffConfig(MethodConfig):
    """loss = −γ·NLL(F) + α·NLL(R); TOFU/OpenUnlearning use γ = α = 1."""

    gamma: float = Field(default=1.0, ge=0, description="weight of the forget term")
    alpha: float = Field(default=1.0, ge=0, description="weight of the retain term")


@METHODS.register("grad_diff", modality="llm")
class GradDiff(LLMUnlearningMethod):
    """Gradient ascent on F plus ordinary fine-tuning on R."""

    config_class = GradDiffConfig
    uses_retain = True
    paper = "Liu et al. 2022; Maini et al. 2024 (TOFU)"

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        forget_nll, retain_nll = nll(model, batch["forget"]), nll(model, batch["retain"])
        loss = -cfg.gamma * forget_nll + cfg.alpha * retain_nll
        return loss, {"forget_nll": float(forget_nll.detach()),
                      "retain_nll": float(retain_nll.detach())}
