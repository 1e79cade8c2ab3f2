"""Greedy decoding steps of Llama-architecture models, computed here instead of by transformers.

A decoding step puts one new token per row through the model. For the Llama architecture
(Touvron et al. 2023: RMSNorm, rotary positions, grouped-query attention, a SwiGLU MLP;
SmolLM2 is one) this module runs that step with the model's own weights, modules and rotary
embedding, and differs from the transformers forward only in how attention reads the cache:

* **cascade attention over the shared prefix** (the shared-prefix decomposition of FlashInfer,
  Ye et al. 2025): the keys and values of the prompt prefix every
  row shares (the chat template's system prompt) are stored once, not once per row; every row's
  queries meet them in one matrix multiply per key/value head (``[rows x groups, dim] @
  [dim, prefix]``), and the scores join each row's own scores (the rest of its prompt and its
  generated tokens) before one softmax, so the result is exact attention over the whole row;
* **grouped-query attention without copies**: the query heads of a key/value head are a small
  matrix multiplied with that head's keys (no ``repeat_kv``);
* **a preallocated cache**: each step writes its keys and values at one column of buffers sized
  for the whole generation, and no attention mask is rebuilt per step.

:func:`llama_steps` returns ``None`` for anything else (another architecture, LoRA-wrapped or
hooked projections, a non-SiLU activation, an attention kernel other than eager or sdpa), and
the caller steps through the model's forward instead. Outputs match ``model.generate``'s tokens
(the tests compare them on a random grouped-query Llama; BENCHMARKS.md on SmolLM2's TOFU
answers).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from obliviate.llm.evaluation.prompt_cache import keep_rows

_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


def llama_steps(body: Any, kv: list[tuple[torch.Tensor, torch.Tensor]], valid: torch.Tensor,
                steps: int) -> LlamaSteps | None:
    """Decoding steps for a Llama body whose prompts' caches are ``kv`` (per layer ``[rows,
    kv heads, width, dim]``) with real positions ``valid`` (``[rows, width]``), room for
    ``steps`` more tokens; ``None`` when the body is not a plain Llama."""
    if not _plain_llama(body):
        return None
    return LlamaSteps(body, kv, valid, steps)


def hooked(module: Any) -> bool:
    """Whether running ``module``'s weights directly would skip something its forward does: a
    forward hook on it or a submodule (a user's, or accelerate's ``_hf_hook`` that moves a
    device-mapped or offloaded layer's weights in), or a global module hook."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or hasattr(m, "_hf_hook")
               for m in module.modules())


def _plain_llama(body: Any) -> bool:
    if hooked(body):
        return False
    config = getattr(body, "config", None)
    if getattr(config, "model_type", None) != "llama":
        return False
    if getattr(config, "_attn_implementation", "eager") not in ("eager", "sdpa"):
        return False
    if getattr(config, "hidden_act", None) != "silu" or getattr(config, "pretraining_tp", 1) != 1:
        return False
    layers = getattr(body, "layers", None)
    if not layers or not all(hasattr(body, name) for name in ("embed_tokens", "norm",
                                                               "rotary_emb")):
        return False
    for layer in layers:
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        modules = ([getattr(attn, name, None) for name in _PROJECTIONS]
                   + [getattr(mlp, name, None) for name in _MLP])
        # exactly nn.Linear: LoRA, quantised or hooked projections take the model's forward
        if any(type(m) is not torch.nn.Linear or m._forward_hooks or m._forward_pre_hooks
               for m in modules):
            return False
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            if not hasattr(norm, "variance_epsilon"):
                return False
    return hasattr(body.norm, "variance_epsilon")


def shared_prefix(kv: list[tuple[torch.Tensor, torch.Tensor]], valid: torch.Tensor) -> int:
    """Leading cache columns that are real in every row and hold the same keys and values in
    every row of every layer (a prefix that ran once and was copied to each row)."""
    n = valid.shape[0]
    if n < 2:
        return 0
    columns = int(valid.all(dim=0).long().cumprod(0).sum())
    if columns and all(torch.equal(x[:, :, :columns], x[:1, :, :columns].expand(n, -1, -1, -1))
                       for pair in kv for x in pair):
        return columns
    for keys, values in kv:
        if not columns:
            break
        same = torch.ones(columns, dtype=torch.bool, device=valid.device)
        for x in (keys, values):
            part = x[:, :, :columns]
            same &= (part == part[:1]).all(dim=3).all(dim=1).all(dim=0)
        columns = int(same.long().cumprod(0).sum())
    return columns


def _rms_norm(norm: Any, x: torch.Tensor) -> torch.Tensor:
    """``LlamaRMSNorm`` as transformers computes it (float32 statistics)."""
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaSteps:
    """One decoding step at a time (``__call__``), rows removable between steps (``select``).

    The cache: per layer the shared prefix's keys and values (``[kv heads, prefix, dim]``,
    transposed keys for the score product) and each row's buffers (``[rows, kv heads,
    capacity, dim]``) holding the rest of its prompt and then one column per step, with an
    additive mask (``0`` real, the dtype's minimum for padding) over those columns.
    """

    name = "llama"

    def __init__(self, body: Any, kv: list[tuple[torch.Tensor, torch.Tensor]],
                 valid: torch.Tensor, steps: int) -> None:
        config = body.config
        self.body = body
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.groups = self.heads // self.kv_heads
        self.prefix = shared_prefix(kv, valid)
        n, _, width, self.dim = kv[0][0].shape
        self.scale = getattr(body.layers[0].self_attn, "scaling", self.dim ** -0.5)
        p = self.prefix
        self.prefix_keys = [k[0, :, :p].transpose(1, 2).contiguous() for k, _ in kv]
        self.prefix_values = [v[0, :, :p].contiguous() for _, v in kv]
        self.length = width - p
        capacity = self.length + steps
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        for k, v in kv:
            keys = k.new_empty((n, self.kv_heads, capacity, self.dim))
            values = v.new_empty((n, self.kv_heads, capacity, v.shape[-1]))
            keys[:, :, :self.length] = k[:, :, p:]
            values[:, :, :self.length] = v[:, :, p:]
            self.keys.append(keys)
            self.values.append(values)
        dtype = kv[0][0].dtype
        self.mask = torch.zeros((n, capacity), dtype=dtype, device=valid.device)
        self.mask[:, :self.length].masked_fill_(~valid[:, p:], torch.finfo(dtype).min)

    def select(self, index: torch.Tensor) -> None:
        """Keep the rows ``index`` (in that order; rows that keep their place are not copied)."""
        self.keys = [keep_rows(b, index) for b in self.keys]
        self.values = [keep_rows(b, index) for b in self.values]
        self.mask = keep_rows(self.mask, index)

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Final hidden states ``[rows, hidden]`` of ``tokens`` (``[rows]``) at ``positions``."""
        body = self.body
        x = body.embed_tokens(tokens)
        cos, sin = body.rotary_emb(x, positions[:, None])  # [rows, 1, dim]
        column = self.length
        self.length += 1
        for i, layer in enumerate(body.layers):
            h = _rms_norm(layer.input_layernorm, x)
            x = x + layer.self_attn.o_proj(self._attention(i, layer.self_attn, h, cos, sin,
                                                           column))
            h = _rms_norm(layer.post_attention_layernorm, x)
            mlp = layer.mlp
            x = x + mlp.down_proj(F.silu(mlp.gate_proj(h)) * mlp.up_proj(h))
        return _rms_norm(body.norm, x)

    def _attention(self, i: int, attn: Any, h: torch.Tensor, cos: torch.Tensor,
                   sin: torch.Tensor, column: int) -> torch.Tensor:
        m = h.shape[0]
        q = attn.q_proj(h).view(m, self.heads, self.dim)
        k = attn.k_proj(h).view(m, self.kv_heads, self.dim)
        v = attn.v_proj(h).view(m, self.kv_heads, -1)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        keys, values = self.keys[i], self.values[i]
        keys[:, :, column] = k
        values[:, :, column] = v
        end = column + 1
        q = q.view(m, self.kv_heads, self.groups, self.dim)
        # the row's own columns: [rows, kv heads, groups, end]
        scores = torch.matmul(q, keys[:, :, :end].transpose(2, 3)) * self.scale
        scores = scores + self.mask[:, None, None, :end]
        p = self.prefix
        if p:
            # every row's queries against the one copy of the prefix: [kv heads, rows*groups, P]
            shared = torch.bmm(q.transpose(0, 1).reshape(self.kv_heads, m * self.groups,
                                                         self.dim), self.prefix_keys[i])
            shared = shared.view(self.kv_heads, m, self.groups, p).transpose(0, 1) * self.scale
            scores = torch.cat([shared, scores], dim=3)
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(weights[..., p:], values[:, :, :end])
        if p:
            mixed = weights[..., :p].transpose(0, 1).reshape(self.kv_heads, m * self.groups, p)
            out = out + torch.bmm(mixed, self.prefix_values[i]).view(
                self.kv_heads, m, self.groups, -1).transpose(0, 1)
        return out.reshape(m, -1)


__all__ = ["LlamaSteps", "llama_steps", "shared_prefix"]
