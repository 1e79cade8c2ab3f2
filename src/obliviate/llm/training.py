"""LLM training on the core loop (:func:`obliviate.core.training.train_loop`).

The same loop runs on a CPU, one GPU, or many processes via ``accelerate launch`` (DDP, FSDP,
DeepSpeed). Fine-tuning the target and oracle uses it with the LM loss; unlearning methods pass
their own ``loss_fn``.

Checkpoints hold only what is trainable (all weights, or the LoRA adapter) in safetensors, the
optimizer and scheduler state (loaded with ``weights_only=True``), the step and the RNG state.
The data order is a function of ``(seed, epoch)``, so a resumed run sees the same batches as an
uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from obliviate.core.errors import ConfigError
from obliviate.core.recipe import TrainSection
from obliviate.core.training import (  # noqa: F401  (re-exported for the LLM modules)
    EpochBatches,
    EpochSampler,
    LoopOutcome,
    LoopSettings,
    MixedPrecision,
    barrier,
    default_device,
    has_accelerator,
    is_main_process,
    latest_checkpoint,
    loop_precision,
    make_accelerator,
    make_optimizer,
    remove_checkpoints,
    train_loop,
)
from obliviate.llm.answer_forward import label_logits

LossFn = Callable[[torch.nn.Module, dict[str, Any]], tuple[torch.Tensor, dict[str, float]]]


class TrainConfig(TrainSection):
    """Optimiser and schedule, by epochs (the shared loop's settings:
    :class:`~obliviate.core.recipe.TrainSection`). Defaults follow TOFU's fine-tuning (AdamW,
    wd 0.01, 5 epochs)."""

    epochs: float = Field(default=5.0, gt=0)
    """passes over the training data (max_steps overrides)"""
    max_steps: int | None = Field(default=None, ge=1)
    """stop after this many optimiser steps (None: epochs decides)"""
    learning_rate: float = Field(default=1e-5, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    """fraction of the steps with linear learning-rate warm-up"""
    lr_scheduler: Literal["linear", "constant", "cosine"] = "linear"
    checkpoint_every: int = Field(default=50, ge=1)
    divergence_threshold: float | None = Field(
        default=None, gt=0, description="stop when |loss| exceeds this (None: only NaN/inf)")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.max_steps is None and self.epochs <= 0:
            raise ValueError("set epochs > 0 or max_steps")
        return self


TrainOutcome = LoopOutcome


def lm_loss(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-mean cross-entropy on answer tokens (labels are -100 elsewhere): the transformers
    causal-LM loss, with the LM head run only where an answer token is predicted and a prefix
    shared by every row run once (:func:`~obliviate.llm.answer_forward.label_logits`)."""
    out = label_logits(model, batch)
    loss = F.cross_entropy(out.logits.float(), out.targets)  # nan without answer tokens, as HF
    return loss, {"loss": float(loss.detach())}


# -- the loop -------------------------------------------------------------------------------------
def train(model: torch.nn.Module, dataset: Sequence[Any], collate_fn: Callable[[list[Any]], dict],
          config: TrainConfig, checkpoint_dir: str | Path | None = None,
          loss_fn: LossFn = lm_loss, description: str = "training",
          accelerator: Any = None,
          on_step: Callable[[int, torch.nn.Module], None] | None = None) -> TrainOutcome:
    """Train ``model`` in place with the core loop (:func:`~obliviate.core.training.train_loop`)
    over ``dataset`` in epochs; resume from ``checkpoint_dir`` if it holds a checkpoint.

    ``on_step(step, model)`` runs after every optimiser update (checkpoint selection uses it).
    """
    if len(dataset) == 0:
        raise ConfigError(f"{description}: nothing to train on (empty dataset)")
    precision = loop_precision((p for p in model.parameters() if p.requires_grad),
                               config.master_weights, config.mixed_precision)
    accelerator = accelerator or make_accelerator(
        precision, gradient_accumulation_steps=config.gradient_accumulation_steps)
    torch.manual_seed(config.seed)
    batches = EpochBatches(dataset, config.batch_size, collate_fn, config.seed,
                           config.gradient_accumulation_steps)
    per_epoch = batches.updates_per_epoch(accelerator.num_processes)
    total = config.max_steps or max(1, math.ceil(config.epochs * per_epoch))
    settings = LoopSettings(
        total_steps=total, learning_rate=config.learning_rate,
        weight_decay=config.weight_decay, optimizer="adamw", lr_scheduler=config.lr_scheduler,
        warmup_steps=int(config.warmup_ratio * total), max_grad_norm=config.max_grad_norm,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=precision, master_weights=config.master_weights,
        checkpoint_every=config.checkpoint_every,
        log_every=config.log_every, divergence_threshold=config.divergence_threshold,
        description=description)
    return train_loop(model, loss_fn, batches, settings, accelerator=accelerator,
                      checkpoint_dir=checkpoint_dir, on_step=on_step)
