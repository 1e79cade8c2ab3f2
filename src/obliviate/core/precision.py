"""The arithmetic a model is measured in: eval mode, no gradients, and an optional autocast.

Training sections choose their autocast with ``mixed_precision`` (accelerate's key, applied by
:func:`obliviate.core.training.make_accelerator`). The same key in the evaluation and attack
sections applies to measurement: a stage runs its work inside :func:`measured_in`, and every
forward pass that measures a model runs inside :func:`evaluating`. With ``bf16`` the weights stay
in their own dtype (float32 by default) while the matrix multiplies and attention run in
bfloat16 under ``torch.autocast``, as ``Accelerator(mixed_precision="bf16")`` trains; norms, the
residual stream and the log-softmax stay in float32.

:func:`evaluating` disables gradients with ``torch.no_grad`` rather than ``inference_mode``:
autocast keeps one low-precision copy of each weight for the whole block only for tensors that
require gradients outside ``inference_mode``, so a greedy decode casts each weight once, not at
every step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any

import torch

from obliviate.core.errors import ConfigError
from obliviate.core.recipe import MixedPrecision

__all__ = ["AUTOCAST_DTYPES", "MixedPrecision", "check_precision", "evaluating",
           "has_accelerator", "measured_in", "measurement_precision", "measuring",
           "precision_input"]
AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}

_MEASURED_IN: ContextVar[MixedPrecision] = ContextVar("measured_in", default="no")


def has_accelerator() -> bool:
    """Whether torch sees a GPU-like device (CUDA, ROCm, XPU, MPS, ...)."""
    return bool(getattr(torch, "accelerator", None) and torch.accelerator.is_available())


def check_precision(mixed_precision: str) -> MixedPrecision:
    """``mixed_precision`` if this machine can run it; fp16 autocast needs a GPU."""
    if mixed_precision not in ("no", *AUTOCAST_DTYPES):
        raise ConfigError(f"mixed_precision: {mixed_precision!r} is not one of no, bf16, fp16")
    if mixed_precision == "fp16" and not has_accelerator():
        raise ConfigError("mixed_precision: fp16 needs a GPU; on a CPU use bf16 or no")
    return mixed_precision  # type: ignore[return-value]


@contextmanager
def measured_in(mixed_precision: str) -> Iterator[None]:
    """Measure every model inside the block in ``mixed_precision`` (see :func:`evaluating`)."""
    token = _MEASURED_IN.set(check_precision(mixed_precision))
    try:
        yield
    finally:
        _MEASURED_IN.reset(token)


def measurement_precision() -> MixedPrecision:
    """The precision :func:`measured_in` set for this block (``"no"`` outside one)."""
    return _MEASURED_IN.get()


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode, no gradients and the block's measurement autocast for ``model``'s forward
    passes; the model's training flag is restored on the way out."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), measuring(model):
            yield
    finally:
        model.train(was_training)


def measuring(model: torch.nn.Module) -> Any:
    """The block's measurement autocast for ``model``'s forward passes, and nothing else: no
    change of mode or of gradients (an attack may optimise through the model). Outside a
    :func:`measured_in` block, or in one of ``"no"``, it is a no-op, so a training loop's own
    autocast around it stays in force."""
    mixed_precision = measurement_precision()
    if mixed_precision == "no":
        return nullcontext()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[mixed_precision])


def precision_input(mixed_precision: str) -> dict[str, str]:
    """``mixed_precision`` as an input of a stage's record: nothing for ``"no"`` (so stages
    recorded before the key existed are still reused), else ``{"mixed_precision": ...}``."""
    return {} if mixed_precision == "no" else {"mixed_precision": mixed_precision}
