"""What a stage cost, and how that compares with retraining (the oracle's fine-tuning).

A cost record is a flat dict with any of: ``seconds``, ``peak_memory_bytes``,
``trainable_parameters``, ``total_parameters``, ``steps``, ``tokens``, ``flops``. FLOPs are
estimated with the usual dense-transformer rule

    FLOPs ≈ 6 · N · T     (forward 2·N·T + backward 4·N·T)

with N the total parameters the forward pass runs through and T the trained tokens. It ignores
attention's sequence-length term, LoRA's cheaper weight gradients and extra forward passes
(a frozen reference model, proxy evaluation), so it is a like-for-like estimate, not a count.
Modalities supply T (e.g. steps × batch size × mean sequence length).
"""

from __future__ import annotations

import math
from typing import Any

FLOPS_RULE = ("FLOPs ≈ 6·N·T (forward 2·N·T + backward 4·N·T), N = total parameters, "
              "T = trained tokens")
COST_FIELDS = ("seconds", "peak_memory_bytes", "trainable_parameters", "total_parameters",
               "steps", "tokens", "flops")
RATIO_FIELDS = ("seconds", "peak_memory_bytes", "trainable_parameters", "flops")


def training_flops(total_parameters: float, tokens: float) -> float:
    """``6 · N · T`` (see the module docstring)."""
    return 6.0 * float(total_parameters) * float(tokens)


def peak_bytes(peak_memory: Any) -> int | None:
    """The accelerator's peak when recorded, else the host's peak resident memory."""
    if isinstance(peak_memory, (int, float)):
        return int(peak_memory)
    if isinstance(peak_memory, dict):
        value = peak_memory.get("device_peak_allocated_bytes",
                                peak_memory.get("host_peak_rss_bytes"))
        return int(value) if value is not None else None
    return None


def cost_from_stage(stage: dict[str, Any]) -> dict[str, float | int | None]:
    """The cost fields of a ``run.json`` stage record (missing ones are ``None``)."""
    out: dict[str, Any] = {k: stage.get(k) for k in COST_FIELDS}
    out["peak_memory_bytes"] = stage.get("peak_memory_bytes", peak_bytes(stage.get("peak_memory")))
    if out["flops"] is None and out["tokens"] is not None and out["total_parameters"]:
        out["flops"] = training_flops(out["total_parameters"], out["tokens"])
    return out


def cost_ratios(cost: dict[str, Any], reference: dict[str, Any]) -> dict[str, float | None]:
    """``cost / reference`` per field of :data:`RATIO_FIELDS` (``None`` when undefined)."""
    out: dict[str, float | None] = {}
    for key in RATIO_FIELDS:
        a, b = cost.get(key), reference.get(key)
        ok = isinstance(a, (int, float)) and isinstance(b, (int, float)) and b and math.isfinite(a)
        out[key] = float(a) / float(b) if ok else None
    return out


def cost_metrics(cost: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, float]:
    """Flat ``cost/<field>`` and ``cost/<field>_ratio`` entries for a metrics dict."""
    out = {f"cost/{k}": float(v) for k, v in cost.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if reference:
        out.update({f"cost/{k}_ratio": v for k, v in cost_ratios(cost, reference).items()
                    if v is not None})
    return out
