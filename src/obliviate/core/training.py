"""The one training loop of every modality: a plain loop under ``accelerate.Accelerator``.

Fine-tuning a target or an oracle, and every training-based unlearning method of either modality,
run :func:`train_loop`. A caller supplies what differs, and nothing else:

- ``loss_fn(model, batch) -> (loss, logs)``: the method's objective on one micro-batch;
- a batch source: :class:`EpochBatches` (a dataset visited in a ``(seed, epoch)`` order, sharded
  across processes by accelerate; the LLM methods) or :class:`StepBatches` (a ``torch.Generator``
  per micro-step from which the loss draws its own batch, timesteps and noise; the diffusion
  methods, whose batches are random draws);
- which parameters train (the rest are frozen for the loop), and optionally a gradient hook
  (SalUn's mask), an EMA of the weights, tensors stored with each checkpoint and auxiliary
  optimisers (EraseDiff's inner one) whose state is checkpointed beside the main one.

The loop does gradient accumulation, mixed precision (``accelerator.autocast``), gradient
clipping, the learning-rate schedule, divergence checks, logging and crash-safe checkpoints
(:mod:`obliviate.core.checkpoint`) from which a killed run resumes to the same weights.

Data parallelism: with ``wrap_model=True`` the model is handed to ``accelerator.prepare`` (DDP,
FSDP, DeepSpeed) and ``loss_fn`` must call the model it is given. A loss that calls methods of the
raw model (a diffusion model's ``eps``, sampling inside the loss, frozen copies) uses
``wrap_model=False``: the loop then broadcasts the trained weights from process 0 at the start
and averages the gradients across processes before each update, so the replicas stay equal.
Under ``torchrun`` / ``accelerate launch`` on machines without a GPU, :func:`make_accelerator`
forms a gloo group.
"""

from __future__ import annotations

import itertools
import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from obliviate.core.checkpoint import latest_checkpoint, read_checkpoint, write_checkpoint
from obliviate.core.errors import ConfigError, TrainingDivergedError
from obliviate.core.io import read_json
from obliviate.core.precision import (
    AUTOCAST_DTYPES,
    MixedPrecision,
    check_precision,
    has_accelerator,
)
from obliviate.core.profiling import peak_memory, reset_peak

LossFn = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]
NamedParams = list[tuple[str, torch.nn.Parameter]]


# -- processes ------------------------------------------------------------------------------------
def make_accelerator(mixed_precision: MixedPrecision = "no", **kwargs: Any) -> Any:
    """An ``Accelerator`` that also forms a multi-process (gloo) group on CPU-only machines.

    accelerate only recognises ``torchrun``/``accelerate launch`` workers on a machine without a
    GPU when told ``cpu=True``; without it each worker would silently train alone. accelerate
    fixes the precision once per process; a loop asking for another one resets that setting
    (the process group is kept).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    check_precision(mixed_precision)
    if AcceleratorState._shared_state.get("_mixed_precision", mixed_precision) != mixed_precision:
        AcceleratorState._reset_state()
    return Accelerator(cpu=not has_accelerator(), mixed_precision=mixed_precision, **kwargs)


def _state() -> Any:
    from accelerate import PartialState

    return PartialState(cpu=not has_accelerator())


def is_main_process() -> bool:
    return _state().is_main_process


def default_device() -> Any:
    """The device accelerate assigns to this process (its GPU when there is one, else CPU)."""
    return _state().device


def barrier() -> None:
    """Wait for every process (a no-op in a single process)."""
    _state().wait_for_everyone()


def remove_checkpoints(path: str | Path) -> None:
    """Delete a finished stage's checkpoints once every process is done with them."""
    barrier()
    if is_main_process():
        shutil.rmtree(path, ignore_errors=True)
    barrier()


# -- settings and outcome -------------------------------------------------------------------------
@dataclass
class LoopSettings:
    """How to optimise; each modality's recipe config maps onto it."""

    total_steps: int
    learning_rate: float
    weight_decay: float = 0.0
    optimizer: Literal["adamw", "adam"] = "adamw"
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    gradient_accumulation_steps: int = 1
    mixed_precision: MixedPrecision = "no"
    master_weights: Literal["float32", "model"] = "float32"
    ema_decay: float | None = None
    checkpoint_every: int = 100
    log_every: int = 10
    divergence_threshold: float | None = None
    description: str = "training"


@dataclass
class LoopOutcome:
    steps: int
    seconds: float
    trainable_parameters: int
    total_parameters: int
    peak_memory: dict[str, int]
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None
    selection: dict[str, Any] | None = None

    @property
    def final_loss(self) -> float:
        return float(self.history[-1]["loss"]) if self.history else float("nan")


_AUTOCAST = {dtype: name for name, dtype in AUTOCAST_DTYPES.items()}


def low_precision(params: Iterable[torch.nn.Parameter]) -> torch.dtype | None:
    """The bf16 or fp16 dtype of the parameters to train, or ``None`` (float32, or mixed)."""
    dtypes = {p.dtype for p in params}
    return next(iter(dtypes)) if len(dtypes) == 1 and dtypes <= set(_AUTOCAST) else None


def loop_precision(params: Iterable[torch.nn.Parameter], master_weights: str,
                   mixed_precision: MixedPrecision) -> MixedPrecision:
    """The autocast precision a loop over ``params`` runs under: with float32 master weights of
    bf16 or fp16 parameters, their own dtype (unless ``mixed_precision`` names one), else
    ``mixed_precision`` as given."""
    low = low_precision(params)
    if low is None or master_weights != "float32" or mixed_precision != "no":
        return mixed_precision
    return _AUTOCAST[low]  # type: ignore[return-value]


@contextmanager
def master_copies(tensors: Sequence[torch.nn.Parameter], master_weights: str) -> Iterator[None]:
    """Train float32 copies of bf16/fp16 ``tensors`` (``master_weights == "float32"``): each is
    upcast in place (same ``Parameter``, so optimizers and hooks still hold it) and cast back to
    its dtype on the way out, as mixed-precision training keeps master weights (Micikevicius et
    al. 2018, "Mixed Precision Training"). Updates smaller than bf16's rounding of a weight
    then add up instead of vanishing."""
    low = low_precision(tensors) if master_weights == "float32" else None
    if low is None:
        yield
        return
    for p in tensors:
        p.data = p.data.float()
    try:
        yield
    finally:
        for p in tensors:
            p.data = p.data.to(low)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Linear warm-up over ``warmup`` steps, then constant, linear or cosine decay to 0."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


def make_optimizer(kind: str, params: list[torch.nn.Parameter], lr: float, weight_decay: float
                   ) -> torch.optim.Optimizer:
    """AdamW (fused where the device supports it; CPU and CUDA do) or Adam with L2 decay."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


class EMA:
    """Exponential moving average of the parameters, with the usual warm-up
    ``decay_t = min(decay, (1 + t) / (10 + t))``."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for n, p in model.named_parameters():
            self.shadow[n].lerp_(p.detach(), 1 - d)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for n, p in model.named_parameters():
            p.copy_(self.shadow[n])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow = {k: v.to(self.shadow[k].device) for k, v in state.items()}


# -- batch sources --------------------------------------------------------------------------------
class Batches(Protocol):
    def prepare(self, accelerator: Any) -> None: ...

    def micro_batches(self, step: int) -> Iterator[Any]:
        """Micro-batches from update ``step`` on (a resumed run starts mid-way), endlessly."""
        ...


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


class EpochBatches:
    """A dataset in epochs, each in an order fixed by ``(seed, epoch)``, sharded by accelerate."""

    def __init__(self, dataset: Sequence[Any], batch_size: int, collate_fn: Callable,
                 seed: int, gradient_accumulation_steps: int = 1) -> None:
        self.size, self.batch_size = len(dataset), batch_size
        self.accumulation = gradient_accumulation_steps
        self.loader: Any = torch.utils.data.DataLoader(
            list(dataset), batch_size=batch_size, sampler=EpochSampler(len(dataset), seed),
            collate_fn=collate_fn)
        self.accelerator: Any = None

    def updates_per_epoch(self, num_processes: int) -> int:
        batches = math.ceil(self.size / self.batch_size / num_processes)
        return max(1, batches // self.accumulation)

    def prepare(self, accelerator: Any) -> None:
        self.accelerator = accelerator
        self.loader = accelerator.prepare(self.loader)

    def micro_batches(self, step: int) -> Iterator[Any]:
        per_epoch = self.updates_per_epoch(self.accelerator.num_processes)
        epoch, skip = step // per_epoch, (step % per_epoch) * self.accumulation
        while True:
            self.loader.set_epoch(epoch)
            yield from (self.accelerator.skip_first_batches(self.loader, skip) if skip
                        else self.loader)
            skip, epoch = 0, epoch + 1


def step_generator(seed: int, step: int, micro: int = 0, process: int = 0,
                   accumulation: int = 1) -> torch.Generator:
    """The generator of one micro-step: a function of the seed, the update, the micro-batch
    within it and the process, so a resumed run draws what an uninterrupted one would, and
    each process draws its own share of the batch."""
    index = step * accumulation + micro
    return torch.Generator().manual_seed(seed * 1_000_003 + index + process * 1_000_000_007)


class StepBatches:
    """``(step, generator)`` per micro-step, for losses that draw their own random batch."""

    def __init__(self, seed: int, gradient_accumulation_steps: int = 1) -> None:
        self.seed, self.accumulation, self.process = seed, gradient_accumulation_steps, 0

    def prepare(self, accelerator: Any) -> None:
        self.process = accelerator.process_index

    def micro_batches(self, step: int) -> Iterator[tuple[int, torch.Generator]]:
        for s in itertools.count(step):
            for micro in range(self.accumulation):
                yield s, step_generator(self.seed, s, micro, self.process, self.accumulation)


# -- checkpoints ----------------------------------------------------------------------------------
def save_checkpoint(ckpt_dir: Path, step: int, params: NamedParams,
                    optimizer: torch.optim.Optimizer, scheduler: Any,
                    history: list[dict[str, float]], running: list[float] | None = None,
                    ema: EMA | None = None, extra: dict[str, torch.Tensor] | None = None,
                    aux: dict[str, torch.optim.Optimizer] | None = None) -> Path:
    """Write ``step-N`` atomically and drop older ones (:func:`write_checkpoint`).

    ``running`` holds the losses since the last history entry, so that a resumed run logs the
    same averages as an uninterrupted one; ``aux`` are a method's own optimisers."""
    def write(folder: Path) -> None:
        save_file({n: p.detach().contiguous().cpu() for n, p in params},
                  str(folder / "trainable.safetensors"))
        if ema is not None:
            save_file({k: v.contiguous().cpu() for k, v in ema.state_dict().items()},
                      str(folder / "ema.safetensors"))
        if extra:
            save_file({k: v.contiguous().cpu() for k, v in extra.items()},
                      str(folder / "extra.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(),
                    "aux": {k: o.state_dict() for k, o in (aux or {}).items()}},
                   folder / "optimizer.pt")

    return write_checkpoint(ckpt_dir, step, write,
                            {"history": history, "running": list(running or [])})


def load_checkpoint(path: Path, params: NamedParams, optimizer: torch.optim.Optimizer,
                    scheduler: Any, ema: EMA | None = None,
                    aux: dict[str, torch.optim.Optimizer] | None = None
                    ) -> tuple[int, list[dict[str, float]], list[float]]:
    """Restore a checkpoint; returns ``(step, history, running losses)``."""
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
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"])
    for name, opt in (aux or {}).items():
        if name not in saved.get("aux", {}):
            raise ConfigError(f"{path}: checkpoint has no state for optimizer {name!r}; "
                              "remove it or use a new --output")
        opt.load_state_dict(saved["aux"][name])
    info = read_json(path / "state.json")
    running = [float(v) for v in info.get("running", [])]
    return int(info["step"]), list(info.get("history", [])), running


def load_extra(path: Path | None) -> dict[str, torch.Tensor]:
    """Tensors a method stored with its checkpoint (e.g. SalUn's mask), or ``{}``."""
    if path is None or not (path / "extra.safetensors").is_file():
        return {}
    return load_file(str(path / "extra.safetensors"))


# -- the loop -------------------------------------------------------------------------------------
def _average_gradients(tensors: list[torch.nn.Parameter], processes: int) -> None:
    grads = [p.grad for p in tensors if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= processes
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


@torch.no_grad()
def _broadcast(tensors: list[torch.Tensor]) -> None:
    for t in tensors:
        torch.distributed.broadcast(t.data, src=0)


LogListener = Callable[[dict[str, float]], None]
_LISTENERS: ContextVar[tuple[LogListener, ...]] = ContextVar("obliviate_log_listeners",
                                                             default=())


@contextmanager
def log_listener(listener: LogListener) -> Iterator[None]:
    """Inside this block every training loop calls ``listener(entry)`` (on the main process)
    with each history entry (``step``, ``loss``, ``lr``, the method's terms) the moment it is
    logged: what sends the training curve to the experiment trackers live."""
    token = _LISTENERS.set((*_LISTENERS.get(), listener))
    try:
        yield
    finally:
        _LISTENERS.reset(token)


def train_loop(model: torch.nn.Module, loss_fn: LossFn, batches: Batches,
               settings: LoopSettings, *, params: NamedParams | None = None,
               accelerator: Any = None, checkpoint_dir: str | Path | None = None,
               wrap_model: bool = True,
               on_step: Callable[[int, torch.nn.Module], None] | None = None,
               grad_hook: Callable[[], None] | None = None,
               extra_state: dict[str, torch.Tensor] | None = None,
               aux_optimizers: dict[str, torch.optim.Optimizer] | None = None) -> LoopOutcome:
    """Train ``model`` in place for ``settings.total_steps`` updates; resume from
    ``checkpoint_dir`` when it holds a checkpoint.

    ``params`` are the parameters to train (default: those with ``requires_grad``); the rest of
    the model is frozen during the loop and restored after. ``grad_hook()`` runs between gradient
    clipping and the update; ``on_step(step, model)`` after every update. With
    ``settings.ema_decay`` the EMA of the weights is copied into the model at the end.
    """
    name = settings.description
    named = params if params is not None else [
        (n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError(f"{name}: the model has no trainable parameters")
    tensors = [p for _, p in named]
    settings = replace(settings, mixed_precision=loop_precision(
        tensors, settings.master_weights, settings.mixed_precision))
    accelerator = accelerator or make_accelerator(
        settings.mixed_precision,
        gradient_accumulation_steps=settings.gradient_accumulation_steps)
    if on_step is not None and settings.master_weights == "float32" and \
            low_precision(tensors) is not None:
        on_step = _under_autocast(on_step, accelerator)  # sees the masters as the loop does
    with master_copies(tensors, settings.master_weights):
        return _train(model, loss_fn, batches, settings, named, params, accelerator,
                      checkpoint_dir, wrap_model, on_step, grad_hook, extra_state,
                      aux_optimizers)


def _under_autocast(on_step: Callable[[int, torch.nn.Module], None], accelerator: Any
                    ) -> Callable[[int, torch.nn.Module], None]:
    """``on_step`` run under the loop's autocast: with float32 masters of bf16 weights, what it
    measures (a relearning probe, a checkpoint proxy) is computed in bf16 as the loop is."""
    def step(number: int, model: torch.nn.Module) -> None:
        with accelerator.autocast():
            on_step(number, model)
    return step


def _train(model: torch.nn.Module, loss_fn: LossFn, batches: Batches, settings: LoopSettings,
           named: NamedParams, params: NamedParams | None, accelerator: Any,
           checkpoint_dir: str | Path | None, wrap_model: bool,
           on_step: Callable[[int, torch.nn.Module], None] | None,
           grad_hook: Callable[[], None] | None, extra_state: dict[str, torch.Tensor] | None,
           aux_optimizers: dict[str, torch.optim.Optimizer] | None) -> LoopOutcome:
    """:func:`train_loop`'s loop, on parameters already in the dtype they are trained in."""
    name = settings.description
    was_trainable = [(p, p.requires_grad) for p in model.parameters()]
    if params is not None:
        chosen = {id(p) for _, p in params}
        for p in model.parameters():
            p.requires_grad_(id(p) in chosen)
    tensors = [p for _, p in named]
    optimizer = make_optimizer(settings.optimizer, tensors, settings.learning_rate,
                               settings.weight_decay)
    total = settings.total_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, settings.warmup_steps, settings.lr_scheduler))
    batches.prepare(accelerator)
    processes = accelerator.num_processes
    if wrap_model:
        model, optimizer = accelerator.prepare(model, optimizer)
    else:
        optimizer = accelerator.prepare(optimizer)
        if processes > 1:  # replicas start equal, as DDP makes them
            _broadcast([*model.parameters(), *model.buffers()])
    inner = accelerator.unwrap_model(model)
    ema = EMA(inner, settings.ema_decay) if settings.ema_decay else None

    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    step, history, running, resumed = 0, [], [], None
    if (last := latest_checkpoint(ckpt)) is not None:
        step, history, running = read_checkpoint(last, lambda path: load_checkpoint(
            path, named, optimizer, scheduler, ema, aux_optimizers))
        resumed = step

    model.train()
    reset_peak(accelerator.device)  # the stage's peak, not the model loading before it
    start = time.perf_counter()
    bar = tqdm(total=total, initial=step, desc=name, unit="step",
               disable=not accelerator.is_local_main_process or None, dynamic_ncols=True)
    for batch in (batches.micro_batches(step) if step < total else ()):
        with accelerator.accumulate(model):
            with accelerator.autocast():
                loss, logs = loss_fn(model, batch)
            value = float(loss.detach())
            if not math.isfinite(value) or (settings.divergence_threshold is not None
                                            and abs(value) > settings.divergence_threshold):
                where = f"; last good checkpoint: {latest_checkpoint(ckpt)}" if ckpt else ""
                bar.close()  # end the progress line so the error starts a line of its own
                raise TrainingDivergedError(
                    f"{name}: loss diverged at step {step} (loss={value:.4g}){where}")
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                if not wrap_model and processes > 1:
                    _average_gradients(tensors, processes)
                if settings.max_grad_norm:
                    accelerator.clip_grad_norm_(tensors, settings.max_grad_norm)
                if grad_hook is not None:
                    grad_hook()
            optimizer.step()
            if accelerator.sync_gradients:
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        running.append(value)
        if not accelerator.sync_gradients:
            continue
        step += 1
        if ema is not None:
            ema.update(inner, step)
        bar.update(1)
        if on_step is not None:
            on_step(step, inner)
        if step % settings.log_every == 0 or step == total:
            entry = {"step": step, "loss": sum(running) / len(running),
                     "lr": scheduler.get_last_lr()[0],
                     **{k: float(v) for k, v in logs.items() if k != "loss"}}
            history.append(entry)
            if accelerator.is_main_process:
                for listener in _LISTENERS.get():
                    listener(entry)
            bar.set_postfix(loss=f"{entry['loss']:.4f}")
            running = []
        # at the configured interval only: the last step's state is the caller's final save,
        # so a checkpoint there would write the same weights twice (a run killed between the
        # last step and that save resumes from the checkpoint before)
        if ckpt is not None and step % settings.checkpoint_every == 0 and step < total:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_checkpoint(ckpt, step, named, optimizer, scheduler, history, running,
                                ema, extra_state, aux_optimizers)
        if step >= total:
            break
    bar.close()
    if ema is not None:
        ema.copy_to(inner)
    for p, flag in was_trainable:
        p.requires_grad_(flag)
    model.eval()
    return LoopOutcome(steps=step, seconds=time.perf_counter() - start,
                       trainable_parameters=sum(p.numel() for p in tensors),
                       total_parameters=sum(p.numel() for p in inner.parameters()),
                       peak_memory=peak_memory(accelerator.device), history=history,
                       resumed_from=resumed)
