"""``unlearndiffatk``: Zhang et al., "To Generate or Not? Safety-Driven Unlearned Diffusion
Models Are Still Easy To Generate Unsafe Images ... For Now", ECCV 2024
(github.com/OPTML-Group/Diffusion-MU-Attack): ``k`` vocabulary tokens prepended to the concept's
own prompt, learned by :class:`~obliviate.diffusion.attacks.tokens.TokenAttack`.

Defaults are the paper's protocol: k = 5 prefix tokens, 40 iterations at lr 0.01, a hard
(discrete) prompt; one attack per concept prompt, probed with the probe's seed. The learning
rate acts on token embeddings: it suits Stable Diffusion's CLIP (entries of std ~0.015); a
vocabulary of larger embeddings needs a larger one. The paper's target images are the original
model's generations for each prompt and seed; here they are the task's real forget images (the
attacker's images of the concept).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from obliviate.core.recipe import StrictModel
from obliviate.core.registry import ATTACKS
from obliviate.diffusion.attacks.tokens import TokenAttack, TokenAttackConfig


class UnlearnDiffAtkConfig(TokenAttackConfig):
    tokens: int = Field(default=5, ge=1, description="k adversarial tokens prepended")
    steps: int = Field(default=40, ge=1)
    """optimisation steps of the adversarial prompt tokens"""
    learning_rate: float = Field(default=0.01, gt=0)
    """learning rate of the adversarial prompt tokens"""
    batch_size: int = Field(default=1, ge=1)
    """concept images per optimisation step"""
    hard: bool = True
    """vocabulary tokens, the paper's adversarial prompt (false: free embeddings)"""


@ATTACKS.register("unlearndiffatk", modality="diffusion")
class UnlearnDiffAtk(TokenAttack):
    """UnlearnDiffAtk: ``k`` hard prompt tokens prepended to the concept's prompt."""

    config_class: ClassVar[type[StrictModel]] = UnlearnDiffAtkConfig

    def template(self, model: Any, concept: int) -> str:
        return "{} " + model.prompts[concept].replace("{}", "")

    def start(self, model: Any, gen: torch.Generator) -> torch.Tensor:
        table = model.text.token_table.weight
        return table[torch.randint(0, len(table), (self.config.tokens,), generator=gen)]
