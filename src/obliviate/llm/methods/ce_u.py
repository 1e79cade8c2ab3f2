"""CE-U, cross-entropy unlearning (Yang 2025, "CE-U: Cross Entropy Unlearning",
arXiv:2503.01224): on each forget answer token, train towards the model's own next-token
distribution with the true token removed.

loss = mean_{t∈answer tokens of F, after the first n}[CE(softmax(sg(z_t) − ∞·onehot(y_t)), z_t)]
       (+ α·NLL(R), off by default)

Unlike gradient ascent the loss is bounded below and its gradient on the logits,
``softmax(z) − target``, vanishes once ``p(y_t)`` is zero, so it does not run away. Facts follow
OpenUnlearning's ``src/trainer/unlearn/ceu.py`` and ``configs/trainer/CEU.yaml``: forget data only
(the trainer inherits ``finetune``: no retain term, α = 0 here), and the first answer token of
each sequence is left out of the loss (``ignore_first_n_answer_tokens: 1``, the paper's footnote
in its training settings). The community run uses lr 1e-5.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from obliviate.core.method import MethodConfig
from obliviate.core.registry import METHODS
from obliviate.llm.answer_forward import answer_logits
from obliviate.llm.data.formatting import IGNORE_INDEX
from obliviate.llm.methods.base import LLMUnlearningMethod
from obliviate.llm.methods.losses import ceu_loss


class CEUConfig(MethodConfig):
    """OpenUnlearning defaults: the first answer token ignored, no retain term."""

    ignore_first_n_answer_tokens: int = Field(
        default=1, ge=0, description="answer tokens at the start of each answer left out")
    alpha: float = Field(default=0.0, ge=0, description="weight of an optional retain NLL term")


def drop_first_answer_tokens(labels: torch.Tensor, n: int) -> torch.Tensor:
    """``labels`` with the first ``n`` answer (non-ignored) tokens of each row set to ignored."""
    if n == 0:
        return labels
    answer = labels != IGNORE_INDEX
    first = answer & (answer.cumsum(dim=-1) <= n)
    return labels.masked_fill(first, IGNORE_INDEX)


@METHODS.register("ce_u", modality="llm")
class CEU(LLMUnlearningMethod):
    """Cross-entropy towards the model's own distribution without the true token."""

    config_class = CEUConfig
    paper = "Yang 2025, arXiv:2503.01224"

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.uses_retain = self.config.alpha > 0  # R is batched only with a retain term

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        logits, labels = answer_logits(model, batch["forget"])
        labels = drop_first_answer_tokens(labels, self.config.ignore_first_n_answer_tokens)
        keep = labels != IGNORE_INDEX
        forget_loss = ceu_loss(logits[keep], labels[keep])
        with torch.no_grad():
            p_label = torch.softmax(logits[keep].float(), -1).gather(
                -1, labels[keep].unsqueeze(-1)).mean()
        logs = {"forget_ceu": float(forget_loss.detach()), "forget_p_label": float(p_label)}
        loss = self.add_retain_nll(model, batch, forget_loss, logs)
        return loss, logs
