"""One optimisation loop for fine-tuning and for every training-based unlearning method.

Each step draws its batch, timesteps and noise from a ``torch.Generator`` seeded by
``(seed, step)``, so a run resumed from a checkpoint sees exactly the batches an uninterrupted
run would. Checkpoints (``step-N/``) hold the trainable weights and the EMA in safetensors, the
optimizer state (loaded with ``weights_only=True``) and the loss history; each is written to a
temporary folder and renamed, so an interruption never leaves a half-written one.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from obliviate.core.checkpoint import latest_checkpoint, write_checkpoint
from obliviate.core.errors import ConfigError, TrainingDivergedError
from obliviate.core.io import read_json
from obliviate.core.profiling import peak_memory, reset_peak
from obliviate.core.recipe import StrictModel
from obliviate.diffusion.models import EMA, Denoiser

StepFn = Callable[[int, torch.Generator], tuple[torch.Tensor, dict[str, float]]]


class TrainConfig(StrictModel):
    """Fine-tuning the target and the oracle (DDPM ε-prediction, Ho et al. 2020).

    Adam, 10% condition dropout (from the model config), EMA 0.999 of the weights is what gets
    saved. The defaults train the 16×16 MNIST model in a few minutes on 2 CPU cores.
    """

    steps: int = Field(default=2500, ge=1)
    batch_size: int = Field(default=128, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=100, ge=0)
    lr_scheduler: Literal["constant", "cosine", "linear"] = "cosine"
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    ema_decay: float | None = Field(default=0.999, gt=0, lt=1)
    checkpoint_every: int = Field(default=250, ge=1)
    log_every: int = Field(default=50, ge=1)
    seed: int = 0


@dataclass
class LoopOutcome:
    steps: int
    seconds: float
    trainable_parameters: int
    total_parameters: int
    peak_memory: dict[str, int]
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None

    @property
    def final_loss(self) -> float:
        return float(self.history[-1]["loss"]) if self.history else float("nan")


def default_device() -> torch.device:
    """The accelerator torch sees (CUDA, ROCm, XPU, MPS, ...), else the CPU."""
    accel = getattr(torch, "accelerator", None)
    if accel is not None and accel.is_available():
        return accel.current_accelerator()
    return torch.device("cpu")


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


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


def _lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress


# -- checkpoints -------------------------------------------------------------------------------
def save_checkpoint(ckpt_dir: Path, step: int, params: list[tuple[str, torch.nn.Parameter]],
                    optimizer: torch.optim.Optimizer, ema: EMA | None,
                    history: list[dict[str, float]], extra: dict[str, torch.Tensor] | None = None,
                    aux: dict[str, torch.optim.Optimizer] | None = None) -> Path:
    """``aux`` are a method's own optimizers (EraseDiff's inner one), saved with the main one."""
    def write(folder: Path) -> None:
        save_file({n: p.detach().contiguous().cpu() for n, p in params},
                  str(folder / "trainable.safetensors"))
        if ema is not None:
            save_file({k: v.cpu() for k, v in ema.state_dict().items()},
                      str(folder / "ema.safetensors"))
        if extra:
            save_file({k: v.contiguous().cpu() for k, v in extra.items()},
                      str(folder / "extra.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(),
                    "aux": {k: o.state_dict() for k, o in (aux or {}).items()}},
                   folder / "optimizer.pt")

    return write_checkpoint(ckpt_dir, step, write, {"history": history})


def load_checkpoint(path: Path, params: list[tuple[str, torch.nn.Parameter]],
                    optimizer: torch.optim.Optimizer, ema: EMA | None,
                    aux: dict[str, torch.optim.Optimizer] | None = None
                    ) -> tuple[int, list[dict[str, float]]]:
    state = load_file(str(path / "trainable.safetensors"))
    names = {n for n, _ in params}
    if set(state) != names:
        odd = sorted(set(state) ^ names)[0]
        raise ConfigError(f"{path}: checkpoint does not match the trained parameters "
                          f"(e.g. {odd}); remove it or use a new --output")
    with torch.no_grad():
        for name, p in params:
            p.copy_(state[name])
    if ema is not None and (path / "ema.safetensors").is_file():
        ema.load_state_dict(load_file(str(path / "ema.safetensors")))
    saved = torch.load(path / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    for name, opt in (aux or {}).items():
        if name not in saved.get("aux", {}):
            raise ConfigError(f"{path}: checkpoint has no state for optimizer {name!r}; "
                              "remove it or use a new --output")
        opt.load_state_dict(saved["aux"][name])
    info = read_json(path / "state.json")
    return int(info["step"]), list(info.get("history", []))


def load_extra(path: Path | None) -> dict[str, torch.Tensor]:
    """Tensors a method stored with its checkpoint (e.g. SalUn's mask), or ``{}``."""
    if path is None or not (path / "extra.safetensors").is_file():
        return {}
    return load_file(str(path / "extra.safetensors"))


# -- the loop --------------------------------------------------------------------------------------
def run_loop(model: Denoiser, params: list[tuple[str, torch.nn.Parameter]], step_fn: StepFn, *,
             steps: int, learning_rate: float, seed: int = 0, weight_decay: float = 0.0,
             warmup_steps: int = 0, lr_scheduler: str = "constant",
             max_grad_norm: float | None = 1.0, ema_decay: float | None = None,
             checkpoint_dir: str | Path | None = None, checkpoint_every: int = 100,
             log_every: int = 10, description: str = "training",
             grad_hook: Callable[[], None] | None = None,
             extra_state: dict[str, torch.Tensor] | None = None,
             aux_optimizers: dict[str, torch.optim.Optimizer] | None = None) -> LoopOutcome:
    """Optimise ``params`` (the rest of ``model`` frozen) with Adam for ``steps`` steps.

    ``step_fn(step, generator)`` returns ``(loss, logs)``; ``grad_hook()`` runs between the
    backward pass and the update (SalUn masks gradients there). Resumes from ``checkpoint_dir``.
    With ``ema_decay`` the EMA weights are copied into the model at the end.
    """
    if not params:
        raise ConfigError(f"{description}: no trainable parameters")
    trainable = {id(p) for _, p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    tensors = [p for _, p in params]
    optimizer = torch.optim.Adam(tensors, lr=learning_rate, weight_decay=weight_decay)
    ema = EMA(model, ema_decay) if ema_decay else None
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    step, history, resumed = 0, [], None
    if (last := latest_checkpoint(ckpt)) is not None:
        step, history = load_checkpoint(last, params, optimizer, ema, aux_optimizers)
        resumed = step
    reset_peak(model.device)
    model.train()
    running: list[float] = []
    logs: dict[str, float] = {}
    start = time.perf_counter()
    bar = tqdm(total=steps, initial=step, desc=description, unit="step", dynamic_ncols=True,
               disable=None)
    while step < steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * _lr_factor(step, steps, warmup_steps, lr_scheduler)
        loss, logs = step_fn(step, step_generator(seed, step))
        value = float(loss.detach())
        if not math.isfinite(value):
            bar.close()
            where = f"; last good checkpoint: {latest_checkpoint(ckpt)}" if ckpt else ""
            raise TrainingDivergedError(f"{description}: loss diverged at step {step} "
                                        f"(loss={value:.4g}){where}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(tensors, max_grad_norm)
        if grad_hook is not None:
            grad_hook()
        optimizer.step()
        step += 1
        if ema is not None:
            ema.update(model, step)
        running.append(value)
        bar.update(1)
        if step % log_every == 0 or step == steps:
            entry = {"step": step, "loss": sum(running) / len(running),
                     **{k: float(v) for k, v in logs.items() if k != "loss"}}
            history.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.4f}")
            running = []
        if ckpt is not None and (step % checkpoint_every == 0 or step == steps):
            save_checkpoint(ckpt, step, params, optimizer, ema, history, extra_state,
                            aux_optimizers)
    bar.close()
    if ema is not None:
        ema.copy_to(model)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return LoopOutcome(steps=step, seconds=time.perf_counter() - start,
                       trainable_parameters=sum(p.numel() for p in tensors),
                       total_parameters=sum(p.numel() for p in model.parameters()),
                       peak_memory=peak_memory(model.device), history=history,
                       resumed_from=resumed)


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
                    description=description)


def remove_checkpoints(path: str | Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


