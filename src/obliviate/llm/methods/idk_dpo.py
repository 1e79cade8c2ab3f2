"""IdkDPO: Direct Preference Optimization (Rafailov et al. 2023, "Direct Preference
Optimization: Your Language Model is Secretly a Reward Model", arXiv:2305.18290) with a refusal as
the preferred answer and the true answer as the rejected one, as in TOFU (Maini et al. 2024,
arXiv:2401.06121) and OpenUnlearning's ``DPO`` trainer on ``TOFU_QA_forget_idk``.

loss = γ·(−(2/β)·E_F[log σ(β·[(log π_θ(idk) − log π_ref(idk)) − (log π_θ(y) − log π_ref(y))])])
       + α·NLL(R)

The 2/β scale and the retain term follow OpenUnlearning (``compute_dpo_loss``; TOFU's original
used −log σ(·) without a retain term). The frozen target's sequence log-probs of both the true
and the refusal answers never change during unlearning, so they are computed once before training
(``reference = "logprobs"``); no reference model is kept. Each forget question gets one fixed
refusal (seeded per item) so that its cached reference log-prob stays valid.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from obliviate.core.method import MethodConfig
from obliviate.core.registry import METHODS
from obliviate.llm.methods.base import LLMUnlearningMethod
from obliviate.llm.methods.losses import dpo_loss, sequence_logprob


class IdkDPOConfig(MethodConfig):
    """OpenUnlearning ``configs/trainer/DPO.yaml``: β = 0.1, α = 1, γ = 1 (TOFU: β = 0.1)."""

    beta: float = Field(default=0.1, gt=0)
    """inverse temperature of DPO's loss"""
    gamma: float = Field(default=1.0, ge=0, description="weight of the DPO term")
    alpha: float = Field(default=1.0, ge=0, description="weight of the retain NLL term")


@METHODS.register("idk_dpo", modality="llm")
class IdkDPO(LLMUnlearningMethod):
    """Prefer a refusal over the true answer on the forget questions (DPO)."""

    config_class = IdkDPOConfig
    uses_retain = True
    uses_alternative = True
    reference = "logprobs"
    paper = "Rafailov et al. 2023, arXiv:2305.18290; Maini et al. 2024 (TOFU)"

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        logp_win, _ = sequence_logprob(model, batch["alternative"])
        logp_lose, _ = sequence_logprob(model, batch["forget"])
        ref_win = self.cached_reference("alternative", batch["index"])
        ref_lose = self.cached_reference("forget", batch["index"])
        forget_loss = dpo_loss(logp_win, ref_win, logp_lose, ref_lose, cfg.beta)
        loss = cfg.gamma * forget_loss
        logs = {"forget_dpo": float(forget_loss.detach())}
        loss = self.add_retain_nll(model, batch, loss, logs)
        return loss, logs
