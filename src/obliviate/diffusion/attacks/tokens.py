"""Prompt attacks on text-to-image models (``model.architecture=text_pipeline``): learned tokens
in the prompt, read by the frozen text encoder, that bring an erased concept back.

Both minimise the attacked model's own denoising loss on images of the concept (the task's
forget images, encoded by the pipeline's VAE) with respect to a few token embeddings, leaving
the model untouched (:func:`~obliviate.diffusion.text.invert_tokens`), then probe: the attack
success rate is the share of samples under the learned prompt that the judge assigns to the
concept. Like every attack, each also runs on the oracle with the same settings. The curve
also reports the denoising loss on the concept's images under the plain prompt and under the
learned one (same timesteps and noise): what the attack optimises, readable even where the
judge cannot tell a small model's samples apart.

One module per attack (:mod:`~obliviate.diffusion.attacks.unlearndiffatk`,
:mod:`~obliviate.diffusion.attacks.concept_inversion`) sets the prompt template the tokens stand
in and where they start.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from obliviate.core.errors import ConfigError
from obliviate.core.recipe import StrictModel
from obliviate.diffusion.attacks.base import AttackContext, DiffusionAttack, mean, probe
from obliviate.diffusion.models import Denoiser
from obliviate.diffusion.task import forget_classes


class TokenAttackConfig(StrictModel):
    tokens: int = Field(default=1, ge=1, description="learned tokens in the prompt")
    steps: int = Field(default=1000, ge=1)
    """optimisation steps of the token embeddings"""
    learning_rate: float = Field(default=5e-3, gt=0)
    """learning rate of the token embeddings"""
    batch_size: int = Field(default=4, ge=1)
    """concept images per optimisation step"""
    images: int = Field(default=16, ge=1, description="concept images the attacker has")


class TokenAttack(DiffusionAttack):
    """Learn ``tokens`` in a prompt template per forget concept, then probe under it."""

    def template(self, model: Any, concept: int) -> str:
        raise NotImplementedError

    def start(self, model: Any, gen: torch.Generator) -> torch.Tensor:
        """The tokens' initial input embeddings ``[tokens, E]``."""
        raise NotImplementedError

    def attack(self, model: Denoiser, ctx: AttackContext
               ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        from obliviate.diffusion.text import invert_tokens

        if getattr(model, "text", None) is None:
            raise ConfigError(f"attack {self.name}: needs a text-to-image model "
                              "(model.architecture=text_pipeline)")
        cfg = self.config
        labels = ctx.forget_labels()
        x, y = ctx.forget_images(model, cfg.images)
        gen = torch.Generator().manual_seed(ctx.seed)
        rates, curve = {}, []
        for c in forget_classes(ctx.task):
            mine = x[y == c] if (y == c).any() else x
            found = invert_tokens(model, mine, self.template(model, c), self.start(model, gen),
                                  cfg.steps, cfg.learning_rate, cfg.batch_size, gen,
                                  discrete=bool(getattr(cfg, "hard", False)))
            mask = labels == c
            plain = model.embed(torch.tensor([c], device=model.device))
            losses = {"plain_loss": concept_loss(model, mine, plain, ctx.seed),
                      "attacked_loss": concept_loss(model, mine, found["cond"], ctx.seed)}
            rates[c] = mean(probe(model, ctx, found["cond"].expand(int(mask.sum()), -1, -1),
                                  labels[mask]))
            curve.append({"class": c, "first_loss": found["losses"][0],
                          "final_loss": found["losses"][-1], **losses,
                          "success_rate": rates[c],
                          **({"prompt": found["prompt"]} if "prompt" in found else {})})
        overall = sum(rates[c] * int((labels == c).sum()) for c in rates) / len(labels)
        return {"learned_prompt": overall}, curve


@torch.no_grad()
def concept_loss(model: Denoiser, x0: torch.Tensor, cond: torch.Tensor, seed: int,
                 repeats: int = 8) -> float:
    """The denoising loss on the concept's latents under ``cond`` (``[1, L, D]``), with the
    same timesteps and noise for every condition compared."""
    x0 = x0.repeat(repeats, *[1] * (x0.dim() - 1))
    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(0, model.schedule.timesteps, (len(x0),), generator=gen).to(x0.device)
    noise = torch.randn(x0.shape, generator=gen).to(x0.device)
    pred = model(model.schedule.q_sample(x0, t, noise), t, cond.expand(len(x0), -1, -1))
    return float((pred - noise).pow(2).mean())
