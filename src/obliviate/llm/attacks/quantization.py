"""Quantization attack: round-to-nearest weight quantization of the unlearned model.

Zhang et al. 2024, "Catastrophic Failure of LLM Unlearning via Quantization" (arXiv:2410.16454,
ICLR 2025) quantize unlearned models to 8 and 4 bits (RTN, and GPTQ/AWQ, whose usual setting
is a group size of 128) and find that methods with a utility constraint retain on average 21%
of the forgotten knowledge in full precision and 83% after 4-bit quantization: unlearning moves
weights by less than half a quantization step, so the unlearned and the original weights fall
into the same buckets. (Their released evaluation code loads models through bitsandbytes'
``load_in_4bit`` / ``load_in_8bit``; this module implements the RTN arm in plain torch so it
runs on CPU and is checkable by hand.)

RTN here is weight-only, per output row and per group of ``group_size`` consecutive input
weights (the last group of a row may be shorter). Asymmetric (``maxq = 2**bits - 1``)::

    lo, hi = min(min(w), 0), max(max(w), 0)   # the range always holds 0, as in GPTQ's quantizer
    scale  = (hi - lo) / maxq
    zero   = clamp(round(-lo / scale), 0, maxq)
    q      = clamp(round(w / scale) + zero, 0, maxq)
    w'     = (q - zero) * scale

For a group that has both signs (every group of a real LLM) this is exactly
``scale = (max - min) / maxq``; extending the range to 0 keeps the zero point inside
``[0, maxq]`` for one-signed groups, so that ``|w - w'| <= scale / 2`` holds for every weight
(without it a group like ``[1, 2]`` saturates to ``[1, 1]``). Symmetric (absmax, as LLM.int8()
rows): ``scale = max|w| / (2**(bits-1) - 1)``, ``zero = 2**(bits-1)``.

``round`` is :func:`torch.round`, which rounds halves to even (``round(0.5) = 0``,
``round(1.5) = 2``, ``round(-0.5) = -0``). A constant group ``c`` is stored exactly as
``scale = |c|`` and ``q = zero + sign(c)`` (zero point 1 for a negative ``c`` in the asymmetric
scheme), so ``w' = c`` bit for bit; an all-zero group has ``scale = 0``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from typing import Any, ClassVar

import torch
from pydantic import Field

from obliviate.core.errors import ConfigError
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import ATTACKS
from obliviate.core.result import AttackResult
from obliviate.llm.attacks.base import (
    AttackContext,
    AttackTarget,
    LLMAttack,
    forget_probe,
    options_key,
    probe_mean,
    records_key,
)


def _check(bits: int, group_size: int, symmetric: bool) -> None:
    low = 2 if symmetric else 1
    if not low <= bits <= 16:
        raise ConfigError(f"quantization bits must be in [{low}, 16] "
                          f"({'symmetric' if symmetric else 'asymmetric'}), got {bits}")
    if group_size < 1:
        raise ConfigError(f"quantization group_size must be positive, got {group_size}")


def _quantize_groups(x: torch.Tensor, bits: int, symmetric: bool
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RTN of ``x`` shaped ``[rows, groups, size]``: dequantized, scales and zero points
    (``[rows, groups]``)."""
    maxq = 2 ** bits - 1
    lo_raw = x.amin(dim=-1)
    hi_raw = x.amax(dim=-1)
    if symmetric:
        half = 2 ** (bits - 1)
        scale = torch.maximum(hi_raw.abs(), lo_raw.abs()) / (half - 1)
        zero = torch.full_like(scale, float(half))
    else:
        lo = lo_raw.clamp(max=0.0)
        hi = hi_raw.clamp(min=0.0)
        scale = (hi - lo) / maxq
        zero = torch.zeros_like(scale)
        nonzero = scale > 0
        # + 0.0 turns round(-0.0) = -0.0 into 0.0
        zero[nonzero] = torch.round(-lo[nonzero] / scale[nonzero]).clamp(0, maxq) + 0.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = (torch.round(x / safe.unsqueeze(-1)) + zero.unsqueeze(-1)).clamp(0, maxq)
    # constant groups (including all-zero ones) are stored exactly: scale |c|, q = zero + sign(c)
    constant = hi_raw == lo_raw
    if bool(constant.any()):
        value = lo_raw[constant]
        scale[constant] = value.abs()
        if not symmetric:
            zero[constant] = (value < 0).to(zero.dtype)
        q[constant] = (zero[constant] + torch.sign(value)).unsqueeze(-1).expand_as(q[constant])
    dequantized = (q - zero.unsqueeze(-1)) * scale.unsqueeze(-1)
    return dequantized, scale, zero


def quantize_rtn(weight: torch.Tensor, bits: int, group_size: int, symmetric: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest quantization of a ``[out, in]`` weight in groups along ``in``.

    Returns ``(dequantized, scales, zero_points)``: the dequantized weight in the input's shape
    and dtype, and per-group scales and (integer-valued) zero points shaped
    ``[out, ceil(in / group_size)]``, computed in float32 (float64 for float64 input). The
    scheme is in the module docstring.
    """
    _check(bits, group_size, symmetric)
    if weight.dim() != 2:
        raise ConfigError(f"quantize_rtn expects a 2-D [out, in] weight, got shape "
                          f"{tuple(weight.shape)}")
    work = weight.detach().to(torch.float64 if weight.dtype == torch.float64 else torch.float32)
    rows, cols = work.shape
    full = (cols // group_size) * group_size
    parts = []
    if full:
        parts.append(_quantize_groups(work[:, :full].reshape(rows, -1, group_size), bits,
                                      symmetric))
    if full < cols:
        parts.append(_quantize_groups(work[:, full:].unsqueeze(1), bits, symmetric))
    dequantized = torch.cat([p[0].reshape(rows, -1) for p in parts], dim=1)
    scales = torch.cat([p[1] for p in parts], dim=1)
    zeros = torch.cat([p[2] for p in parts], dim=1)
    return dequantized.to(weight.dtype), scales, zeros


def _is_conv1d(module: torch.nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2): a linear layer whose weight is stored ``[in, out]``."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "weight")


def quantize_model(model: torch.nn.Module, bits: int, group_size: int, symmetric: bool = False,
                   include_lm_head: bool = False, include_embeddings: bool = False
                   ) -> torch.nn.Module:
    """A copy of ``model`` whose linear weights are replaced by their RTN dequantization.

    Every ``nn.Linear`` (and transformers ``Conv1D``) weight is quantized; biases and norms stay
    in full precision. The LM head (``get_output_embeddings()``) and the input embeddings are
    left alone unless ``include_lm_head`` / ``include_embeddings``; a weight tied between them
    is quantized once, when either is included. ``model`` itself is not modified.
    """
    _check(bits, group_size, symmetric)
    copied = copy.deepcopy(model)
    head = _safe_call(copied, "get_output_embeddings")
    embed = _safe_call(copied, "get_input_embeddings")
    # a tied weight is one object: excluded unless the head or the embeddings are included
    included = {id(m.weight) for m, flag in ((head, include_lm_head), (embed, include_embeddings))
                if m is not None and flag}
    excluded = {id(m.weight) for m in (head, embed) if m is not None} - included
    done: set[int] = set()
    targets: list[tuple[torch.nn.Parameter, bool]] = []
    for module in copied.modules():
        if isinstance(module, torch.nn.Linear):
            targets.append((module.weight, False))
        elif _is_conv1d(module):
            targets.append((module.weight, True))
    if include_embeddings and embed is not None and isinstance(embed, torch.nn.Embedding):
        targets.append((embed.weight, False))
    with torch.no_grad():
        for weight, transposed in targets:
            key = id(weight)
            if key in excluded or key in done:
                continue
            done.add(key)
            matrix = weight.data.t() if transposed else weight.data
            dequantized, _, _ = quantize_rtn(matrix, bits, group_size, symmetric)
            weight.data.copy_(dequantized.t() if transposed else dequantized)
    return copied


def _safe_call(model: torch.nn.Module, name: str) -> Any:
    method = getattr(model, name, None)
    if method is None:
        return None
    try:
        return method()
    except (AttributeError, NotImplementedError):
        return None


class QuantizationConfig(StrictModel):
    """Which precisions to try; Zhang et al. 2024 use 8 and 4 bits."""

    bits: list[int] = Field(default_factory=lambda: [8, 4], min_length=1)
    """the weight bit widths tried (each one attack)"""
    group_size: int = Field(default=128, ge=1)
    """weights sharing one scale (and zero point)"""
    symmetric: bool = False
    """symmetric quantization (no zero point)"""
    include_lm_head: bool = False
    """also quantize the output head"""
    include_embeddings: bool = False
    """also quantize the input embeddings"""


@ATTACKS.register("quantization", modality="llm")
class QuantizationAttack(LLMAttack):
    """RTN weight quantization (8/4 bit) as an attack on forgetting (Zhang et al. 2024)."""

    name: ClassVar[str] = "quantization"
    config_class: ClassVar[type[StrictModel]] = QuantizationConfig
    paper: ClassVar[str] = ("Zhang et al. 2024, Catastrophic Failure of LLM Unlearning via "
                            "Quantization, arXiv:2410.16454")

    def run(self, ctx: AttackContext) -> AttackResult:
        """Probe the model and the oracle in full precision and after each ``bits`` setting;
        ``attacked`` is the variant with the highest probe on the model (variants ``int8``,
        ``int4``, ...) and ``oracle_attacked`` the oracle under that same variant."""
        config: QuantizationConfig = self.config  # type: ignore[assignment]
        for bits in config.bits:
            _check(bits, config.group_size, config.symmetric)
        start = time.perf_counter()
        records = ctx.task.forget.records
        metric = ctx.probe.metric

        def probe(target: AttackTarget) -> dict[str, Any]:
            values = forget_probe(target, records, ctx.probe)
            return {"value": probe_mean(values, metric), "rouge": probe_mean(values, "rouge"),
                    "prob": probe_mean(values, "prob"), "per_item": values[metric],
                    "generations": values["generations"]}

        def quantized_probe(target: AttackTarget, bits: int) -> dict[str, Any]:
            def compute() -> dict[str, Any]:
                model = quantize_model(target.model, bits, config.group_size, config.symmetric,
                                       config.include_lm_head, config.include_embeddings)
                return probe(replace(target, model=model))

            key = ("quantized_probe", bits, records_key(records),
                   options_key(config, ctx.probe))
            return target.remember(key, compute)  # the oracle is quantized once per run

        plain = probe(ctx.target)
        oracle_plain = probe(ctx.oracle) if ctx.oracle is not None else None
        variants: dict[str, dict[str, Any]] = {}
        for bits in config.bits:
            key = f"int{bits}"
            model_values = quantized_probe(ctx.target, bits)
            oracle_values = (quantized_probe(ctx.oracle, bits) if ctx.oracle is not None
                             else None)
            variants[key] = {
                "bits": bits, "model": model_values["value"],
                "oracle": oracle_values["value"] if oracle_values else None,
                "model_rouge": model_values["rouge"], "model_prob": model_values["prob"],
                "oracle_rouge": oracle_values["rouge"] if oracle_values else None,
                "oracle_prob": oracle_values["prob"] if oracle_values else None,
                "per_item": model_values["per_item"],
                "generations": model_values["generations"],
            }
        best = max(variants, key=lambda k: variants[k]["model"])
        return AttackResult(
            attack=self.name, model=ctx.target.name, metric=metric, plain=plain["value"],
            attacked=variants[best]["model"],
            oracle_plain=oracle_plain["value"] if oracle_plain else None,
            oracle_attacked=variants[best]["oracle"],
            variants=variants, options=config.model_dump(),
            details={"best_variant": best, "plain_rouge": plain["rouge"],
                     "plain_prob": plain["prob"], "plain_per_item": plain["per_item"],
                     "plain_generations": plain["generations"],
                     "oracle_plain_rouge": oracle_plain["rouge"] if oracle_plain else None,
                     "oracle_plain_prob": oracle_plain["prob"] if oracle_plain else None,
                     "paper": self.paper},
            seconds=time.perf_counter() - start)


__all__ = ["QuantizationAttack", "QuantizationConfig", "quantize_model", "quantize_rtn"]
