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
import weakref
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
def _forward_parameters(cls: type) -> frozenset[str] | None:
    """Names a model class's forward takes; ``None`` when its signature cannot be read."""
    try:
        params = inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return None
    return frozenset(params)


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


_UNSHAREABLE: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()
"""Models whose cache turned out not to be :func:`shareable_cache`: asked once, not each step."""


def _can_share(model: torch.nn.Module) -> bool:
    """The model continues from a growing key/value cache, and nothing random, recomputing or
    distributed is active (a DDP/FSDP/DeepSpeed wrapper unshards weights around one forward's
    outputs, and the prefix's gradient would flow back through the cache instead)."""
    if hasattr(model, "module"):
        return False
    inner = _unwrapped(model)
    if inner in _UNSHAREABLE or cache_keyword(type(inner)) is None:
        return False
    if _checkpointing(inner):
        return False
    return not (model.training and _random_in_training(inner))


def shareable_cache(cache: Any) -> bool:
    """A cache whose every layer only appends keys and values (transformers' ``DynamicLayer``):
    repeating it over the batch and extending it is differentiable. Sliding-window, static,
    quantised and linear-attention/SSM layers (whose states update in place) are not."""
    from transformers.cache_utils import DynamicCache

    layers = getattr(cache, "layers", None)
    if layers is None:  # transformers 4.x: a DynamicCache holds plain key/value lists
        return type(cache) is DynamicCache
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _keep_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor], keep: torch.Tensor,
                 **kwargs: Any) -> torch.Tensor:
    """Logits at ``keep`` through ``logits_to_keep`` (or sliced from full logits)."""
    params = _forward_parameters(type(_unwrapped(model))) or frozenset()
    if "logits_to_keep" in params:
        logits = forward(model, batch, logits_to_keep=keep, **kwargs).logits
    else:  # a model whose forward has no logits_to_keep
        logits = forward(model, batch, **kwargs).logits
    if logits.shape[1] != keep.numel():  # full logits came back
        logits = logits[:, keep]
    return logits


def _prefix_shared_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                          keep: torch.Tensor, prefix: int) -> torch.Tensor | None:
    """Logits at ``keep`` with the ``prefix`` tokens run for one row; ``None`` when the model
    returned no cache, or one that cannot be repeated and extended differentiably (then the
    caller runs the batch whole, and this model is not asked again)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    head_batch = {"input_ids": ids[:1, :prefix], "attention_mask": mask[:1, :prefix]}
    params = _forward_parameters(type(_unwrapped(model))) or frozenset()
    extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    head = forward(model, head_batch, use_cache=True, **extra)
    cache = getattr(head, "cache", None)
    if cache is None:
        cache = getattr(head, "past_key_values", None)
    if cache is None or not shareable_cache(cache):
        _UNSHAREABLE.add(_unwrapped(model))
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
