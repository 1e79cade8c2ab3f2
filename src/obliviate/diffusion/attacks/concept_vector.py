"""``concept_vector``: Ring-A-Bell-style (Tsai et al., ICLR 2024): a concept vector
``v = e(c_f) − mean_r e(c_r)`` from the condition embeddings (frozen by every method here, as
Stable Diffusion's text encoder) is added with strength η to the unconditional embedding:
``e(∅) + η·v``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from obliviate.core.recipe import StrictModel
from obliviate.core.registry import ATTACKS
from obliviate.diffusion.attacks.base import AttackContext, DiffusionAttack, mean, probe
from obliviate.diffusion.models import Denoiser
from obliviate.diffusion.task import retain_classes


class ConceptVectorConfig(StrictModel):
    strengths: list[float] = Field(default_factory=lambda: [1.0, 2.0, 3.0], min_length=1)
    """multiples of the concept vector added to the condition (one attacked sample set each)"""


@ATTACKS.register("concept_vector", modality="diffusion")
class ConceptVectorAttack(DiffusionAttack):
    """Ring-A-Bell-style concept-vector addition to the unconditional embedding."""

    config_class: ClassVar[type[StrictModel]] = ConceptVectorConfig

    @torch.no_grad()
    def attack(self, model: Denoiser, ctx: AttackContext
               ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        labels = ctx.forget_labels().to(model.device)
        retain = torch.tensor(retain_classes(ctx.task), device=model.device)
        others = model.embed(retain).mean(0, keepdim=True)
        null = model.embed(model.null_like(labels))
        vectors = model.embed(labels) - others
        out = {}
        for eta in self.config.strengths:
            out[f"eta={eta:g}"] = mean(probe(model, ctx, null + eta * vectors,
                                             labels.cpu()))
        return out, []
