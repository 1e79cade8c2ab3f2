"""SatImp (Yang et al. 2025, "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning",
arXiv:2505.11953): gradient ascent whose per-token weights combine *saturation* (tokens already
pushed to low probability stop driving the update, as WGA) and *importance* (tokens the model is
already sure of matter less than uncertain ones).

loss = γ·mean_{t∈answer tokens of F}[sg(p_t^β1·(1 − p_t)^β2)·log p_t] + α·NLL(R)

The form follows OpenUnlearning's ``compute_satimp_loss`` (``-(w_sat·w_imp·CE)[mask].mean()``: one
mean over every answer token of the batch, weights detached and not renormalised). Defaults:
β1 = 5, β2 = 1 (``configs/trainer/SatImp.yaml`` and the method's README), γ = 1, α = 0.1: the
README says the paper sets the forget:retain ratio to 10 ("gamma=1.0 and alpha=0.1", also the
trainer's own defaults); the YAML's γ = 0.1, α = 1 reverses the ratio. The YAML's lr is 1e-5 for 5
epochs (the README: 1e-5 for Llama-2-7B, 2e-5 for Phi-1.5). β2 = 0 is WGA with β = β1.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from obliviate.core.method import MethodConfig
from obliviate.core.registry import METHODS
from obliviate.llm.methods.base import LLMUnlearningMethod
from obliviate.llm.methods.losses import answer_token_logprobs, satimp_loss


class SatImpConfig(MethodConfig):
    """Paper/OpenUnlearning defaults: β1 = 5, β2 = 1, γ = 1, α = 0.1 (see module doc)."""

    beta1: float = Field(default=5.0, ge=0, description="saturation exponent: weight p^β1")
    beta2: float = Field(default=1.0, ge=0, description="importance exponent: weight (1−p)^β2")
    gamma: float = Field(default=1.0, ge=0, description="weight of the forget term")
    alpha: float = Field(default=0.1, ge=0, description="weight of the retain NLL term")


@METHODS.register("satimp", modality="llm")
class SatImp(LLMUnlearningMethod):
    """Gradient ascent with token weights p^β1·(1−p)^β2 (detached)."""

    config_class = SatImpConfig
    uses_retain = True
    paper = "Yang et al. 2025, arXiv:2505.11953"

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        picked, mask = answer_token_logprobs(model, batch["forget"])
        forget_loss = satimp_loss(picked, mask, cfg.beta1, cfg.beta2)
        logs = {"forget_satimp": float(forget_loss.detach()),
                "forget_nll": float(-(picked.detach().sum() / mask.sum().clamp_min(1)))}
        loss = self.add_retain_nll(model, batch, cfg.gamma * forget_loss, logs)
        return loss, logs
