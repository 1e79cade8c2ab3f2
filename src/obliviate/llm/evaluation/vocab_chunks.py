"""Log-probabilities of given tokens through a linear LM head, a slice of the vocabulary at a time.

Scoring an answer needs, per position, the logit of its token and the log-sum-exp over the
whole vocabulary. Computing ``[positions, vocabulary]`` logits at once (49k columns for SmolLM2)
writes a tensor far larger than the CPU's caches, then reads it back for the softmax; a slice of
:data:`VOCAB_CHUNK` columns stays in cache between the matrix multiply and its log-sum-exp. The
values are the same up to float rounding of the final reduction (each logit is the same dot
product; the log-sum-exp is taken slice by slice, then over the slices).
"""

from __future__ import annotations

import torch

VOCAB_CHUNK = 2048
"""Columns of the head computed at once (fastest of 2k/4k/8k/full on the 2-core CPU box)."""


@torch.no_grad()  # not inference_mode: autocast caches weight casts only outside it
def head_token_logprobs(hidden: torch.Tensor, head: torch.nn.Linear, labels: torch.Tensor,
                        vocab_chunk: int | None = None) -> torch.Tensor:
    """``log softmax(head(hidden))[i, labels[i]]`` for each row ``i`` of ``hidden`` ``[N, H]``,
    in float32, without the ``[N, V]`` logits ever existing at once (``vocab_chunk`` columns at
    a time, default :data:`VOCAB_CHUNK`)."""
    vocab_chunk = vocab_chunk or VOCAB_CHUNK
    weight, bias = head.weight, head.bias
    vocab = weight.shape[0]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= vocab):
        raise ValueError(f"labels must index the head's {vocab} rows")
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    partial = []
    picked = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    for start in range(0, vocab, vocab_chunk):
        stop = min(start + vocab_chunk, vocab)
        logits = torch.nn.functional.linear(
            hidden, weight[start:stop], None if bias is None else bias[start:stop]).float()
        partial.append(torch.logsumexp(logits, dim=-1))
        inside = (labels >= start) & (labels < stop)
        if bool(inside.any()):
            picked[inside] = logits[rows[inside], labels[inside] - start]
    return picked - torch.logsumexp(torch.stack(partial, dim=-1), dim=-1)


__all__ = ["VOCAB_CHUNK", "head_token_logprobs"]
