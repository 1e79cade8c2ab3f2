"""Greedy generation at the speed of the hardware: every LLM text obliviate generates goes here.

TOFU's ROUGE answers, memorisation and extraction probes, the attacks' forget probes and
rephrasings, MUSE's VerbMem/KnowMem continuations. TOFU (Maini et al. 2024,
``evaluate_util.run_generation``) and OpenUnlearning generate greedily with HF ``generate`` on
left-padded batches and decode only the new tokens with ``skip_special_tokens=True``; the outputs
here are the same tokens (greedy decoding, tested against ``model.generate``), computed with less
work:

* **shared prefixes once**: the prefix all prompts of a batch share (SmolLM2's chat template puts
  its default system prompt and template tokens before every question) runs once, as one row,
  and its keys and values serve every row (:class:`~obliviate.llm.evaluation.prompt_cache.
  PrefixCache`); the rest of each prompt runs in length-sorted sub-batches under a token
  budget, so padding is a few percent;
* **one prefill per evaluation**: :meth:`AnswerScorer.score(..., generate=...)
  <obliviate.llm.evaluation.scorer.AnswerScorer.score>` continues greedily from the KV cache the
  scorer already built for a question's prompt;
* **finished rows leave the batch**: a row that emits an end token, reaches its own budget or
  completes a stop string is dropped before the next step (its cache rows too: a row from the
  back of the batch moves into its place, so nothing else is copied);
* **the LM head at the last position only**, its argmax a vocabulary slice at a time
  (:func:`greedy_tokens`), and new keys and values written in place into preallocated buffers
  (:func:`~obliviate.llm.evaluation.prompt_cache.buffered_cache`) where ``DynamicCache`` copies
  the whole cache at every step;
* **Llama-architecture decoding steps without the transformers forward**
  (:mod:`~obliviate.llm.evaluation.llama_steps`): the shared prefix's keys and values held once
  for the whole batch (cascade attention), grouped-query attention without copies, no mask
  rebuilt per step. Other architectures and LoRA-wrapped projections step through the model's
  own forward.

API, for callers that generate (MUSE VerbMem/KnowMem, attacks, probes)::

    texts = greedy_generate(model, tokenizer, fmt, questions, max_new_tokens=48)
    ids = greedy_generate_ids(model, prompt_ids, max_new_tokens=128,    # or one budget per prompt
                              eos_ids=eos_token_ids(model, tokenizer),
                              stop_strings=["\\n\\n"], tokenizer=tokenizer)

``prompt_ids`` are raw token ids (a MUSE excerpt, a prompt plus forced answer words); the
continuations come back without the end token and anything after it (a stop string's last token
is kept, as ``generate`` keeps it). Models whose attention takes no custom mask
(flash-attention-2, a short sliding window) or whose logits are not a plain linear head fall
back to ``model.generate`` on length-sorted left-padded batches: the same tokens, the old speed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from obliviate.core.errors import ConfigError
from obliviate.core.precision import evaluating
from obliviate.llm.data.formatting import PromptFormat, encode_prompt
from obliviate.llm.evaluation.llama_steps import hooked, llama_steps
from obliviate.llm.evaluation.prompt_cache import (
    PrefixCache,
    PromptStates,
    body_and_head,
    buffered_cache,
    float_dtype,
    keep_rows,
    kv_bytes_per_token,
    prefill,
    run_body,
    takes_custom_masks,
)

DEFAULT_BATCH_SIZE = 256
"""Most rows decoded together. A decoding step puts one token per row through every weight, so
its matrix multiplies reach the hardware's throughput only with many rows: on SmolLM2 (2 CPU
threads) 160 rows decode 1.8x faster than 32 (BENCHMARKS.md)."""
KV_BUDGET_BYTES = 2 * 1024**3
"""A decoding batch's KV cache stays under this (rows are cut to fit)."""
PREFILL_TOKENS = 4096
"""Most tokens (rows x longest row) per prefill forward pass."""
HEAD_CHUNK = 1024
"""Vocabulary rows of the LM head per product in :func:`greedy_tokens` (on SmolLM2, 160 rows,
one thread: 68 GFLOP/s against 41 for the whole head at once)."""
FAST_STEPS = True
"""Decode Llama-architecture models with :mod:`~obliviate.llm.evaluation.llama_steps` (off:
every model through its own forward)."""


@dataclass
class GenerationStats:
    """What the generator computed, for throughput and FLOP accounting."""

    prefill_tokens: int = 0
    """Prompt tokens through the transformer body, padding included."""
    padding_tokens: int = 0
    decode_tokens: int = 0
    """Generated tokens fed back through the body (one per live row per step)."""
    head_positions: int = 0
    """Positions that went through the LM head."""
    generated_tokens: int = 0
    forward_calls: int = 0
    seconds: float = 0.0
    decoder: str = ""
    """The decoding steps last used: ``"llama"`` (:mod:`~obliviate.llm.evaluation.llama_steps`)
    or ``"forward"`` (the model's own forward)."""

    def account(self, forward: int, padding: int, head: int, rows: int = 1) -> None:
        self.prefill_tokens += forward
        self.padding_tokens += padding
        self.head_positions += head
        self.forward_calls += 1 if forward else 0


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """End tokens: the tokenizer's eos plus any the model's generation config lists."""
    ids: list[int] = []
    config = getattr(model, "generation_config", None)
    for value in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            if item is not None and int(item) not in ids:
                ids.append(int(item))
    return ids


class _StopStrings:
    """HF's ``StopStringCriteria`` (the same matching as ``generate``) on each row's tail."""

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str], pad_id: int) -> None:
        from transformers import StopStringCriteria

        self.criteria = StopStringCriteria(tokenizer, list(stop_strings))
        self.width = self.criteria.maximum_token_len
        self.pad_id = pad_id

    def __call__(self, tails: list[list[int]]) -> list[bool]:
        rows = torch.full((len(tails), self.width), self.pad_id, dtype=torch.long)
        for i, tail in enumerate(tails):
            tail = tail[-self.width:]
            rows[i, self.width - len(tail):] = torch.tensor(tail, dtype=torch.long)
        return self.criteria(rows, None).tolist()


class _BodySteps:
    """Decoding steps through the model's own forward (any model whose attention takes a custom
    mask): a cache of preallocated buffers and an additive mask over its real positions."""

    name = "forward"

    def __init__(self, body: Any, states: PromptStates, steps: int) -> None:
        n, width = states.valid.shape
        self.body = body
        self.cache = buffered_cache(states.kv, width + steps)
        self.valid = torch.ones((n, width + steps), dtype=torch.bool, device=states.valid.device)
        self.valid[:, :width] = states.valid
        self.seen = width
        self.dtype = states.last.dtype

    def select(self, index: torch.Tensor) -> None:
        self.cache.batch_select_indices(index)
        self.valid = keep_rows(self.valid, index)

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.seen += 1
        seen = self.valid[:, :self.seen]
        mask = torch.zeros((seen.shape[0], 1, 1, seen.shape[1]), dtype=self.dtype,
                           device=seen.device)
        mask.masked_fill_(~seen[:, None, None, :], torch.finfo(self.dtype).min)
        hidden, self.cache = run_body(self.body, tokens[:, None], positions[:, None], mask=mask,
                                      cache=self.cache)
        return hidden[:, -1]


def _stepper(body: Any, states: PromptStates, steps: int) -> Any:
    """The Llama steps of :mod:`~obliviate.llm.evaluation.llama_steps` where they apply (and
    :data:`FAST_STEPS` is on), else the model's forward."""
    fast = llama_steps(body, states.kv, states.valid, steps) if FAST_STEPS else None
    return fast if fast is not None else _BodySteps(body, states, steps)


def greedy_tokens(head: Any, hidden: torch.Tensor) -> torch.Tensor:
    """``head(hidden).argmax(-1)`` a vocabulary slice at a time (:data:`HEAD_CHUNK` rows of the
    head's weight), keeping a running maximum: each slice's logits stay in the CPU cache, where
    one ``[rows, vocabulary]`` product runs at ~60% of the speed (SmolLM2, BENCHMARKS.md). Ties
    go to the lowest index, as ``argmax``. A head that is not a plain ``nn.Linear`` or carries
    hooks runs its own forward."""
    if type(head) is not torch.nn.Linear or hooked(head):
        return head(hidden).argmax(-1)
    weight, bias = head.weight, head.bias
    best_value = best_index = None
    for start in range(0, weight.shape[0], HEAD_CHUNK):
        stop = start + HEAD_CHUNK
        value, index = F.linear(hidden, weight[start:stop],
                                None if bias is None else bias[start:stop]).max(dim=-1)
        if best_value is None or best_index is None:
            best_value, best_index = value, index
            continue
        better = value > best_value
        best_value = torch.where(better, value, best_value)
        best_index = torch.where(better, index + start, best_index)
    assert best_index is not None
    return best_index


def decode(body: Any, head: Any, states: PromptStates, budgets: Sequence[int],
           eos_ids: Sequence[int], prompts: Sequence[Sequence[int]] | None = None,
           stop: _StopStrings | None = None, stats: GenerationStats | None = None
           ) -> list[list[int]]:
    """Greedy continuations of prompts already in ``states`` (one per row, ``budgets[r]`` tokens
    at most), stopping a row at an end token (dropped from its output) or a stop string (kept).

    ``prompts`` (each row's prompt ids) are needed only with ``stop``. Finished rows leave the
    batch and its cache before the next step: rows from the back of the batch take their
    places, so only those rows' caches are copied.
    """
    n = len(budgets)
    device = states.valid.device
    # the last token of the longest continuation is never fed back
    steps = _stepper(body, states, max(budgets) - 1)
    positions = torch.tensor(states.lengths, dtype=torch.long, device=device)
    eos = set(int(e) for e in eos_ids)
    out: list[list[int]] = [[] for _ in range(n)]
    rows: list[int | None] = list(range(n))  # batch row -> output row; None: finished
    tokens = greedy_tokens(head, states.last)
    if stats is not None:
        stats.head_positions += n
        stats.decoder = steps.name
    for step in range(max(budgets)):
        picked = tokens.tolist()
        live = [(i, r) for i, r in enumerate(rows) if r is not None]
        stopped: list[bool] = [False] * len(live)
        if stop is not None:
            assert prompts is not None
            stopped = stop([list(prompts[r]) + out[r] + [picked[i]] for i, r in live])
        for (i, r), ends in zip(live, stopped, strict=True):
            if picked[i] in eos:
                rows[i] = None
                continue
            out[r].append(picked[i])
            if len(out[r]) >= budgets[r] or ends:
                rows[i] = None
        if stats is not None:
            stats.generated_tokens += len(live)
        kept = _refill(rows)
        if not kept:
            break
        if len(kept) < len(rows):
            index = torch.tensor(kept, dtype=torch.long, device=device)
            steps.select(index)
            positions = positions.index_select(0, index)
            tokens = tokens.index_select(0, index)
            rows = [rows[i] for i in kept]
        hidden = steps(tokens, positions + step)
        tokens = greedy_tokens(head, hidden)
        if stats is not None:
            stats.decode_tokens += len(rows)
            stats.head_positions += len(rows)
            stats.forward_calls += 1
    return out


def _refill(rows: list[int | None]) -> list[int]:
    """The batch rows to keep, in their new order: the live rows of the front keep their places
    and the finished ones there are replaced by live rows from the back."""
    live = [i for i, r in enumerate(rows) if r is not None]
    m = len(live)
    holes = [i for i in range(m) if rows[i] is None]
    order = list(range(m))
    for hole, source in zip(holes, [i for i in live if i >= m], strict=True):
        order[hole] = source
    return order


def greedy_generate_ids(model: Any, prompts: Sequence[Sequence[int]],
                        max_new_tokens: int | Sequence[int], batch_size: int = DEFAULT_BATCH_SIZE,
                        pad_token_id: int = 0, eos_ids: Sequence[int] = (),
                        stop_strings: Sequence[str] = (), tokenizer: Any = None,
                        progress: bool = False, desc: str = "generating",
                        stats: GenerationStats | None = None) -> list[list[int]]:
    """Greedy continuations (token ids, end token and anything after it removed) of ``prompts``.

    Args:
        model: a causal LM (``transformers``, optionally peft-wrapped); put in eval mode for the
            call, its device used as it is.
        prompts: token ids of each prompt (non-empty).
        max_new_tokens: one budget for all, or one per prompt.
        batch_size: most rows decoded together (prompts are sorted by length into batches).
        pad_token_id: the id that fills padding (never attended to).
        eos_ids: tokens that end a continuation (:func:`eos_token_ids`).
        stop_strings: strings that end a continuation once generated, matched as HF
            ``generate`` matches them (``StopStringCriteria``); needs ``tokenizer``.
        stats: filled with the work done (:class:`GenerationStats`).
    """
    budgets = _budgets(max_new_tokens, len(prompts))
    if batch_size < 1:
        raise ConfigError(f"generation batch_size must be positive, got {batch_size}")
    if any(len(p) == 0 for p in prompts):
        raise ConfigError("greedy generation needs a non-empty prompt for every item")
    if stop_strings and tokenizer is None:
        raise ConfigError("stop_strings need the tokenizer")
    if not prompts:
        return []
    start = time.perf_counter()
    with evaluating(model):
        split = body_and_head(model) if takes_custom_masks(model) else None
        if split is None:
            out = _generate_hf(model, prompts, budgets, batch_size, pad_token_id, eos_ids,
                               stop_strings, tokenizer, progress, desc)
        else:
            out = _generate(model, split, prompts, budgets, batch_size, pad_token_id,
                            eos_ids, stop_strings, tokenizer, progress, desc, stats)
    if stats is not None:
        stats.seconds += time.perf_counter() - start
    return out


def greedy_generate(model: Any, tokenizer: Any, fmt: PromptFormat, questions: Sequence[str],
                    max_new_tokens: int | Sequence[int] = 200,
                    batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False,
                    stop_strings: Sequence[str] = (),
                    stats: GenerationStats | None = None) -> list[str]:
    """Greedy answers to ``questions`` (prompts as for scoring, decoded without the prompt and
    special tokens, stripped), in the order given."""
    prompts = [encode_prompt(tokenizer, fmt, q) for q in questions]
    ids = greedy_generate_ids(model, prompts, max_new_tokens, batch_size,
                              pad_token_id=pad_id(tokenizer),
                              eos_ids=eos_token_ids(model, tokenizer), stop_strings=stop_strings,
                              tokenizer=tokenizer, progress=progress, stats=stats)
    return decode_texts(tokenizer, ids)


def decode_texts(tokenizer: Any, ids: Sequence[Sequence[int]]) -> list[str]:
    """Continuations as text: special tokens skipped, whitespace stripped (as TOFU)."""
    return [tokenizer.decode(list(x), skip_special_tokens=True).strip() for x in ids]


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its eos id, else 0."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def decode_rows(model: Any, batch_size: int, tokens: int) -> int:
    """Rows to decode together: ``batch_size`` at most, and a KV cache of ``tokens`` positions
    per row under :data:`KV_BUDGET_BYTES`."""
    per_row = kv_bytes_per_token(model) * tokens
    return max(1, min(batch_size, KV_BUDGET_BYTES // per_row if per_row else batch_size))


# -- internals -------------------------------------------------------------------------------------
def _budgets(max_new_tokens: int | Sequence[int], n: int) -> list[int]:
    budgets = ([int(max_new_tokens)] * n if isinstance(max_new_tokens, int)
               else [int(b) for b in max_new_tokens])
    if len(budgets) != n:
        raise ConfigError(f"{n} prompts but {len(budgets)} max_new_tokens values")
    if any(b < 1 for b in budgets):
        raise ConfigError(f"max_new_tokens must be positive, got {min(budgets)}")
    return budgets


def _generate(model: Any, split: tuple[Any, Any], prompts: Sequence[Sequence[int]],
              budgets: list[int], batch_size: int, pad: int, eos_ids: Sequence[int],
              stop_strings: Sequence[str], tokenizer: Any, progress: bool, desc: str,
              stats: GenerationStats | None) -> list[list[int]]:
    from tqdm.auto import tqdm

    body, head = split
    dtype = float_dtype(model)
    stop = _StopStrings(tokenizer, stop_strings, pad) if stop_strings else None
    prefixes = PrefixCache()
    out: list[list[int]] = [[] for _ in prompts]
    # batches of similar prompt length (little padding in the cache), longest first
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    rows_cap = decode_rows(model, batch_size, len(prompts[order[0]]) + max(budgets))
    with tqdm(total=len(prompts), desc=desc, unit="q", leave=False,
              disable=not progress) as bar:
        for begin in range(0, len(order), rows_cap):
            batch = order[begin:begin + rows_cap]
            rows = [prompts[i] for i in batch]
            states = prefill(body, rows, pad, PREFILL_TOKENS, dtype, prefixes,
                             stats.account if stats is not None else None)
            ids = decode(body, head, states, [budgets[i] for i in batch], eos_ids, rows, stop,
                         stats)
            for i, x in zip(batch, ids, strict=True):
                out[i] = x
            bar.update(len(batch))
    return out


def _generate_hf(model: Any, prompts: Sequence[Sequence[int]], budgets: list[int],
                 batch_size: int, pad: int, eos_ids: Sequence[int],
                 stop_strings: Sequence[str], tokenizer: Any, progress: bool, desc: str
                 ) -> list[list[int]]:
    """``model.generate`` on length-sorted, left-padded batches (models the fast path cannot
    run); the budget of a batch is its largest, and each row is cut to its own. ``generate``
    also stops at the model's own end tokens when ``eos_ids`` is empty."""
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    eos = list(eos_ids)
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    out: list[list[int]] = [[] for _ in prompts]
    with tqdm(total=len(prompts), desc=desc, unit="q", leave=False,
              disable=not progress) as bar:
        for begin in range(0, len(order), batch_size):
            batch = order[begin:begin + batch_size]
            width = max(len(prompts[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                n = len(prompts[i])
                ids[row, width - n:] = torch.tensor(list(prompts[i]), dtype=torch.long)
                mask[row, width - n:] = 1
            # pure greedy: explicit neutral values, so a model's own generation defaults
            # cannot add repetition penalties or minimum lengths
            config = GenerationConfig(
                max_new_tokens=max(budgets[i] for i in batch), do_sample=False, num_beams=1,
                pad_token_id=pad, eos_token_id=eos or None, repetition_penalty=1.0,
                no_repeat_ngram_size=0, min_length=0, stop_strings=list(stop_strings) or None)
            generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                       generation_config=config,
                                       **({"tokenizer": tokenizer} if stop_strings else {}))
            for row, i in enumerate(batch):
                new = generated[row, width:].tolist()[:budgets[i]]
                cut = next((t for t, tok in enumerate(new) if tok in eos), len(new))
                out[i] = _cut_at_stop(new[:cut], prompts[i], stop_strings, tokenizer, pad)
            bar.update(len(batch))
    return out


def _cut_at_stop(new: list[int], prompt: Sequence[int], stop_strings: Sequence[str],
                 tokenizer: Any, pad: int) -> list[int]:
    """A row of a ``generate`` batch ends at its first stop string (others in the batch may
    have run on: the batch's budget is the largest)."""
    if not stop_strings:
        return new
    stop = _StopStrings(tokenizer, stop_strings, pad)
    for t in range(len(new)):
        if stop([list(prompt) + new[:t + 1]])[0]:
            return new[:t + 1]
    return new


__all__ = ["DEFAULT_BATCH_SIZE", "GenerationStats", "decode", "decode_texts", "eos_token_ids",
           "greedy_generate", "greedy_generate_ids", "greedy_tokens", "pad_id"]
