"""Gradient ascent on the forget set (Jang et al. 2023, "Knowledge Unlearning for Mitigating
Privacy Risks in Language Models"; the GradAscent baseline of TOFU, Maini et al. 2024)."""

from __future__ import annotations

from typing import Any

import torch

from obliviate.core.method import MethodConfig
from obliviate.core.registry import METHODS
from obliviate.llm.methods.base import LLMUnlearningMethod
from obliviate.llm.methods.losses import nll


class GradAscentConfig(MethodConfig):
    """GradAscent has no hyperparameter beyond the optimiser's."""


@METHODS.register("grad_ascent", modality="llm")
class GradAscent(LLMUnlearningMethod):
    """Maximise the answer NLL on the forget set: loss = −NLL(F)."""

    config_class = GradAscentConfig
    paper = "Jang et al. 2023, arXiv:2210.01504"

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        forget_nll = nll(model, batch["forget"])
        return -forget_nll, {"forget_nll": float(forget_nll.detach())}
