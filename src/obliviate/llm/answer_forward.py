"""Running a causal LM for the log-probs of answer tokens: what training and unlearning compute.

Two savings, both exact in arithmetic (floating-point sums may differ in the last bits):

* **The LM head only where an answer token is predicted.** A fifth of SmolLM2's compute per
  token is its 49k-row head; prompt positions carry no label, so their logits are never used.
* **A prefix shared by every row runs once.** A chat model's batch starts with the same system
  prompt and template tokens in every row (24 of SmolLM2's ~100 tokens per TOFU example). Causal
  attention makes those positions' states identical across rows, so they are computed for one
  row, their keys and values repeated over the batch, and the rest of every row attends to them.
  The backward pass sums the rows' gradients through the repeat, which is what the batch would
  have summed.

The shared prefix is used when the model can continue from a key/value cache (a transformers
model with ``past_key_values``), no dropout is active (one row's dropout mask would stand for
all rows) and gradient checkpointing is off (transformers turns the cache off under it).
Otherwise the whole batch runs in one forward, as before.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

from obliviate.llm.data.formatting import IGNORE_INDEX

MIN_SHARED_PREFIX = 8
"""Shorter common prefixes run with the batch: a second forward call costs more than it saves."""


def forward(model: torch.nn.Module, batch: dict[str, torch.Tensor], **kwargs: Any) -> Any:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions ``j`` whose logits predict an answer token (``labels[:, j + 1]``) in some row."""
    return (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)


def shared_prefix_length(batch: dict[str, torch.Tensor], keep: torch.Tensor) -> int:
    """Length of the leading tokens every row shares, unpadded and before any kept position.

    0 when the batch has one row, when rows differ from the first token (left padding, base
    prompts) or when the common run is shorter than :data:`MIN_SHARED_PREFIX`.
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if ids.shape[0] < 2 or keep.numel() == 0:
        return 0
    same = (ids == ids[:1]).all(dim=0) & (mask == 1).all(dim=0)
    length = int(same.long().cumprod(dim=0).sum())
    length = min(length, int(keep.min()), ids.shape[1] - 1)  # the kept logits follow the prefix
    return length if length >= MIN_SHARED_PREFIX else 0


@functools.lru_cache(maxsize=64)
def cache_keyword(cls: type) -> str | None:
    """The keyword a model class's forward takes its KV cache under: ``cache`` since
    transformers 5.2x, ``past_key_values`` before; ``None`` when it takes neither."""
    try:
        params = inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    return "past_key_values" if any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()) else None


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a DDP/FSDP wrapper (``.module``) or a peft model."""
    inner = getattr(model, "module", model)
    get_base = getattr(inner, "get_base_model", None)
    return get_base() if callable(get_base) else inner


def _checkpointing(model: torch.nn.Module) -> bool:
    """Whether transformers' activation (gradient) checkpointing is on."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # v5, v4
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def _can_share(model: torch.nn.Module) -> bool:
    """The model continues from a cache and nothing random or recomputing is active."""
    inner = _unwrapped(model)
    if cache_keyword(type(inner)) is None:
        return False
    if _checkpointing(inner):
        return False
    if model.training:
        if any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0
               for m in model.modules()):
            return False
        config = getattr(inner, "config", None)
        if any(float(getattr(config, key, 0.0) or 0.0) > 0
               for key in ("attention_dropout", "hidden_dropout", "dropout")):
            return False
    return True


def _keep_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor], keep: torch.Tensor,
                 **kwargs: Any) -> torch.Tensor:
    """Logits at ``keep`` through ``logits_to_keep`` (or sliced from full logits)."""
    try:
        logits = forward(model, batch, logits_to_keep=keep, **kwargs).logits
    except TypeError:  # a model whose forward has no logits_to_keep
        logits = forward(model, batch, **kwargs).logits[:, keep]
    if logits.shape[1] != keep.numel():  # ignored the argument: full logits came back
        logits = logits[:, keep]
    return logits


def _prefix_shared_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                          keep: torch.Tensor, prefix: int) -> torch.Tensor | None:
    """Logits at ``keep`` with the ``prefix`` tokens run for one row; ``None`` when the model
    returned no cache (then the caller runs the batch whole)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    head = model(input_ids=ids[:1, :prefix], attention_mask=mask[:1, :prefix], use_cache=True,
                 logits_to_keep=1)
    cache = getattr(head, "cache", None)
    if cache is None:
        cache = getattr(head, "past_key_values", None)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None
    cache.batch_repeat_interleave(ids.shape[0])
    rest = {"input_ids": ids[:, prefix:], "attention_mask": mask}
    keyword = cache_keyword(type(_unwrapped(model))) or "past_key_values"
    return _keep_logits(model, rest, keep - prefix, use_cache=True, **{keyword: cache})


def answer_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits only where an answer token is predicted, aligned with their labels.

    Returns ``(logits [B, K, V], labels [B, K])``; K counts the positions that predict an answer
    token in some row. A prefix every row shares runs once (see the module's docstring).
    """
    labels = batch["labels"]
    keep = answer_positions(labels)
    prefix = shared_prefix_length(batch, keep)
    logits = None
    if prefix and _can_share(model):
        logits = _prefix_shared_logits(model, batch, keep, prefix)
    if logits is None:
        logits = _keep_logits(model, batch, keep)
    return logits, labels[:, keep + 1]
