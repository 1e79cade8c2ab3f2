"""A plain training loop under ``accelerate.Accelerator`` with atomic, resumable checkpoints.

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
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from obliviate.core.checkpoint import latest_checkpoint, write_checkpoint
from obliviate.core.errors import ConfigError, TrainingDivergedError
from obliviate.core.io import read_json
from obliviate.core.profiling import peak_memory, reset_peak
from obliviate.core.recipe import StrictModel

LossFn = Callable[[torch.nn.Module, dict[str, Any]], tuple[torch.Tensor, dict[str, float]]]


class TrainConfig(StrictModel):
    """Optimiser and schedule. Defaults follow TOFU's fine-tuning (AdamW, wd 0.01, 5 epochs)."""

    epochs: float = Field(default=5.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    learning_rate: float = Field(default=1e-5, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    batch_size: int = Field(default=8, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    lr_scheduler: Literal["linear", "constant", "cosine"] = "linear"
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    seed: int = 0
    checkpoint_every: int = Field(default=50, ge=1)
    log_every: int = Field(default=10, ge=1)
    divergence_threshold: float | None = Field(
        default=None, gt=0, description="stop when |loss| exceeds this (None: only NaN/inf)")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.max_steps is None and self.epochs <= 0:
            raise ValueError("set epochs > 0 or max_steps")
        return self


@dataclass
class TrainOutcome:
    steps: int
    seconds: float
    trainable_parameters: int
    total_parameters: int
    peak_memory: dict[str, int]
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None
    selection: dict[str, Any] | None = None


class EpochSampler(torch.utils.data.Sampler[int]):
    """A permutation that depends only on ``(seed, epoch)``."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())

    def __len__(self) -> int:
        return self.n


def has_accelerator() -> bool:
    """Whether torch sees a GPU-like device (CUDA, ROCm, XPU, MPS, ...)."""
    return bool(getattr(torch, "accelerator", None) and torch.accelerator.is_available())


def make_accelerator(**kwargs: Any) -> Any:
    """An ``Accelerator`` that also forms a multi-process (gloo) group on CPU-only machines.

    accelerate only recognises ``torchrun``/``accelerate launch`` workers on a machine without a
    GPU when told ``cpu=True``; without it each worker would silently train alone.
    """
    from accelerate import Accelerator

    return Accelerator(cpu=not has_accelerator(), **kwargs)


def remove_checkpoints(path: str | Path) -> None:
    """Delete a finished stage's checkpoints once every process is done with them."""
    barrier()
    if is_main_process():
        shutil.rmtree(path, ignore_errors=True)
    barrier()


def _state() -> Any:
    from accelerate import PartialState

    return PartialState(cpu=not has_accelerator())


def is_main_process() -> bool:
    return _state().is_main_process


def default_device() -> Any:
    """The device accelerate assigns to this process (a GPU when there is one, else CPU)."""
    return _state().device


def barrier() -> None:
    """Wait for every process (a no-op in a single process)."""
    _state().wait_for_everyone()


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total: int) -> Any:
    warmup = int(config.warmup_ratio * total)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.lr_scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if config.lr_scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return max(0.0, 1.0 - progress)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def adamw(params: list[torch.nn.Parameter], lr: float, weight_decay: float
          ) -> torch.optim.Optimizer:
    """AdamW with torch's fused kernel where the device supports it (CPU and CUDA do)."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def lm_loss(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-mean cross-entropy on answer tokens (labels are -100 elsewhere)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                labels=batch["labels"])
    return out.loss, {"loss": float(out.loss.detach())}


# -- checkpoints ----------------------------------------------------------------------------------
def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters()
            if p.requires_grad}


def save_checkpoint(ckpt_dir: Path, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any,
                    history: list[dict[str, float]], running: list[float] | None = None) -> Path:
    """Write ``step-N`` atomically and drop older ones (:func:`write_checkpoint`).

    ``running`` holds the losses since the last history entry, so that a resumed run logs the
    same averages as an uninterrupted one."""
    def write(folder: Path) -> None:
        save_file(_trainable_state(model), str(folder / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state()}, folder / "optimizer.pt")

    return write_checkpoint(ckpt_dir, step, write,
                            {"history": history, "running": list(running or [])})


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> tuple[int, list[dict[str, float]]]:
    state = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise ConfigError(f"{path}: checkpoint does not match the model (e.g. {missing[0]})")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)
    extra = torch.load(path / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["rng"])
    info = read_json(path / "state.json")
    return int(info["step"]), list(info.get("history", []))


# -- the loop -------------------------------------------------------------------------------------
def train(model: torch.nn.Module, dataset: Sequence[Any], collate_fn: Callable[[list[Any]], dict],
          config: TrainConfig, checkpoint_dir: str | Path | None = None,
          loss_fn: LossFn = lm_loss, description: str = "training",
          accelerator: Any = None,
          on_step: Callable[[int, torch.nn.Module], None] | None = None) -> TrainOutcome:
    """Train ``model`` in place; resume from ``checkpoint_dir`` if it holds a checkpoint.

    ``on_step(step, model)`` runs after every optimiser update (checkpoint selection uses it).
    """
    if len(dataset) == 0:
        raise ConfigError(f"{description}: nothing to train on (empty dataset)")
    accelerator = accelerator or make_accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps)
    torch.manual_seed(config.seed)
    sampler = EpochSampler(len(dataset), config.seed)
    loader = torch.utils.data.DataLoader(list(dataset), batch_size=config.batch_size,
                                         sampler=sampler, collate_fn=collate_fn)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"{description}: the model has no trainable parameters")
    optimizer = adamw(params, config.learning_rate, config.weight_decay)
    batches_per_epoch = math.ceil(len(dataset) / config.batch_size / accelerator.num_processes)
    updates_per_epoch = max(1, batches_per_epoch // config.gradient_accumulation_steps)
    total = config.max_steps or max(1, math.ceil(config.epochs * updates_per_epoch))
    scheduler = _scheduler(optimizer, config, total)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    step, history, resumed = 0, [], None
    running: list[float] = []  # losses since the last history entry
    if ckpt is not None and (last := latest_checkpoint(ckpt)) is not None:
        step, history = load_checkpoint(last, accelerator.unwrap_model(model), optimizer,
                                        scheduler)
        running = [float(v) for v in read_json(last / "state.json").get("running", [])]
        resumed = step
    trainable = sum(p.numel() for p in params)
    total_params = sum(p.numel() for p in accelerator.unwrap_model(model).parameters())

    model.train()
    reset_peak(accelerator.device)  # the stage's peak, not the model loading before it
    start = time.perf_counter()
    bar = tqdm(total=total, initial=step, desc=description, unit="step",
               disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    epoch = step // updates_per_epoch
    skip = (step % updates_per_epoch) * config.gradient_accumulation_steps
    while step < total:
        loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        skip = 0
        for batch in batches:
            with accelerator.accumulate(model):
                loss, logs = loss_fn(model, batch)
                value = float(loss.detach())
                if not math.isfinite(value) or (config.divergence_threshold is not None
                                                and abs(value) > config.divergence_threshold):
                    where = f"; last good checkpoint: {latest_checkpoint(ckpt)}" if ckpt else ""
                    bar.close()  # end the progress line so the error starts a line of its own
                    raise TrainingDivergedError(
                        f"{description}: loss diverged at step {step} (loss={value:.4g}){where}")
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            running.append(value)
            if not accelerator.sync_gradients:
                continue
            step += 1
            bar.update(1)
            if on_step is not None:
                on_step(step, accelerator.unwrap_model(model))
            if step % config.log_every == 0 or step == total:
                entry = {"step": step, "loss": sum(running) / len(running),
                         "lr": scheduler.get_last_lr()[0],
                         **{k: v for k, v in logs.items() if k != "loss"}}
                history.append(entry)
                bar.set_postfix(loss=f"{entry['loss']:.4f}")
                running = []
            if ckpt is not None and (step % config.checkpoint_every == 0 or step == total):
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    save_checkpoint(ckpt, step, accelerator.unwrap_model(model), optimizer,
                                    scheduler, history, running)
            if step >= total:
                break
        epoch += 1
    bar.close()
    model.eval()
    return TrainOutcome(steps=step, seconds=time.perf_counter() - start,
                        trainable_parameters=trainable, total_parameters=total_params,
                        peak_memory=peak_memory(accelerator.device), history=history,
                        resumed_from=resumed)
