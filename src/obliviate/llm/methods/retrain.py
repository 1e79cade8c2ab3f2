"""Retraining without the forget set: the exact-unlearning oracle (Bourtoule et al. 2021,
"Machine Unlearning", arXiv:1912.03817; TOFU's retain model, Maini et al. 2024).

The pipeline passes the *base* weights to :meth:`run` because the class sets
``starts_from = "base"``: a freshly seeded tiny model (same seed as the target's
initialisation), or the pretrained checkpoint the target was fine-tuned from. ``run`` then
trains that model on ``task.retain`` with the plain NLL and the ``unlearn.train`` settings. It is
a reference point for cost and quality; it never sees the forget set. Proxy checkpoint selection
is not applied (a selection rule that looks at the forget set would leak it into the oracle).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from obliviate.core.registry import METHODS
from obliviate.llm.methods.base import SelectionConfig, UnlearnContext, UnlearnItem
from obliviate.llm.methods.finetune_retain import RetainTraining
from obliviate.llm.training import TrainOutcome


@METHODS.register("retrain", modality="llm")
class Retrain(RetainTraining):
    """The oracle: train the base model on the retain set only (plain NLL)."""

    starts_from = "base"
    paper = "Bourtoule et al. 2021, arXiv:1912.03817 (retraining from scratch)"

    def train(self, model: torch.nn.Module, items: list[UnlearnItem], ctx: UnlearnContext,
              out_dir: Path) -> TrainOutcome:
        return super().train(model, items, replace(ctx, selection=SelectionConfig(rule="last")),
                             out_dir)
