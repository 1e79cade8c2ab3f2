"""IdkNLL (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs",
arXiv:2401.06121, the "IDK" baseline): fine-tune the forget questions towards a refusal
("I don't know.") instead of their true answers, with ordinary fine-tuning on the retain set.

loss = NLL(refusal | forget question) + α·NLL(R).

TOFU computes one token-mean NLL over the concatenated refusal and retain batches (so α ≈ 1 up to
the token counts); OpenUnlearning has no IdkNLL trainer of its own: its published IdkNLL models
are GradDiff's ``γ·forget + α·retain`` on the ``TOFU_QA_forget_idk`` data with the ascent sign
flipped, and GradDiff's default α = 1. Each forget question gets one refusal, drawn from
``ctx.refusals`` with a seed per item (OpenUnlearning draws a new one at every visit).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from obliviate.core.method import MethodConfig
from obliviate.core.registry import METHODS
from obliviate.llm.methods.base import LLMUnlearningMethod
from obliviate.llm.methods.losses import nll


class IdkNLLConfig(MethodConfig):
    """loss = NLL(refusal on F) + α·NLL(R); α = 1 (TOFU; OpenUnlearning's GradDiff default)."""

    alpha: float = Field(default=1.0, ge=0, description="weight of the retain NLL term")


@METHODS.register("idk_nll", modality="llm")
class IdkNLL(LLMUnlearningMethod):
    """Teach the model to answer the forget questions with a refusal."""

    config_class = IdkNLLConfig
    uses_retain = True
    uses_alternative = True
    paper = "Maini et al. 2024 (TOFU), arXiv:2401.06121"

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        idk_nll = nll(model, batch["alternative"])
        loss, logs = idk_nll, {"idk_nll": float(idk_nll.detach())}
        loss = self.add_retain_nll(model, batch, loss, logs)
        return loss, logs
