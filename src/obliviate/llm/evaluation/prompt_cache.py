"""Prompt key/value caches shared by the answer scorer and the greedy generator.

Both run every prompt once into a KV cache, the same way (:func:`prefill`):

* the prefix that all prompts of a batch share (a chat template's system prompt and template
  tokens) runs once, as one row (:class:`PrefixCache` keeps it for later batches);
* the rest of each prompt runs in length-sorted sub-batches, left-padded, attending to that
  prefix; the caches are merged per row right-aligned: ``[shared | padding | rest of prompt]``,
  with a boolean mask of the real positions. Position ids are each token's position in its own
  prompt, so padding never shifts a row.

Tokens that come after the prompts (scored answers, generated tokens) attend to a row's real
cached positions through an additive 4-D mask (:func:`prefix_mask`); appended at the same column
for every row, they keep the layout right-aligned. The language-model head is not part of the
body: callers apply it only to the positions whose logits they need.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from obliviate.llm.answer_forward import cache_keyword, float_dtype, takes_custom_masks

MIN_SHARED_PREFIX = 4
"""A common prefix shorter than this is not split off (the extra call would cost more)."""
_LOGIT_MODIFIERS = ("final_logit_softcapping", "logit_scale", "logits_scaling")

KV = list[tuple[torch.Tensor, torch.Tensor]]
Account = Callable[[int, int, int, int], None]
"""``account(forward tokens, padding tokens, head positions, rows)``."""


# -- model plumbing --------------------------------------------------------------------------------
def body_and_head(model: Any) -> tuple[Any, Any] | None:
    """The transformer body and a plain linear LM head, if the model's logits are just
    ``head(hidden)`` (no soft-capping or scaling); else ``None``."""
    config = getattr(model, "config", None)
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in _LOGIT_MODIFIERS):
        return None
    try:
        head = model.get_output_embeddings()
        body = model.get_decoder()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    if not isinstance(head, torch.nn.Linear) or body is None or body is model:
        return None
    if sharded(model) or not _plain_weight(head):
        return None
    return body, head


def sharded(model: Any) -> bool:
    """Whether FSDP shards ``model`` (FSDP2's ``fully_shard`` or FSDP1 wrappers anywhere in it):
    its parameters are gathered only inside its own forward, so the body and the head cannot be
    run apart (the body's embedding would meet a sharded weight)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")  # not imported: nothing can be wrapped
    if fsdp is None:
        return False
    kinds = tuple(k for k in (getattr(fsdp, "FSDPModule", None),
                              getattr(fsdp, "FullyShardedDataParallel", None)) if k is not None)
    return bool(kinds) and any(isinstance(m, kinds) for m in model.modules())


def _plain_weight(head: torch.nn.Linear) -> bool:
    """A head weight the scorer can slice: a whole local tensor (not a DTensor shard, nor a
    DeepSpeed ZeRO-3 partition, whose local shape is empty)."""
    weight = head.weight
    return type(weight.data) is torch.Tensor and tuple(weight.shape) == (head.out_features,
                                                                          head.in_features)


def run_body(body: Any, ids: torch.Tensor, positions: torch.Tensor,
             mask: torch.Tensor | None = None, cache: Any = None) -> tuple[torch.Tensor, Any]:
    """``(last hidden states, cache)`` of the body on ``ids`` after ``cache`` (``None``: empty).

    The cache goes in under the keyword the model takes (``cache`` since transformers 5.2x,
    ``past_key_values`` before) and comes back as the model returns it.
    """
    kwargs: dict[str, Any] = {"input_ids": ids, "position_ids": positions, "use_cache": True}
    if mask is not None:
        kwargs["attention_mask"] = mask
    if cache is not None:
        kwargs[cache_keyword(type(body)) or "past_key_values"] = cache
    out = body(**kwargs)
    returned = getattr(out, "cache", None)
    if returned is None:
        returned = out.past_key_values
    return out.last_hidden_state, returned


def cache_kv(cache: Any) -> KV:
    """Per-layer ``(keys, values)`` of a transformers KV cache (v5 layers or v4 lists)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache, strict=True))
    return [(k, v) for k, v in cache]


def make_cache(kv: KV) -> Any:
    """A ``DynamicCache`` holding ``kv`` (per-layer keys and values, ``[rows, heads, T, dim]``)."""
    from transformers import DynamicCache

    try:
        return DynamicCache(ddp_cache_data=kv)
    except TypeError:  # transformers 4.x
        return DynamicCache.from_legacy_cache(tuple(kv))


def buffered_cache(kv: KV, capacity: int) -> Any:
    """A ``DynamicCache`` whose layers hold ``kv`` in buffers of ``capacity`` positions and write
    each new token in place, where ``DynamicLayer`` concatenates (a copy of the whole cache per
    decoding step). Rows can be dropped with ``batch_select_indices``. Falls back to a plain
    ``DynamicCache`` on transformers versions without cache layers."""
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return make_cache(kv)

    class BufferedLayer(DynamicLayer):
        def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
            super().__init__()
            n, heads, length, dim = keys.shape
            self.buffers = [keys.new_empty((n, heads, capacity, dim)),
                            values.new_empty((n, heads, capacity, values.shape[-1]))]
            self.buffers[0][:, :, :length] = keys
            self.buffers[1][:, :, :length] = values
            self.length = length
            self.device = keys.device
            self.is_initialized = True
            self._view()

        def _view(self) -> None:
            self.keys = self.buffers[0][:, :, :self.length]
            self.values = self.buffers[1][:, :, :self.length]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            end = self.length + key_states.shape[-2]
            if end > capacity:
                raise RuntimeError(f"buffered KV cache full ({capacity} positions)")
            self.buffers[0][:, :, self.length:end] = key_states
            self.buffers[1][:, :, self.length:end] = value_states
            self.length = end
            self._view()
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self.buffers = [keep_rows(b, indices) for b in self.buffers]
            self._view()

    cache = DynamicCache()
    cache.layers = [BufferedLayer(k, v) for k, v in kv]
    return cache


def keep_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x.index_select(0, index)``, computed in ``x``'s own storage: only the rows that change
    place are copied (rows removed near the front are refilled from the back), and the result
    is a view of ``x``'s first ``len(index)`` rows. ``x`` is overwritten."""
    moved = (index != torch.arange(len(index), device=index.device)).nonzero().flatten()
    if len(moved):
        x[moved] = x[index[moved]]
    return x[:len(index)]


# -- masks and batching ---------------------------------------------------------------------------
def prefix_mask(prefix: torch.Tensor, valid: torch.Tensor, dtype: torch.dtype,
                tree: torch.Tensor | None = None) -> torch.Tensor:
    """Additive ``[batch, 1, A, P + A]`` mask for ``A`` new tokens after ``P`` cached ones.

    ``prefix[b, j]`` marks real (not padding) cached tokens, ``valid[b, i]`` real new tokens; a
    new token sees the real cached tokens and, causally, the real new tokens (or, with
    ``tree[b, i, j]``, the new tokens ``j`` it marks: a token tree's ancestors); padding sees
    only itself (no row is fully masked, so no NaN).
    """
    n, p = prefix.shape
    a = valid.shape[1]
    if tree is None:
        idx = torch.arange(a, device=valid.device)
        tree = (idx[None, :] <= idx[:, None])[None]
    new = tree & valid[:, None, :] & valid[:, :, None]
    new |= torch.eye(a, dtype=torch.bool, device=valid.device)[None]
    old = prefix[:, None, :].expand(n, a, p) & valid[:, :, None]
    allowed = torch.cat([old, new], dim=2)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=valid.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix shared by all ``prompts``."""
    first = prompts[0]
    n = min(len(p) for p in prompts)
    for i in range(n):
        token = first[i]
        if any(p[i] != token for p in prompts):
            return i
    return n


def length_batches(lengths: Sequence[int], max_rows: int, batch_tokens: int,
                   call_cost: int = 16) -> list[list[int]]:
    """Indices grouped into batches, longest first, of at most ``max_rows`` rows and
    ``batch_tokens`` padded tokens (a single longer row is allowed).

    The sorted rows are split into contiguous batches minimising padded tokens plus
    ``call_cost`` per call (a dynamic programme over split points; a batch's width is its first
    row's length)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    for start in range(n):
        width = lengths[order[start]]
        for end in range(start + 1, min(n, start + max_rows) + 1):
            if end - start > 1 and width * (end - start) > batch_tokens:
                break
            cost = best[start] + width * (end - start) + call_cost
            if cost < best[end]:
                best[end], cut[end] = cost, start
    batches: list[list[int]] = []
    end = n
    while end > 0:
        batches.append(order[cut[end]:end])
        end = cut[end]
    return batches[::-1]


# -- prompts into a cache -------------------------------------------------------------------------
class PrefixCache:
    """Keys and values of shared prompt prefixes (one row each), computed once per model state.

    :meth:`get` returns the cache of a prefix, extending the longest stored prefix of it when
    there is one, so a system prompt runs once however many batches start with it.
    """

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple[int, ...], KV] = {}

    def get(self, body: Any, ids: Sequence[int], account: Account | None = None) -> KV:
        key = tuple(ids)
        if key in self._entries:
            return self._entries[key]
        base = max((p for p in self._entries if len(p) < len(key) and key[:len(p)] == p),
                   key=len, default=())
        device = next(body.parameters()).device
        rest = torch.tensor([key[len(base):]], dtype=torch.long, device=device)
        positions = torch.arange(len(base), len(key), device=device)[None]
        past = make_cache(self._entries[base]) if base else None
        if account is not None:
            account(len(key) - len(base), 0, 0, 1)
        _, cache = run_body(body, rest, positions, cache=past)
        kv = cache_kv(cache)
        if len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = kv
        return kv

    def clear(self) -> None:
        self._entries.clear()


@dataclass
class PromptStates:
    """A batch of prompts run into a KV cache (see the module docstring for the layout)."""

    kv: KV
    """Per layer ``(keys, values)``, ``[rows, kv heads, width, head dim]``."""
    valid: torch.Tensor
    """``[rows, width]``: True where a real prompt token was cached."""
    lengths: list[int]
    """Each prompt's length: the position id of the token that follows it."""
    last: torch.Tensor
    """``[rows, hidden]``: the final hidden state at each prompt's last token (the LM head of
    it predicts the first token after the prompt)."""

    def select(self, rows: Sequence[int]) -> PromptStates:
        index = torch.tensor(list(rows), dtype=torch.long, device=self.valid.device)
        return PromptStates(kv=[(k.index_select(0, index), v.index_select(0, index))
                                for k, v in self.kv],
                            valid=self.valid.index_select(0, index),
                            lengths=[self.lengths[r] for r in rows],
                            last=self.last.index_select(0, index))


def merge_states(parts: Sequence[PromptStates]) -> PromptStates:
    """One batch of the rows of ``parts``, each padded (zeros, masked) to the widest.

    The leading columns that are real in every row of every part (a shared prompt prefix) stay
    in front and the padding goes after them, so the prefix fills the same columns in every
    row, where decoding attends to it once for the batch
    (:func:`~obliviate.llm.evaluation.llama_steps.shared_prefix`)."""
    if len(parts) == 1:
        return parts[0]
    width = max(p.valid.shape[1] for p in parts)
    lead = min(int(p.valid.all(dim=0).long().cumprod(0).sum()) for p in parts)

    def padded(x: torch.Tensor, dim: int, fill: Any) -> torch.Tensor:
        missing = width - x.shape[dim]
        if not missing:
            return x
        shape = list(x.shape)
        shape[dim] = missing
        return torch.cat([x.narrow(dim, 0, lead), x.new_full(shape, fill),
                          x.narrow(dim, lead, x.shape[dim] - lead)], dim=dim)

    kv = [(torch.cat([padded(p.kv[layer][0], 2, 0.0) for p in parts]),
           torch.cat([padded(p.kv[layer][1], 2, 0.0) for p in parts]))
          for layer in range(len(parts[0].kv))]
    return PromptStates(kv=kv, valid=torch.cat([padded(p.valid, 1, False) for p in parts]),
                        lengths=[n for p in parts for n in p.lengths],
                        last=torch.cat([p.last for p in parts]))


def kv_bytes_per_token(model: Any) -> int:
    """Bytes of keys and values one token adds to the cache (0 when the config does not say)."""
    config = getattr(model, "config", None)
    try:
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        layers = config.num_hidden_layers
    except (AttributeError, TypeError, ZeroDivisionError):
        return 0
    return int(2 * layers * kv_heads * head_dim * torch.finfo(float_dtype(model)).bits // 8)


def prefill(body: Any, prompts: Sequence[Sequence[int]], pad_id: int, batch_tokens: int,
            dtype: torch.dtype, prefixes: PrefixCache | None = None,
            account: Account | None = None) -> PromptStates:
    """Run non-empty ``prompts`` into one right-aligned KV cache (module docstring).

    The prefix all prompts share (when at least :data:`MIN_SHARED_PREFIX` tokens and shorter
    than every prompt) runs once, or comes from ``prefixes``; the rest of the prompts runs in
    length-sorted, left-padded sub-batches of at most ``batch_tokens`` tokens.
    """
    device = next(body.parameters()).device
    n = len(prompts)
    shared = common_prefix(prompts) if n > 1 else 0
    shared = min(shared, min(len(p) for p in prompts) - 1)
    shared = shared if shared >= MIN_SHARED_PREFIX else 0
    past: KV | None = None
    past_valid = torch.ones((n, shared), dtype=torch.bool, device=device)
    if shared:
        store = prefixes if prefixes is not None else PrefixCache()
        past = [(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1))
                for k, v in store.get(body, prompts[0][:shared], account)]
    width = max(len(p) for p in prompts) - shared
    rest = [len(p) - shared for p in prompts]
    valid = torch.zeros((n, width), dtype=torch.bool)
    for r, k in enumerate(rest):
        valid[r, width - k:] = True
    valid = valid.to(device)
    kv: KV = []
    last = torch.empty(0)
    for sub in length_batches(rest, max_rows=n, batch_tokens=batch_tokens):
        w, s = rest[sub[0]], len(sub)
        ids = torch.full((s, w), pad_id, dtype=torch.long)
        sub_valid = torch.zeros((s, w), dtype=torch.bool)
        pos = torch.zeros((s, w), dtype=torch.long)
        for i, r in enumerate(sub):
            ids[i, w - rest[r]:] = torch.tensor(list(prompts[r][shared:]), dtype=torch.long)
            sub_valid[i, w - rest[r]:] = True
            pos[i, w - rest[r]:] = torch.arange(shared, len(prompts[r]))
        sub_valid = sub_valid.to(device)
        if account is not None:
            account(s * w, int((~sub_valid).sum()), 0, s)
        sub_past = [(k[:s], v[:s]) for k, v in past] if past else None
        hidden, cache = run_body(body, ids.to(device), pos.to(device),
                                 mask=prefix_mask(past_valid[:s], sub_valid, dtype),
                                 cache=make_cache(sub_past) if sub_past else None)
        rows = torch.tensor(sub, dtype=torch.long, device=device)
        if not kv:
            last = hidden.new_empty((n, hidden.shape[-1]))
        for layer, (k, v) in enumerate(cache_kv(cache)):
            if len(kv) <= layer:
                shape = (n, k.shape[1], shared + width, k.shape[3])
                kv.append((k.new_zeros(shape), v.new_zeros(shape)))
            full_k, full_v = kv[layer]
            full_k[rows, :, :shared] = k[:, :, :shared]
            full_v[rows, :, :shared] = v[:, :, :shared]
            full_k[rows, :, shared + width - w:] = k[:, :, shared:]
            full_v[rows, :, shared + width - w:] = v[:, :, shared:]
        last[rows] = hidden[:, -1]
    return PromptStates(kv=kv, valid=torch.cat([past_valid, valid], dim=1),
                        lengths=[len(p) for p in prompts], last=last)


__all__ = ["MIN_SHARED_PREFIX", "PrefixCache", "PromptStates", "body_and_head", "buffered_cache",
           "cache_kv", "common_prefix", "float_dtype", "keep_rows", "kv_bytes_per_token",
           "length_batches",
           "make_cache", "merge_states", "prefill", "prefix_mask", "run_body",
           "takes_custom_masks"]
