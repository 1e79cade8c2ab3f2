"""KL minimisation (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs",
arXiv:2401.06121): gradient ascent on the forget set while keeping the answer distribution on the
retain set close to the frozen original model.

loss = −γ·NLL(F) + α·KL(π_ref ‖ π_θ) on R. The retain KL needs the reference's full next-token
distribution on retain batches that change every step, so a frozen copy of the target is kept in
memory (``reference = "model"``) and released when the run ends.

Difference from TOFU/OpenUnlearning's ``compute_kl_divergence``: they average the KL over every
position of the padded batch (prompt and padding included, ``reduction="batchmean"`` on the
flattened sequence); here it is averaged over answer tokens only (:func:`losses.retain_kl`), the
tokens the retain NLL is measured on.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from obliviate.core.method import MethodConfig
from obliviate.core.registry import METHODS
from obliviate.llm.methods.base import LLMUnlearningMethod
from obliviate.llm.methods.losses import nll, retain_kl


class KLConfig(MethodConfig):
    """loss = −γ·NLL(F) + α·KL(π_ref‖π_θ)(R). TOFU and OpenUnlearning (GradDiff with
    ``retain_loss_type: KL``) use γ = α = 1."""

    gamma: float = Field(default=1.0, ge=0, description="weight of the forget (ascent) term")
    alpha: float = Field(default=1.0, ge=0, description="weight of the retain KL term")


@METHODS.register("kl", modality="llm")
class KL(LLMUnlearningMethod):
    """Gradient ascent on F, KL to the frozen original on R."""

    config_class = KLConfig
    uses_retain = True
    reference = "model"
    paper = "Maini et al. 2024 (TOFU), arXiv:2401.06121"

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        reference = reference_on_device(self, model)
        forget_nll = nll(model, batch["forget"])
        kl = retain_kl(model, reference, batch["retain"])
        loss = -cfg.gamma * forget_nll + cfg.alpha * kl
        return loss, {"forget_nll": float(forget_nll.detach()), "retain_kl": float(kl.detach())}


def reference_on_device(method: LLMUnlearningMethod, model: torch.nn.Module) -> torch.nn.Module:
    """``method.reference_model``, moved once to the live model's device.

    The base class copies the target before the training loop's ``accelerator.prepare`` moves the
    live model onto the accelerator, so the copy starts on the host.
    """
    reference = method.reference_model
    if reference is None:
        raise RuntimeError(f"{type(method).__name__} needs its frozen reference model (run())")
    device = next(model.parameters()).device
    if next(reference.parameters()).device != device:
        reference = method.reference_model = reference.to(device)
    return reference
