"""Weighted Gradient Ascent (Wang et al. 2025, "Rethinking LLM Unlearning Objectives: A Gradient
Perspective and Go Beyond", ICLR 2025, arXiv:2502.19301).

Gradient ascent whose per-token gradients are scaled by the token's current probability raised
to β, treated as a constant: tokens the model has already pushed to low probability stop driving
the update, which curbs GA's run-away over-forgetting.

loss = γ·mean_{t∈answer tokens of F}[sg(p(y_t)^β)·log p(y_t)] + α·NLL(R)

The form follows OpenUnlearning's ``src/trainer/unlearn/wga.py`` (``-(w·CE)[mask].mean()``: one
mean over every answer token of the batch, weights not renormalised) and its defaults in
``configs/trainer/WGA.yaml``: β = 1, α = 1, γ = 1 (there with lr 1e-5, 5 epochs). β = 0 is
GradDiff.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from obliviate.core.method import MethodConfig
from obliviate.core.registry import METHODS
from obliviate.llm.methods.base import LLMUnlearningMethod
from obliviate.llm.methods.losses import answer_token_logprobs, wga_loss


class WGAConfig(MethodConfig):
    """OpenUnlearning defaults: β = 1 (weight exponent), γ = 1, α = 1."""

    beta: float = Field(default=1.0, ge=0, description="exponent of the token weight p(y_t)^β")
    gamma: float = Field(default=1.0, ge=0, description="weight of the forget term")
    alpha: float = Field(default=1.0, ge=0, description="weight of the retain NLL term")


@METHODS.register("wga", modality="llm")
class WGA(LLMUnlearningMethod):
    """Gradient ascent with token weights p(y_t)^β (detached)."""

    config_class = WGAConfig
    uses_retain = True
    paper = "Wang et al. 2025, arXiv:2502.19301"

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        forget = batch["forget"]
        picked, mask = answer_token_logprobs(model, forget)
        forget_loss = wga_loss(picked, mask, cfg.beta)
        loss = cfg.gamma * forget_loss
        logs = {"forget_wga": float(forget_loss.detach()),
                "forget_nll": float(-(picked.detach().sum() / mask.sum().clamp_min(1)))}
        loss = self.add_retain_nll(model, batch, loss, logs)
        return loss, logs
