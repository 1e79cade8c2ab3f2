"""Forget-Me-Not, attention re-steering (Zhang et al., "Forget-Me-Not: Learning to Forget in
Text-to-Image Diffusion Models", CVPR-W 2024; github.com/SHI-Labs/Forget-Me-Not).

On noised images of the forget concept, prompted with the concept, every cross-attention layer's
attention probabilities on the concept's tokens are driven to zero: the loss is the mean over
layers of ``‖A[..., concept tokens]‖²``, so the queries re-steer their attention to the other
prompt tokens. Only the cross-attention layers are trained. Defaults: 35 steps (the paper:
"as few as 35 optimization steps"), batch 1, lr 2e-5 (UnlearnCanvas' port of the code); the
optional textual-inversion stage of the paper is not run (the concept's tokens are known).
Needs a cross-attention model (``model.architecture`` ``prompt_unet`` or ``diffusers_unet``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from obliviate.core.registry import METHODS
from obliviate.diffusion.methods.base import (
    DiffusionMethodConfig,
    DiffusionUnlearningMethod,
    UnlearnContext,
    noised,
)
from obliviate.diffusion.models import CrossAttention, Denoiser, PromptDenoiser
from obliviate.diffusion.training import LoopOutcome


@contextmanager
def record_cross_attention(model: PromptDenoiser) -> Iterator[list[torch.Tensor]]:
    """Collect every ``attn2``'s attention probabilities ``[B·heads, queries, tokens]``."""
    maps: list[torch.Tensor] = []
    saved: list[tuple[Any, Any]] = []
    for _, attn in model.cross_attentions():
        if isinstance(attn, CrossAttention):
            attn.recorder = maps
            continue
        from diffusers.models.attention_processor import AttnProcessor

        saved.append((attn, attn.processor))
        attn.set_processor(AttnProcessor())  # the processor that calls get_attention_scores
        original = attn.get_attention_scores

        def scores(query: torch.Tensor, key: torch.Tensor, mask: Any = None,
                   _original: Any = original) -> torch.Tensor:
            probs = _original(query, key, mask)
            maps.append(probs)
            return probs

        attn.get_attention_scores = scores
    try:
        yield maps
    finally:
        for _, attn in model.cross_attentions():
            if isinstance(attn, CrossAttention):
                attn.recorder = None
        for attn, processor in saved:
            del attn.get_attention_scores
            attn.set_processor(processor)


def resteering_loss(maps: list[torch.Tensor], positions: list[int]) -> torch.Tensor:
    """Mean over layers of the squared attention mass on the concept tokens."""
    return torch.stack([(m[..., positions] ** 2).sum(-1).mean() for m in maps]).mean()


class ForgetMeNotConfig(DiffusionMethodConfig):
    parameters: Literal["xattn", "kv"] = Field(
        default="xattn", description="xattn: every cross-attention parameter (the paper's "
                                     "only_optimize_ca); kv: only to_k/to_v")
    steps: int = Field(default=35, ge=0)
    learning_rate: float = Field(default=2e-5, gt=0)
    batch_size: int = Field(default=1, ge=1)


@METHODS.register("forget_me_not", modality="diffusion")
class ForgetMeNot(DiffusionUnlearningMethod):
    """Forget-Me-Not: minimise the cross-attention on the forget concept's tokens."""

    config_class: ClassVar[type[ForgetMeNotConfig]] = ForgetMeNotConfig
    paper: ClassVar[str] = "Zhang et al. 2024, Forget-Me-Not: Learning to Forget in " \
                           "Text-to-Image Diffusion Models"
    needs_cross_attention: ClassVar[bool] = True

    def unlearn(self, model: Denoiser, ctx: UnlearnContext) -> LoopOutcome:
        assert isinstance(model, PromptDenoiser)
        cfg = self.config
        text = getattr(model, "concept_positions", None)  # a text prompt's word tokens
        positions = sorted({i for c in ctx.forget for i in text(c)}) if text \
            else [model.CONCEPT_POSITION]

        def step_fn(step: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
            x, y = ctx.batch("forget", cfg.batch_size, gen)
            xt, t, _ = noised(model, x, gen)
            with record_cross_attention(model) as maps:
                model.eps(xt, t, y)
            return resteering_loss(maps, positions), {}

        params = model.parameter_group("xattn")
        if cfg.parameters == "kv":
            params = [(n, p) for n, p in params if ".to_k." in n or ".to_v." in n]
        return self.optimise(model, params, step_fn, ctx)
