"""Concept Ablation, model-based (Kumari et al., "Ablating Concepts in Text-to-Image Diffusion
Models", ICCV 2023; github.com/nupurkmr9/concept-ablation).

The forget condition is mapped onto an anchor concept: on noised anchor images the model under
c_f is trained to predict what the frozen model predicts under the anchor condition,

    MSE(ε_θ(x_t, c_f), sg[ε*(x_t, c_anchor)]),

optionally with the prior-preservation term ``MSE(ε_θ(x_t, c_anchor), ε)``. Defaults follow the
paper: only the condition-reading maps are trained (its ``crossattn_kv``: ``to_k``/``to_v`` on
``prompt_unet``; ``cond_proj`` on ``class_unet``), lr 2e-6, batch 8, 400 steps. The anchor is ∅
(the generic "a digit") or a class; the paper generates its anchor images with the anchor
prompt, here they are real retain images (of the anchor class, or of all retained classes for
∅), which avoids sampling and never shows the forget class.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from obliviate.core.errors import ConfigError
from obliviate.core.registry import METHODS
from obliviate.diffusion.methods.base import (
    DiffusionMethodConfig,
    DiffusionUnlearningMethod,
    UnlearnContext,
    frozen_copy,
    noised,
)
from obliviate.diffusion.models import Denoiser
from obliviate.diffusion.training import LoopOutcome


class ConceptAblationConfig(DiffusionMethodConfig):
    anchor: Literal["null"] | int = "null"
    """the anchor concept the forget concept is mapped to: null (the unconditional) or a class
    index"""
    parameters: Literal["xattn", "kv", "noxattn", "full"] = Field(
        default="kv", description="kv: the maps reading the condition (paper: crossattn_kv)")
    prior_preservation: bool = False
    """also train on anchor images to keep the anchor concept (the paper's prior-preservation loss)
    also train on anchor images to keep the anchor concept (the paper's prior-preservation loss)"""
    steps: int = Field(default=400, ge=0)
    learning_rate: float = Field(default=2e-6, gt=0)
    batch_size: int = Field(default=8, ge=1)


@METHODS.register("concept_ablation", modality="diffusion")
class ConceptAblation(DiffusionUnlearningMethod):
    """Concept Ablation: match the frozen model's anchor prediction under the forget condition."""

    config_class: ClassVar[type[ConceptAblationConfig]] = ConceptAblationConfig
    paper: ClassVar[str] = "Kumari et al. 2023, Ablating Concepts in Text-to-Image Diffusion " \
                           "Models"

    def trained(self, model: Denoiser) -> list[tuple[str, torch.nn.Parameter]]:
        group = self.config.parameters
        if group != "kv":
            return model.parameter_group(group)
        readers = {id(m.weight) for _, m in model.condition_readers()}
        return [(n, p) for n, p in model.parameter_group("xattn")
                if id(p) in readers or ".cond_proj." in n]

    def unlearn(self, model: Denoiser, ctx: UnlearnContext) -> LoopOutcome:
        cfg = self.config
        original = frozen_copy(model)
        x_all, y_all = ctx.images("retain")
        if cfg.anchor == "null":
            anchor_label, x_anchor = model.null_label, x_all
        else:
            anchor_label = int(cfg.anchor)
            if anchor_label in ctx.forget:
                raise ConfigError("concept_ablation.anchor must not be a forget class")
            x_anchor = x_all[y_all == anchor_label]
        if len(x_anchor) == 0:
            raise ConfigError(f"concept_ablation: no retain images of anchor {cfg.anchor}")

        def step_fn(step: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
            idx = torch.randint(0, len(x_anchor), (cfg.batch_size,), generator=gen)
            xt, t, noise = noised(model, x_anchor[idx.to(x_anchor.device)], gen)
            forget = ctx.forget_labels(cfg.batch_size, gen)
            anchor = torch.full_like(forget, anchor_label)
            with torch.no_grad():
                target = original.eps(xt, t, anchor)
            loss = F.mse_loss(model.eps(xt, t, forget), target)
            if cfg.prior_preservation:
                loss = loss + F.mse_loss(model.eps(xt, t, anchor), noise)
            return loss, {}

        return self.optimise(model, self.trained(model), step_fn, ctx)
