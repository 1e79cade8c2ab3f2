"""Running a causal LM for the log-probs of answer tokens: what training and unlearning compute.

Three savings, all exact in arithmetic (floating-point sums may differ in the last bits):

* **The LM head only where an answer token is predicted.** A fifth of SmolLM2's compute per
  token is its 49k-row head; prompt positions carry no label, so their logits are never used.
* **No padding.** A right-padded batch's real tokens are packed end to end into as few rows as
  fit :data:`PACK_WIDTH` tokens, each at its own position id, with a block-diagonal causal mask
  so that a token sees only its own example. A TOFU batch of 8 pads ~80 real tokens per row to
  ~100.
* **A prefix shared by every row runs once.** A chat model's batch starts with the same system
  prompt and template tokens in every row (24 of SmolLM2's ~80 tokens per TOFU example). Causal
  attention makes those positions' states identical across rows, so a packed row holds them
  once and every example in it attends to them. The backward pass sums the examples' gradients
  through them, which is what the batch would have summed.

Packing needs a model that takes a custom 4-D attention mask (eager or sdpa attention, no
sliding window shorter than an example: :func:`takes_custom_masks`) and position ids. The
prefix is shared only when nothing random runs in training (one dropout mask would stand for
every row's prefix). Otherwise the whole batch runs in one forward, as before.

Where the architecture allows it, a packed row's attention runs one example at a time
(:mod:`obliviate.llm.segment_attention`): only the pairs the block-diagonal mask allows.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch

from obliviate.llm import segment_attention
from obliviate.llm.data.formatting import IGNORE_INDEX

PACK_WIDTH = 512
"""Tokens per packed row (or the longest example, if longer). Attention over a packed row is
dense, so much wider rows would spend on masked-out attention what packing saves."""
MIN_SHARED_PREFIX = 1
"""A common prefix at least this long is held once per packed row."""
_MASK_ATTENTION = ("eager", "sdpa")


def forward(model: torch.nn.Module, batch: dict[str, torch.Tensor], **kwargs: Any) -> Any:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions ``j`` whose logits predict an answer token (``labels[:, j + 1]``) in some row."""
    return (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)


def shared_prefix_length(batch: dict[str, torch.Tensor]) -> int:
    """Length of the leading real tokens every row shares.

    0 when the batch has one row, when rows differ from the first token (left padding, base
    prompts) or when the common run is shorter than :data:`MIN_SHARED_PREFIX`.
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if ids.shape[0] < 2:
        return 0
    same = (ids == ids[:1]).all(dim=0) & (mask == 1).all(dim=0)
    length = int(same.long().cumprod(dim=0).sum())
    return length if length >= MIN_SHARED_PREFIX else 0


@functools.lru_cache(maxsize=64)
def _forward_parameters(cls: type) -> frozenset[str] | None:
    """Names a model class's forward takes; ``None`` when its signature cannot be read."""
    try:
        params = inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return None
    return frozenset(params)


@functools.lru_cache(maxsize=64)
def _takes_keywords(cls: type) -> bool:
    """Whether a model class's forward passes on keyword arguments it does not name
    (``**kwargs``): how the packed row's layout reaches every layer's attention."""
    try:
        params = inspect.signature(cls.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def cache_keyword(cls: type) -> str | None:
    """The keyword a model class's forward takes its KV cache under: ``cache`` since
    transformers 5.2x, ``past_key_values`` before; ``None`` when it names neither."""
    params = _forward_parameters(cls)
    if params is None:
        return "past_key_values"
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    return None


def takes_custom_masks(model: Any, max_length: int | None = None) -> bool:
    """Whether the model's attention takes an additive 4-D mask: eager or sdpa attention and no
    sliding window shorter than ``max_length`` (a custom mask replaces the window)."""
    config = getattr(model, "config", None)
    attn = getattr(config, "_attn_implementation", "eager")
    window = getattr(config, "sliding_window", None)
    windowed = bool(window) and getattr(config, "use_sliding_window", True) is not False and (
        max_length is None or window < max_length)
    return attn in _MASK_ATTENTION and not windowed


def float_dtype(model: Any) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (masks are built in it)."""
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a DDP/FSDP wrapper (``.module``) or a peft model."""
    inner = getattr(model, "module", model)
    get_base = getattr(inner, "get_base_model", None)
    return get_base() if callable(get_base) else inner


RANDOM_CONFIG_KEYS = ("dropout", "pdrop", "layerdrop", "jitter")
"""Config entries that make a training forward random (e.g. ``attention_dropout``, GPT-2's
``attn_pdrop``, OPT's ``layerdrop``, Mixtral's ``router_jitter_noise``)."""


def _random_in_training(model: torch.nn.Module) -> bool:
    if any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0
           for m in model.modules()):
        return True
    config = getattr(model, "config", None)
    entries = config.to_dict() if hasattr(config, "to_dict") else dict(
        getattr(config, "__dict__", {}))
    return any(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
               and any(key in name for key in RANDOM_CONFIG_KEYS)
               for name, value in entries.items())


def _can_pack(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> bool:
    """The model takes position ids and a custom 4-D mask for rows as long as the batch's."""
    inner = _unwrapped(model)
    params = _forward_parameters(type(inner))
    if params is None or "position_ids" not in params:
        return False
    if getattr(getattr(inner, "config", None), "_attn_implementation", None) is None:
        return False  # not a transformers model: its masks' convention is unknown
    return takes_custom_masks(inner, int(batch["input_ids"].shape[1]))


@dataclass(frozen=True)
class Packing:
    """A batch's real tokens packed into ``[R, L]`` rows.

    ``owner`` is the example a token belongs to (-1: the shared prefix, -2: padding) and
    ``position`` its column in the batch (its position id); ``source[b, t]`` is where the batch's
    token ``(b, t)`` went, as a flat index ``row * L + column`` (-1: padding, not packed).
    """

    input_ids: torch.Tensor
    owner: torch.Tensor
    position: torch.Tensor
    source: torch.Tensor

    def mask(self, dtype: torch.dtype | None) -> torch.Tensor:
        """``[R, 1, L, L]``: a token sees, causally, the prefix and its own example; padding sees
        only itself. Boolean (True: attend) for ``dtype=None``, else additive in ``dtype``."""
        owner, position = self.owner, self.position
        q_owner, k_owner = owner[:, :, None], owner[:, None, :]
        allowed = (position[:, None, :] <= position[:, :, None]) & (k_owner >= -1) & (
            (k_owner == q_owner) | (k_owner == -1)) & (q_owner >= -1)
        allowed |= torch.eye(owner.shape[1], dtype=torch.bool, device=owner.device)
        if dtype is None:
            return allowed[:, None]
        additive = torch.zeros(allowed.shape, dtype=dtype, device=owner.device)
        return additive.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def pack(batch: dict[str, torch.Tensor], prefix: int, width: int | None = None) -> Packing:
    """Pack the real tokens of ``batch`` into as few rows as hold ``max(width, longest example)``
    tokens each on average (``width``: :data:`PACK_WIDTH`), the examples spread longest first
    over the least filled row; each row holds the ``prefix`` every example shares once, then
    its examples' other tokens in batch order."""
    ids, real = batch["input_ids"], batch["attention_mask"].bool()
    columns = [row.nonzero().squeeze(-1) for row in real]
    rest = [c[prefix:] for c in columns]
    cap = max(width or PACK_WIDTH, max(len(c) for c in columns)) - prefix
    count = min(len(rest), max(1, math.ceil(sum(len(c) for c in rest) / max(cap, 1))))
    bins: list[list[int]] = [[] for _ in range(count)]
    loads = [0] * count
    for b in sorted(range(len(rest)), key=lambda i: -len(rest[i])):  # longest first, least load
        least = loads.index(min(loads))
        bins[least].append(b)
        loads[least] += len(rest[b])
    bins = sorted(sorted(group) for group in bins if group)
    length = max(prefix + sum(len(rest[b]) for b in group) for group in bins)
    shape = (len(bins), length)
    packed = torch.zeros(shape, dtype=ids.dtype)  # padding: token 0 at position 0
    owner = torch.full(shape, -2, dtype=torch.long)
    position = torch.zeros(shape, dtype=torch.long)
    source = torch.full(ids.shape, -1, dtype=torch.long)
    for r, group in enumerate(bins):
        packed[r, :prefix] = ids[group[0], :prefix]
        owner[r, :prefix] = -1
        position[r, :prefix] = torch.arange(prefix)
        at = prefix
        for b in group:
            cols = rest[b]
            packed[r, at:at + len(cols)] = ids[b, cols]
            owner[r, at:at + len(cols)] = b
            position[r, at:at + len(cols)] = cols
            source[b, :prefix] = r * length + torch.arange(prefix)
            source[b, cols] = r * length + torch.arange(at, at + len(cols))
            at += len(cols)
    device = ids.device
    return Packing(packed.to(device), owner.to(device), position.to(device), source.to(device))


def _logits_at(model: torch.nn.Module, inputs: dict[str, Any], keep: torch.Tensor
               ) -> torch.Tensor:
    """Logits of ``model(**inputs)`` at positions ``keep``: through ``logits_to_keep`` when the
    forward takes it, else sliced from the full logits."""
    if "logits_to_keep" in (_forward_parameters(type(_unwrapped(model))) or frozenset()):
        inputs = {**inputs, "logits_to_keep": keep}
    logits = model(**inputs).logits
    if logits.shape[1] != keep.numel():  # full logits came back
        logits = logits[:, keep]
    return logits


def _keep_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor], keep: torch.Tensor
                 ) -> torch.Tensor:
    """Logits at ``keep`` of the padded batch run whole."""
    return _logits_at(model, {"input_ids": batch["input_ids"],
                              "attention_mask": batch["attention_mask"]}, keep)


def _packed_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor], keep: torch.Tensor,
                   prefix: int, rows: torch.Tensor, ks: torch.Tensor) -> torch.Tensor | None:
    """Logits ``[N, V]`` at the batch positions ``(rows, keep[ks])``, from one forward over the
    packed batch. ``None`` when one of them is padding (nothing there to pack)."""
    inner = _unwrapped(model)
    packing = pack(batch, prefix)
    flat = packing.source[rows, keep[ks]]
    if bool((flat < 0).any()):
        return None
    length = packing.input_ids.shape[1]
    packed_row, column = flat // length, flat % length
    columns = torch.unique(column)  # sorted
    attention = getattr(inner.config, "_attn_implementation", "eager")
    inputs = {"input_ids": packing.input_ids, "position_ids": packing.position,
              "attention_mask": packing.mask(None if attention == "sdpa" else float_dtype(inner))}
    per_example = _takes_keywords(type(model)) and segment_attention.applies(inner)
    if per_example:
        inputs[segment_attention.LAYOUT_KWARG] = segment_attention.layout(packing.owner)
    with segment_attention.segments(inner) if per_example else contextlib.nullcontext():
        logits = _logits_at(model, inputs, columns)
    return logits[packed_row, torch.searchsorted(columns, column)]


@dataclass(frozen=True)
class LabelLogits:
    """The logits at the positions that predict an answer token of their own row, and where
    those positions sit in the ``[B, K]`` grid of :func:`answer_logits` (K: positions that
    predict an answer token in some row)."""

    logits: torch.Tensor
    """``[N, V]``, one row per answer token of the batch"""
    rows: torch.Tensor
    """``[N]``: the batch row of each"""
    ks: torch.Tensor
    """``[N]``: its column in the ``[B, K]`` grid"""
    labels: torch.Tensor
    """``[B, K]``: the answer token each grid position predicts (-100 where none)"""

    @property
    def targets(self) -> torch.Tensor:
        """``[N]``: the token each logits row predicts."""
        return self.labels[self.rows, self.ks]

    def grid(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (``[N, ...]``) placed in the ``[B, K, ...]`` grid, zeros elsewhere."""
        out = values.new_zeros((*self.labels.shape, *values.shape[1:]))
        return out.index_put((self.rows, self.ks), values)


def label_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> LabelLogits:
    """The logits that predict each answer token, and nothing else.

    The batch is packed and a prefix every row shares runs once (see the module's docstring);
    the LM head runs only where an answer token is predicted. A loss over answer tokens needs
    only these rows: a softmax over the ``[B, K]`` grid would also run on the entries that
    predict none of their row's tokens.
    """
    labels = batch["labels"]
    keep = answer_positions(labels)
    grid = labels[:, keep + 1]
    rows, ks = (grid != IGNORE_INDEX).nonzero(as_tuple=True)
    logits = None
    if keep.numel() and _can_pack(model, batch):
        random = model.training and _random_in_training(_unwrapped(model))
        prefix = 0 if random else shared_prefix_length(batch)
        logits = _packed_logits(model, batch, keep, prefix, rows, ks)
    if logits is None:
        logits = _keep_logits(model, batch, keep)[rows, ks]
    return LabelLogits(logits, rows, ks, grid)


def answer_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits only where an answer token is predicted, aligned with their labels.

    Returns ``(logits [B, K, V], labels [B, K])``; K counts the positions that predict an answer
    token in some row, and a row's entries that predict none of its own tokens are zeros
    (:func:`label_logits` in the grid).
    """
    out = label_logits(model, batch)
    return out.grid(out.logits), out.labels


def row_answer_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each row's mean answer cross-entropy, ``[B]`` (0 for a row without answer tokens): what
    :func:`~obliviate.llm.data.formatting.answer_nll` computes from the full logits, from
    :func:`label_logits` (packed, the LM head on answer positions only)."""
    out = label_logits(model, batch)
    token = torch.nn.functional.cross_entropy(out.logits.float(), out.targets, reduction="none")
    counts = (out.labels != IGNORE_INDEX).sum(-1).clamp_min(1)
    return out.grid(token).sum(-1) / counts
