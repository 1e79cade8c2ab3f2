"""SimNPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization for
LLM Unlearning", arXiv:2410.07163): NPO without a reference model, with a length-normalised
reward.

loss = γ·(−(2/β)·E_F[log σ(−(β/|y|)·log π_θ(y|x) − δ)]) + α·NLL(R)

Defaults are OpenUnlearning's ``configs/trainer/SimNPO.yaml`` (TOFU): β = 4.5, δ = 0, γ = 0.125
(the authors' ``npo_coeff``), α = 1. The authors' TOFU config (OPTML-Group/Unlearn-Simple,
``TOFU/config/forget.yaml``) uses β = 2.5, npo_coeff = 0.1375 on forget05.

δ enters as in the paper's equation (outside β). The authors' code and OpenUnlearning compute
``logσ(β·(NLL/|y| − δ))``, i.e. a margin of β·δ; both agree at the default δ = 0, and a code
setting δ_code is reproduced here with δ = β·δ_code.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from obliviate.core.method import MethodConfig
from obliviate.core.registry import METHODS
from obliviate.llm.methods.base import LLMUnlearningMethod
from obliviate.llm.methods.losses import sequence_logprob, simnpo_loss


class SimNPOConfig(MethodConfig):
    """OpenUnlearning TOFU defaults: β = 4.5, δ = 0, γ = 0.125, α = 1."""

    beta: float = Field(default=4.5, gt=0)
    """inverse temperature of SimNPO's length-normalised loss"""
    delta: float = Field(default=0.0, ge=0, description="reward margin (the paper's γ)")
    gamma: float = Field(default=0.125, ge=0, description="weight of the forget term")
    alpha: float = Field(default=1.0, ge=0, description="weight of the retain NLL term")


@METHODS.register("simnpo", modality="llm")
class SimNPO(LLMUnlearningMethod):
    """Reference-free, length-normalised NPO."""

    config_class = SimNPOConfig
    uses_retain = True
    paper = "Fan et al. 2024, arXiv:2410.07163"

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        logp, length = sequence_logprob(model, batch["forget"])
        forget_loss = simnpo_loss(logp, length, cfg.beta, cfg.delta)
        loss = cfg.gamma * forget_loss
        logs = {"forget_simnpo": float(forget_loss.detach())}
        loss = self.add_retain_nll(model, batch, loss, logs)
        return loss, logs
