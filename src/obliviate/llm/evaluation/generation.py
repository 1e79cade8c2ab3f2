"""Batched greedy generation for evaluation (TOFU's ROUGE, extraction checks, attacks).

Prompts are built exactly as for scoring (:func:`~obliviate.llm.data.formatting.encode_prompt`),
sorted by length so each batch holds similar lengths, left-padded (the new tokens of every row
start at the same column), and decoded greedily until every row has emitted an end token or
``max_new_tokens`` are reached. TOFU (Maini et al. 2024, ``evaluate_util.run_generation``)
generates the same way (greedy, left padding) and decodes only the new tokens with
``skip_special_tokens=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from obliviate.core.errors import ConfigError
from obliviate.llm.data.formatting import PromptFormat, encode_prompt


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """End tokens: the tokenizer's eos plus any the model's generation config lists."""
    ids: list[int] = []
    config = getattr(model, "generation_config", None)
    for value in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            if item is not None and int(item) not in ids:
                ids.append(int(item))
    return ids


def greedy_generate_ids(model: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                        batch_size: int = 16, pad_token_id: int = 0,
                        eos_ids: Sequence[int] = (), progress: bool = False,
                        desc: str = "generating") -> list[list[int]]:
    """Greedy continuations (token ids, end token and anything after it removed) of ``prompts``.

    Batches hold prompts of similar length (sorted), left-padded; the model is put in eval mode
    for the call and its device is used as it is.
    """
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if batch_size < 1:
        raise ConfigError(f"generation batch_size must be positive, got {batch_size}")
    if any(len(p) == 0 for p in prompts):
        raise ConfigError("greedy generation needs a non-empty prompt for every item")
    device = next(model.parameters()).device
    eos = list(eos_ids)
    # pure greedy: explicit neutral values, so a model's own generation defaults cannot add
    # repetition penalties or minimum lengths
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_token_id,
        eos_token_id=eos or None, repetition_penalty=1.0, no_repeat_ngram_size=0, min_length=0)
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    out: list[list[int]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(prompts), desc=desc, unit="q", leave=False,
                                          disable=not progress) as bar:
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                width = max(len(prompts[i]) for i in batch)
                ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    n = len(prompts[i])
                    ids[row, width - n:] = torch.tensor(list(prompts[i]), dtype=torch.long)
                    mask[row, width - n:] = 1
                generated = model.generate(input_ids=ids.to(device),
                                           attention_mask=mask.to(device),
                                           generation_config=config)
                for row, i in enumerate(batch):
                    new = generated[row, width:].tolist()
                    cut = next((t for t, tok in enumerate(new) if tok in eos), len(new))
                    out[i] = new[:cut]
                bar.update(len(batch))
    finally:
        model.train(was_training)
    return out


def greedy_generate(model: Any, tokenizer: Any, fmt: PromptFormat, questions: Sequence[str],
                    max_new_tokens: int = 200, batch_size: int = 16,
                    progress: bool = False) -> list[str]:
    """Greedy answers to ``questions`` (decoded without the prompt and special tokens, stripped).

    Output order follows ``questions``; batching and sorting do not change the result beyond
    float rounding.
    """
    prompts = [encode_prompt(tokenizer, fmt, q) for q in questions]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = greedy_generate_ids(model, prompts, max_new_tokens, batch_size,
                              pad_token_id=0 if pad is None else pad,
                              eos_ids=eos_token_ids(model, tokenizer), progress=progress)
    return [tokenizer.decode(x, skip_special_tokens=True).strip() for x in ids]


__all__ = ["eos_token_ids", "greedy_generate", "greedy_generate_ids"]
