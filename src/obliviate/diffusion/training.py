"""Diffusion training on the core loop (:func:`obliviate.core.training.train_loop`).

Fine-tuning and every training-based unlearning method give the loop a step function
``step_fn(step, generator)`` that draws its own batch, timesteps and noise from a
``torch.Generator`` seeded by ``(seed, step)`` (and the micro-batch and process, see
:func:`~obliviate.core.training.step_generator`), so a run resumed from a checkpoint sees exactly
the batches an uninterrupted run would, and ``torchrun``/``accelerate launch`` workers each draw
their own share and average their gradients. Checkpoints (``step-N/``) hold the trainable weights
and the EMA in safetensors, the optimizer state (loaded with ``weights_only=True``) and the loss
history.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from obliviate.core.errors import ConfigError
from obliviate.core.recipe import TrainSection
from obliviate.core.training import (  # noqa: F401  (re-exported for the diffusion modules)
    LoopOutcome,
    LoopSettings,
    MixedPrecision,
    StepBatches,
    default_device,
    latest_checkpoint,
    load_extra,
    remove_checkpoints,
    step_generator,
    train_loop,
)
from obliviate.diffusion.models import Denoiser

StepFn = Callable[[int, torch.Generator], tuple[torch.Tensor, dict[str, float]]]


class TrainConfig(TrainSection):
    """Fine-tuning the target and the oracle (DDPM ε-prediction, Ho et al. 2020), by steps (the
    shared loop's settings: :class:`~obliviate.core.recipe.TrainSection`).

    Adam, 10% condition dropout (from the model config), EMA 0.999 of the weights is what gets
    saved. The defaults train the 16×16 MNIST model in a few minutes on 2 CPU cores.
    """

    steps: int = Field(default=2500, ge=1)
    """optimiser steps"""
    batch_size: int = Field(default=128, ge=1)
    warmup_steps: int = Field(default=100, ge=0)
    """steps of linear learning-rate warm-up"""
    lr_scheduler: Literal["constant", "cosine", "linear"] = "cosine"
    ema_decay: float | None = Field(default=0.999, gt=0, lt=1)
    """decay of the weights' exponential moving average, copied in at the end (None: no EMA)"""
    checkpoint_every: int = Field(default=250, ge=1)
    log_every: int = Field(default=50, ge=1)


def ddpm_loss(model: Denoiser, x0: torch.Tensor, labels: torch.Tensor, gen: torch.Generator,
              cond_dropout: float = 0.0, target: torch.Tensor | None = None,
              reduction: str = "mean") -> torch.Tensor:
    """``‖ε_θ(x_t, t, c) − ε‖²`` with t ~ U{0..T−1}, ε ~ N(0, I) drawn from ``gen``; labels
    replaced by ∅ with probability ``cond_dropout``. ``target`` replaces ε as the regression
    target (e.g. Selective Amnesia's and EraseDiff's noise targets) while x_t still uses ε."""
    n, dev = x0.shape[0], x0.device
    t = torch.randint(0, model.schedule.timesteps, (n,), generator=gen).to(dev)
    noise = torch.randn(x0.shape, generator=gen).to(dev)
    if cond_dropout > 0:
        drop = (torch.rand(n, generator=gen) < cond_dropout).to(dev)
        labels = torch.where(drop, model.null_like(labels), labels)
    pred = model.eps(model.schedule.q_sample(x0, t, noise), t, labels)
    goal = noise if target is None else target
    if reduction == "none":
        return ((pred - goal) ** 2).flatten(1).mean(1)
    return F.mse_loss(pred, goal)


def batch_indices(n: int, batch_size: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, n, (batch_size,), generator=gen)


def run_loop(model: Denoiser, params: list[tuple[str, torch.nn.Parameter]], step_fn: StepFn, *,
             steps: int, learning_rate: float, seed: int = 0, weight_decay: float = 0.0,
             warmup_steps: int = 0, lr_scheduler: str = "constant",
             max_grad_norm: float | None = 1.0, ema_decay: float | None = None,
             checkpoint_dir: str | Path | None = None, checkpoint_every: int = 100,
             log_every: int = 10, description: str = "training",
             grad_hook: Callable[[], None] | None = None,
             extra_state: dict[str, torch.Tensor] | None = None,
             aux_optimizers: dict[str, torch.optim.Optimizer] | None = None,
             gradient_accumulation_steps: int = 1,
             mixed_precision: MixedPrecision = "no") -> LoopOutcome:
    """Optimise ``params`` (the rest of ``model`` frozen) with Adam for ``steps`` updates on the
    core loop.

    ``step_fn(step, generator)`` returns ``(loss, logs)`` for one micro-batch; ``grad_hook()``
    runs between the backward pass and the update (SalUn masks gradients there). Resumes from
    ``checkpoint_dir``. With ``ema_decay`` the EMA weights are copied into the model at the end.
    """
    if not params:
        raise ConfigError(f"{description}: no trainable parameters")
    settings = LoopSettings(
        total_steps=steps, learning_rate=learning_rate, weight_decay=weight_decay,
        optimizer="adam", lr_scheduler=lr_scheduler, warmup_steps=warmup_steps,  # type: ignore[arg-type]
        max_grad_norm=max_grad_norm, gradient_accumulation_steps=gradient_accumulation_steps,
        mixed_precision=mixed_precision, ema_decay=ema_decay, checkpoint_every=checkpoint_every,
        log_every=log_every, description=description)
    return train_loop(model, lambda _model, batch: step_fn(*batch),
                      StepBatches(seed, gradient_accumulation_steps), settings, params=params,
                      checkpoint_dir=checkpoint_dir, wrap_model=False, grad_hook=grad_hook,
                      extra_state=extra_state, aux_optimizers=aux_optimizers)


def train_denoiser(model: Denoiser, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
                   checkpoint_dir: str | Path | None = None, description: str = "training"
                   ) -> LoopOutcome:
    """DDPM training of every parameter on images ``x`` (in [−1, 1]) with labels ``y`` (same
    device)."""
    if len(x) == 0:
        raise ConfigError(f"{description}: nothing to train on (empty split)")
    x = model.encode(x)  # a latent model trains on its VAE's latents, encoded once
    dropout = model.config.cond_dropout

    def step_fn(step: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        idx = batch_indices(len(x), config.batch_size, gen).to(x.device)
        return ddpm_loss(model, x[idx], y[idx], gen, cond_dropout=dropout), {}

    return run_loop(model, list(model.named_parameters()), step_fn, steps=config.steps,
                    learning_rate=config.learning_rate, seed=config.seed,
                    weight_decay=config.weight_decay, warmup_steps=config.warmup_steps,
                    lr_scheduler=config.lr_scheduler, max_grad_norm=config.max_grad_norm,
                    ema_decay=config.ema_decay, checkpoint_dir=checkpoint_dir,
                    checkpoint_every=config.checkpoint_every, log_every=config.log_every,
                    description=description,
                    gradient_accumulation_steps=config.gradient_accumulation_steps,
                    mixed_precision=config.mixed_precision)
