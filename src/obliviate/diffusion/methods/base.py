"""The base class of every diffusion unlearning method.

A method is a config class (its paper's defaults, plus ``steps``, ``learning_rate`` and
``batch_size``) and a subclass of :class:`DiffusionUnlearningMethod` implementing
:meth:`~DiffusionUnlearningMethod.unlearn`, which edits the model in place — by the shared
:func:`~obliviate.diffusion.training.run_loop` (resumable, checkpointed) or in closed form.
:meth:`~DiffusionUnlearningMethod.run` times it and saves the result as safetensors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from obliviate.core.errors import ConfigError
from obliviate.core.method import (
    MethodConfig,
    MethodOutcome,
    UnlearnContextBase,
    UnlearningMethod,
)
from obliviate.core.profiling import peak_memory
from obliviate.core.rundir import Stopwatch
from obliviate.core.task import UnlearningTask
from obliviate.diffusion.data import to_tensor
from obliviate.diffusion.models import Denoiser, PromptDenoiser, save_denoiser
from obliviate.diffusion.task import forget_classes, retain_classes
from obliviate.diffusion.training import (
    LoopOutcome,
    MixedPrecision,
    StepFn,
    batch_indices,
    remove_checkpoints,
    run_loop,
)


class DiffusionMethodConfig(MethodConfig):
    """Optimisation fields every training-based method has (defaults: its paper's)."""

    steps: int = Field(default=500, ge=0)
    """optimiser steps (0 for closed-form methods)"""
    learning_rate: float = Field(default=1e-4, gt=0)
    """Adam's learning rate (the paper's)"""
    batch_size: int = Field(default=128, ge=1)
    """images per optimiser step"""
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    """clip the gradient's global norm to this (None: no clipping)"""
    checkpoint_every: int = Field(default=50, ge=1)
    """save a resumable checkpoint every this many steps"""
    log_every: int = Field(default=10, ge=1)
    """record the loss every this many steps"""
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    """micro-batches summed into one optimiser step"""
    mixed_precision: MixedPrecision = Field(
        default="no", description="bf16 (CPU or GPU) or fp16 (GPU) autocast; weights stay fp32")


@dataclass
class UnlearnContext(UnlearnContextBase):
    """What a diffusion method reads besides its config: the task's images as tensors on the
    model's device, and the class ids.

    ``encode`` maps images to the space the model denoises (its VAE's latents, see
    :meth:`Denoiser.encode`); :meth:`DiffusionUnlearningMethod.run` sets it from the model."""

    task: UnlearningTask
    device: torch.device
    seed: int = 0
    checkpoint_dir: Path | None = None
    forget: list[int] = field(default_factory=list)
    retain: list[int] = field(default_factory=list)
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None
    _cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @classmethod
    def build(cls, task: UnlearningTask, device: Any, seed: int = 0,
              checkpoint_dir: Path | None = None) -> UnlearnContext:
        return cls(task=task, device=torch.device(device), seed=seed,
                   checkpoint_dir=checkpoint_dir, forget=forget_classes(task),
                   retain=retain_classes(task))

    def images(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in self._cache:
            x, y = to_tensor(self.task.split(split).records, self.device)
            self._cache[split] = (self.encode(x) if self.encode else x, y)
        return self._cache[split]

    def batch(self, split: str, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.images(split)
        idx = batch_indices(len(x), n, gen).to(self.device)
        return x[idx], y[idx]

    def forget_labels(self, n: int, gen: torch.Generator) -> torch.Tensor:
        pick = torch.randint(0, len(self.forget), (n,), generator=gen)
        return torch.tensor(self.forget)[pick].to(self.device)

    def retain_labels(self, n: int, gen: torch.Generator) -> torch.Tensor:
        pick = torch.randint(0, len(self.retain), (n,), generator=gen)
        return torch.tensor(self.retain)[pick].to(self.device)


def frozen_copy(model: Denoiser) -> Denoiser:
    """The original model θ* kept fixed during unlearning."""
    return copy.deepcopy(model).eval().requires_grad_(False)


def noised(model: Denoiser, x0: torch.Tensor, gen: torch.Generator
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_t, t, ε)`` with t ~ U{0..T−1} and ε ~ N(0, I) drawn from ``gen``."""
    t = torch.randint(0, model.schedule.timesteps, (len(x0),), generator=gen).to(x0.device)
    noise = torch.randn(x0.shape, generator=gen).to(x0.device)
    return model.schedule.q_sample(x0, t, noise), t, noise


class DiffusionUnlearningMethod(UnlearningMethod):
    """Subclass, set ``config_class`` and ``paper``, implement :meth:`unlearn`, register."""

    modality: ClassVar[str] = "diffusion"
    config_class: ClassVar[type[MethodConfig]] = DiffusionMethodConfig
    needs_cross_attention: ClassVar[bool] = False
    closed_form: ClassVar[bool] = False

    def unlearn(self, model: Denoiser, ctx: UnlearnContext) -> LoopOutcome | dict[str, Any]:
        """Edit ``model`` in place; return the loop's outcome (or, closed form, a summary)."""
        raise NotImplementedError

    def check(self, model: Denoiser) -> None:
        if self.needs_cross_attention and not isinstance(model, PromptDenoiser):
            raise ConfigError(f"{type(self).__name__} edits cross-attention maps: it needs "
                              "model.architecture=prompt_unet (or diffusers_unet)")

    def optimise(self, model: Denoiser, params: list[tuple[str, torch.nn.Parameter]],
                 step_fn: StepFn, ctx: UnlearnContext, **kwargs: Any) -> LoopOutcome:
        """:func:`run_loop` with this method's optimisation settings."""
        cfg = self.config
        return run_loop(model, params, step_fn, steps=cfg.steps, learning_rate=cfg.learning_rate,
                        seed=cfg.seed, max_grad_norm=cfg.max_grad_norm,
                        checkpoint_dir=ctx.checkpoint_dir, checkpoint_every=cfg.checkpoint_every,
                        log_every=cfg.log_every, description=f"unlearn ({type(self).__name__})",
                        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                        mixed_precision=cfg.mixed_precision, **kwargs)

    def run(self, model: Denoiser, task: UnlearningTask, out_dir: Any = None,
            ctx: UnlearnContext | None = None, save: bool = True) -> MethodOutcome:
        """Unlearn ``task``'s forget classes from ``model`` (in place); save to ``out_dir``
        if given (without it nothing is written: no weights, no checkpoints)."""
        out = Path(out_dir) if out_dir is not None else None
        save = save and out is not None
        self.check(model)
        ctx = ctx or UnlearnContext.build(task, model.device, self.config.seed,
                                          out / "checkpoints" if out is not None else None)
        if not ctx.forget:
            raise ConfigError(f"task {task.name!r} has no forget classes")
        if ctx.encode is None and model.codec is not None:
            ctx.encode = model.encode
        with Stopwatch() as watch:
            result = self.unlearn(model, ctx)
            model.eval()
            if save:
                save_denoiser(model, out, extra={"method": type(self).__name__})
        if ctx.checkpoint_dir is not None:
            remove_checkpoints(ctx.checkpoint_dir)
        path = str(out) if save else None  # the folder itself loads (Denoiser.from_pretrained)
        if isinstance(result, LoopOutcome):
            return MethodOutcome(
                model_path=path, seconds=watch.seconds, steps=result.steps,
                trainable_parameters=result.trainable_parameters,
                total_parameters=result.total_parameters,
                peak_memory_bytes=result.peak_memory.get("host_peak_rss_bytes"),
                history=result.history, model=model, peak_memory=result.peak_memory,
                resumed_from=result.resumed_from)
        total = sum(p.numel() for p in model.parameters())
        memory = peak_memory(model.device)
        return MethodOutcome(
            model_path=path, seconds=watch.seconds, steps=0,
            trainable_parameters=int(result.get("edited_parameters", 0)),
            total_parameters=total, peak_memory_bytes=memory.get("host_peak_rss_bytes"),
            extra=dict(result), model=model, peak_memory=memory)
