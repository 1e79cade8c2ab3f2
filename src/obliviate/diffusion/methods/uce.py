"""UCE: Unified Concept Editing (Gandikota et al., "Unified Concept Editing in Diffusion
Models", WACV 2024; github.com/rohitgandikota/unified-concept-editing).

A closed-form edit of every linear map W₀ that reads the condition. With erased inputs c_e
(the forget concept's condition vectors), their targets v*_e = W₀·c_guide (the vectors of the
guide concept, ∅ by default) and preserved inputs c_p (every other concept's vectors, the
shared prompt tokens and ∅), W minimises

    λ‖W − W₀‖² + s_e·Σ‖W c_e − v*_e‖² + s_p·Σ‖W c_p − W₀ c_p‖²,

whose solution is

    W = (λW₀ + s_e·Σ v*_e c_eᵀ + s_p·Σ W₀ c_p c_pᵀ)(λI + s_e·Σ c_e c_eᵀ + s_p·Σ c_p c_pᵀ)⁻¹.

The maps are Stable Diffusion's cross-attention ``to_k`` and ``to_v`` (``prompt_unet``,
``diffusers_unet``) or, on
``class_unet``, the ``cond_proj`` FiLM maps applied to the class embedding (their bias is
untouched, so matching W·c matches the whole output). Defaults are the repository's
``edit_model``: λ = 0.1, erase scale 1, preserve scale 0.1, keys and values both edited,
guided to the empty prompt (∅).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from obliviate.core.registry import METHODS
from obliviate.diffusion.methods.base import (
    DiffusionMethodConfig,
    DiffusionUnlearningMethod,
    UnlearnContext,
)
from obliviate.diffusion.models import Denoiser


def uce_closed_form(w0: torch.Tensor, erase_inputs: torch.Tensor, erase_targets: torch.Tensor,
                    preserve_inputs: torch.Tensor, lamb: float = 0.1, erase_scale: float = 1.0,
                    preserve_scale: float = 0.1) -> torch.Tensor:
    """The UCE solution for one map ``W₀ [out, in]``; inputs are rows ``[n, in]``, erase targets
    rows ``[n, out]``. Solved on the CPU in float64 (not every accelerator has float64) and
    returned on ``w0``'s device in its dtype."""

    def f64(z: torch.Tensor) -> torch.Tensor:
        return z.detach().cpu().double()

    w0d, ce, ve, cp = f64(w0), f64(erase_inputs), f64(erase_targets), f64(preserve_inputs)
    eye = torch.eye(w0.shape[1], dtype=torch.float64)
    lhs = lamb * w0d + erase_scale * ve.T @ ce + preserve_scale * (w0d @ cp.T) @ cp
    gram = lamb * eye + erase_scale * ce.T @ ce + preserve_scale * cp.T @ cp
    # W = lhs @ gram⁻¹ ⇔ gram @ Wᵀ = lhsᵀ (gram is symmetric)
    return torch.linalg.solve(gram, lhs.T).T.to(device=w0.device, dtype=w0.dtype)


class UCEConfig(DiffusionMethodConfig):
    lamb: float = Field(default=0.1, gt=0, description="λ: stay close to W₀")
    erase_scale: float = Field(default=1.0, ge=0)
    """weight of the erased concepts' term in UCE's closed-form edit"""
    preserve_scale: float = Field(default=0.1, ge=0)
    """weight of the preserved concepts' term in UCE's closed-form edit"""
    guide: Literal["null"] | int = Field(
        default="null", description="map the concept onto ∅ ('null') or onto this class")
    with_to_k: bool = Field(default=True, description="prompt models: edit keys as well as values")
    preserve_null: bool = Field(default=True, description="keep ∅ among the preserved inputs")
    steps: int = Field(default=0, ge=0, description="closed form: no optimisation steps")


@METHODS.register("uce", modality="diffusion")
class UCE(DiffusionUnlearningMethod):
    """UCE: closed-form edit of the linear maps that read the condition."""

    config_class: ClassVar[type[UCEConfig]] = UCEConfig
    paper: ClassVar[str] = "Gandikota et al. 2024, Unified Concept Editing in Diffusion Models"
    closed_form: ClassVar[bool] = True

    def inputs(self, model: Denoiser, ctx: UnlearnContext
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(erased, guides, preserved)`` condition vectors; erased and guides pair up row by
        row (a multi-vector concept is guided by the guide's mean vector)."""
        cfg = self.config
        guide_label = model.null_label if cfg.guide == "null" else int(cfg.guide)
        guide = model.concept_vectors(guide_label).detach()
        erased, guides = [], []
        for label in ctx.forget:
            vectors = model.concept_vectors(label).detach()
            erased.append(vectors)
            target = guide if len(guide) == len(vectors) else guide.mean(0, keepdim=True)
            guides.append(target.expand(len(vectors), -1))
        keep = [model.concept_vectors(c).detach() for c in ctx.retain if c != guide_label]
        keep.append(model.shared_vectors().detach())
        if cfg.preserve_null or guide_label != model.null_label:
            keep.append(model.concept_vectors(guide_label).detach())
        return torch.cat(erased), torch.cat(guides), torch.cat(keep)

    @torch.no_grad()
    def unlearn(self, model: Denoiser, ctx: UnlearnContext) -> dict[str, Any]:
        cfg = self.config
        erased, guides, preserved = self.inputs(model, ctx)
        edited, maps = 0, 0
        for name, linear in model.condition_readers():
            if not cfg.with_to_k and name.endswith("to_k"):
                continue
            w0 = linear.weight.data
            targets = guides @ w0.T  # v*_e = W₀ c_guide
            linear.weight.data = uce_closed_form(w0, erased, targets, preserved, cfg.lamb,
                                                 cfg.erase_scale, cfg.preserve_scale)
            edited, maps = edited + w0.numel(), maps + 1
        return {"edited_parameters": edited, "edited_maps": maps}
