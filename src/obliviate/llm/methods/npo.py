"""Negative Preference Optimization (Zhang et al. 2024, "Negative Preference Optimization: From
Catastrophic Collapse to Effective Unlearning", arXiv:2404.05868).

The frozen target's sequence log-probs on the forget answers never change during unlearning, so
they are computed once before training (no reference model is kept in memory).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from obliviate.core.method import MethodConfig
from obliviate.core.registry import METHODS
from obliviate.llm.methods.base import LLMUnlearningMethod
from obliviate.llm.methods.losses import npo_loss, sequence_logprob


class NPOConfig(MethodConfig):
    """loss = γ·(2/β)·E_F[log(1 + (π_θ/π_ref)^β)] + α·NLL(R). Paper/OpenUnlearning: β = 0.1."""

    beta: float = Field(default=0.1, gt=0)
    """inverse temperature of NPO's loss (the paper's 0.1)"""
    gamma: float = Field(default=1.0, ge=0, description="weight of the forget term")
    alpha: float = Field(default=1.0, ge=0, description="weight of the retain NLL term")


@METHODS.register("npo", modality="llm")
class NPO(LLMUnlearningMethod):
    """Push forget answers below the reference likelihood, with a bounded, adaptive loss."""

    config_class = NPOConfig
    uses_retain = True
    reference = "logprobs"
    paper = "Zhang et al. 2024, arXiv:2404.05868"

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        logp, _ = sequence_logprob(model, batch["forget"])
        ref = self.cached_reference("forget", batch["index"])
        forget_loss = npo_loss(logp, ref, cfg.beta)
        logs = {"forget_npo": float(forget_loss.detach())}
        loss = cfg.gamma * forget_loss
        loss = self.add_retain_nll(model, batch, loss, logs)
        return loss, logs
