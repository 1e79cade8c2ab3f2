"""Attention over a packed row one example at a time: the pairs its block-diagonal mask allows.

:func:`obliviate.llm.answer_forward.pack` puts a batch's examples end to end in rows of ~500
tokens, the prefix they share once in front. Under its mask a token sees the prefix and the
earlier tokens of its own example, nothing else; dense attention (sdpa or eager with that
mask) still computes every pair of the row, ``L²`` of them, and throws most away. On a TOFU
batch of 8 (a 482-token row) that was 15% of a training step on SmolLM2.

Here each example's queries meet only the prefix's keys and its own: a causal attention over
the prefix, then one small attention per example over ``[prefix; example]`` (about ``L²/S``
pairs for ``S`` examples). Padding at a row's end sees only itself, as under the mask. The
result is the dense masked attention's up to floating-point rounding, and so are its
gradients.

It runs as a transformers attention function (:data:`NAME`, registered on first use) that
:func:`segments` switches a model to for one forward, the row layout travelling in the
forward's keyword arguments to every layer's attention call. It is used only where that is
known to be the same computation: the decoder architectures of :data:`ARCHITECTURES` (plain
softmax attention, no logit soft-capping or attention sinks), sdpa or eager attention, and no
activation checkpointing (a checkpointed layer recomputes its forward in the backward pass,
after the switch is undone); and where it was measured faster (:data:`DEVICE_TYPES`).
Elsewhere the packed row runs under its dense mask, as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

NAME = "obliviate_segments"
"""The attention function's name in transformers' ``AttentionInterface``."""
LAYOUT_KWARG = "obliviate_segments"
"""The forward keyword argument that carries the :class:`SegmentLayout` to the attention."""
ARCHITECTURES = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3",
                           "qwen3_moe", "phi3", "olmo", "olmo2", "smollm3", "granite"})
"""``config.model_type`` of the decoders whose attention function receives the rotated queries
and keys and computes ``softmax(q·kᵀ·scaling + mask)·v``, nothing more."""
DEVICE_TYPES = frozenset({"cpu"})
"""Devices where it was measured faster than the dense mask (BENCHMARKS.md). On a GPU, sdpa's
fused kernels run a ~500-token row's dense attention in one launch, against one per example
here; that trade was not measured, so GPUs keep the dense mask."""
_DENSE = ("sdpa", "eager")


@dataclass(frozen=True)
class RowLayout:
    """One packed row: its examples' ``(start, end)`` columns after the prefix, in order, and
    how many padding columns end it."""

    spans: tuple[tuple[int, int], ...]
    padding: int


@dataclass(frozen=True)
class SegmentLayout:
    """Where a packed batch's examples sit: ``prefix`` shared columns at the start of every row,
    then each row's spans. Masks are built once per example length and reused by every layer."""

    prefix: int
    rows: tuple[RowLayout, ...]
    _masks: dict[int, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    def mask(self, length: int, device: torch.device) -> torch.Tensor:
        """``[length, prefix + length]`` (True: attend): every prefix column, then causal."""
        mask = self._masks.get(length)
        if mask is None or mask.device != device:
            mask = torch.ones(length, self.prefix + length, dtype=torch.bool,
                              device=device).tril(self.prefix)
            self._masks[length] = mask
        return mask


def layout(owner: torch.Tensor) -> SegmentLayout:
    """The layout of packed rows from each column's owner (-1: the shared prefix, -2: padding,
    else the example), as :class:`~obliviate.llm.answer_forward.Packing` holds it. A row must
    read prefix, examples, padding, in that order (what ``pack`` builds); anything else is a
    ``ValueError``."""
    rows = []
    prefix: int | None = None
    for values in owner.tolist():
        row_prefix = 0
        while row_prefix < len(values) and values[row_prefix] == -1:
            row_prefix += 1
        if prefix is not None and row_prefix != prefix:
            raise ValueError("packed rows hold shared prefixes of different lengths")
        prefix = row_prefix
        spans, at = [], row_prefix
        while at < len(values) and values[at] >= 0:
            end = at
            while end < len(values) and values[end] == values[at]:
                end += 1
            spans.append((at, end))
            at = end
        if any(v != -2 for v in values[at:]):
            raise ValueError("a packed row is not prefix, examples, padding")
        rows.append(RowLayout(tuple(spans), len(values) - at))
    return SegmentLayout(prefix or 0, tuple(rows))


def segment_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                      value: torch.Tensor, attention_mask: torch.Tensor | None,
                      dropout: float = 0.0, scaling: float | None = None, **kwargs: Any
                      ) -> tuple[torch.Tensor, None]:
    """A transformers attention function: ``query [R, H, L, d]``, ``key``/``value``
    ``[R, H_kv, L, d]`` → ``([R, L, H, d], None)``. With the forward's
    :data:`LAYOUT_KWARG`, attention per example as the module's docstring says; without one,
    transformers' sdpa attention under ``attention_mask``."""
    segments: SegmentLayout | None = kwargs.pop(LAYOUT_KWARG, None)
    if segments is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    groups = query.shape[1] // key.shape[1]
    gqa = {"enable_gqa": True} if groups > 1 else {}
    prefix = segments.prefix
    rows = []
    for r, row in enumerate(segments.rows):
        q, k, v = query[r:r + 1], key[r:r + 1], value[r:r + 1]
        k_prefix, v_prefix = k[:, :, :prefix], v[:, :, :prefix]
        parts = []
        if prefix:
            parts.append(F.scaled_dot_product_attention(
                q[:, :, :prefix], k_prefix, v_prefix, dropout_p=dropout, is_causal=True,
                scale=scaling, **gqa))
        for start, end in row.spans:
            if prefix:
                keys = torch.cat([k_prefix, k[:, :, start:end]], dim=2)
                values = torch.cat([v_prefix, v[:, :, start:end]], dim=2)
                parts.append(F.scaled_dot_product_attention(
                    q[:, :, start:end], keys, values, attn_mask=segments.mask(end - start,
                                                                              q.device),
                    dropout_p=dropout, scale=scaling, **gqa))
            else:
                parts.append(F.scaled_dot_product_attention(
                    q[:, :, start:end], k[:, :, start:end], v[:, :, start:end],
                    dropout_p=dropout, is_causal=True, scale=scaling, **gqa))
        if row.padding:  # a padding column attends to itself alone: its own value
            parts.append(v[:, :, -row.padding:].repeat_interleave(groups, dim=1))
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, segment_attention)


def applies(model: torch.nn.Module) -> bool:
    """Whether :func:`segments` runs ``model`` (the transformers model itself, unwrapped)
    per example: a listed architecture on a listed device, sdpa or eager attention, no
    activation checkpointing."""
    config = getattr(model, "config", None)
    weight = next(model.parameters(), None)
    if weight is None or weight.device.type not in DEVICE_TYPES:
        return False
    if getattr(config, "model_type", None) not in ARCHITECTURES:
        return False
    if getattr(config, "_attn_implementation", None) not in _DENSE:
        return False
    return not any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


@contextmanager
def segments(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, ``model`` (unwrapped, one that :func:`applies`) attends with
    :func:`segment_attention`; its attention implementation is restored on leaving, also on
    an error."""
    _register()
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
