"""``concept_inversion``: Pham et al., "Circumventing Concept Erasure Methods for Text-to-Image
Generative Models", ICLR 2024: textual inversion (Gal et al. 2023) of one new, continuous word
embedding on the concept's images against the erased model, used in a prompt that does not name
the concept (``"a photo of {}"``), learned by
:class:`~obliviate.diffusion.attacks.tokens.TokenAttack`. Defaults: textual inversion's, lr
5e-3, batch 4, 1,000 steps, started from the mean vocabulary embedding.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from obliviate.core.recipe import StrictModel
from obliviate.core.registry import ATTACKS
from obliviate.diffusion.attacks.tokens import TokenAttack, TokenAttackConfig


class ConceptInversionConfig(TokenAttackConfig):
    template: str = Field(default="a photo of {}",
                          description="the prompt the learned word stands in")


@ATTACKS.register("concept_inversion", modality="diffusion")
class ConceptInversion(TokenAttack):
    """Concept inversion: a textual-inversion word for the erased concept."""

    config_class: ClassVar[type[StrictModel]] = ConceptInversionConfig

    def template(self, model: Any, concept: int) -> str:
        return self.config.template

    def start(self, model: Any, gen: torch.Generator) -> torch.Tensor:
        table = model.text.token_table.weight
        return table.mean(0, keepdim=True).expand(self.config.tokens, -1)
