"""Task-vector negation (Ilharco et al. 2023, "Editing Models with Task Arithmetic",
arXiv:2212.04089), the "Task Vector" baseline of MUSE (Shi et al. 2024, arXiv:2407.06460).

Fine-tune the target on the forget set with the plain NLL (θ_ft), then move the same distance the
other way: θ_u = θ_o − λ·(θ_ft − θ_o).

Defaults: λ = ``scaling_coef`` = 1.0, plain negation, the default of MUSE's ``task_vector.py``
(``alpha=1.0``). The paper picks λ on held-out validation data rather than fixing it, and MUSE's
own scripts pass ``--alpha 5.0``. The fine-tuning phase uses the run's ``unlearn.train`` settings
(OpenUnlearning/TOFU defaults: lr 1e-5, 10 epochs; MUSE fine-tunes 10 epochs at lr 1e-5), unless
``finetune_epochs`` / ``finetune_steps`` / ``finetune_learning_rate`` are set. Proxy checkpoint
selection does not apply to the fine-tuning phase (its last step is the task vector).

With LoRA the task vector is the adapter's merged update ``ΔW = s·BA``: the adapter's scale is
multiplied by −λ before the base class merges it, which gives ``W_o − λ·ΔW`` exactly.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from obliviate.core.method import MethodConfig
from obliviate.core.registry import METHODS
from obliviate.llm.methods.base import (
    LLMUnlearningMethod,
    SelectionConfig,
    UnlearnContext,
    UnlearnItem,
    UnlearnTrainConfig,
)
from obliviate.llm.methods.losses import nll
from obliviate.llm.training import TrainOutcome


class TaskVectorConfig(MethodConfig):
    """λ and optional overrides of the fine-tuning schedule (default: ``unlearn.train``)."""

    scaling_coef: float = Field(default=1.0, gt=0, description="λ in θ_o − λ(θ_ft − θ_o)")
    finetune_epochs: float | None = Field(default=None, gt=0)
    """epochs of the fine-tune on the forget set whose weight change is subtracted (None:
    unlearn.train's)"""
    finetune_steps: int | None = Field(default=None, ge=1, description="overrides epochs")
    finetune_learning_rate: float | None = Field(default=None, gt=0)
    """learning rate of that fine-tune (None: unlearn.train's)"""


@torch.no_grad()
def negate_task_vector(model: torch.nn.Module, original: dict[str, torch.Tensor],
                       scaling_coef: float) -> None:
    """In place, for every parameter named in ``original``: θ ← θ_o − λ·(θ − θ_o).

    ``model`` holds the fine-tuned weights θ_ft; ``original`` the weights θ_o before fine-tuning.
    """
    params = dict(model.named_parameters())
    for name, theta_o in original.items():
        p = params[name]
        base = theta_o.to(device=p.device, dtype=p.dtype)
        p.copy_(base - scaling_coef * (p - base))


def scale_lora_adapters(model: torch.nn.Module, factor: float) -> int:
    """Multiply the scale of every active LoRA adapter by ``factor``; return how many layers."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for layer in layers:
        layer.scale_layer(factor)
    return len(layers)


@METHODS.register("task_vector", modality="llm")
class TaskVector(LLMUnlearningMethod):
    """Fine-tune on the forget set, then subtract that update: θ_o − λ(θ_ft − θ_o)."""

    config_class = TaskVectorConfig
    paper = "Ilharco et al. 2023, arXiv:2212.04089"

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        value = nll(model, batch["forget"])  # fine-tuning: the forget NLL is minimised
        return value, {"forget_nll": float(value.detach())}

    def finetune_config(self, train: UnlearnTrainConfig) -> UnlearnTrainConfig:
        cfg, update = self.config, {}
        if cfg.finetune_epochs is not None:
            update.update(epochs=cfg.finetune_epochs, max_steps=cfg.finetune_steps)
        elif cfg.finetune_steps is not None:
            update["max_steps"] = cfg.finetune_steps
        if cfg.finetune_learning_rate is not None:
            update["learning_rate"] = cfg.finetune_learning_rate
        return train.model_copy(update=update) if update else train

    def train(self, model: torch.nn.Module, items: list[UnlearnItem], ctx: UnlearnContext,
              out_dir: Path) -> TrainOutcome:
        lora = hasattr(model, "peft_config")
        original = None if lora else {
            name: p.detach().to("cpu", copy=True)
            for name, p in model.named_parameters() if p.requires_grad}
        finetune_ctx = replace(ctx, train=self.finetune_config(ctx.train),
                               selection=SelectionConfig(rule="last"))
        outcome = super().train(model, items, finetune_ctx, out_dir)
        if lora:
            if not scale_lora_adapters(model, -self.config.scaling_coef):
                raise RuntimeError("task_vector: LoRA is enabled but no LoRA layer was found")
        else:
            assert original is not None
            negate_task_vector(model, original, self.config.scaling_coef)
        return outcome
