"""Prompt formatting with the loss on answer tokens only.

Two styles:

* ``chat`` — the tokenizer's chat template (system prompt optional), generation prompt appended;
  the answer is followed by the tokenizer's end-of-turn/eos token.
* ``base`` — TOFU's plain format ``"Question: {q}\\nAnswer: {a}"``.

Prompt and answer are tokenised separately and concatenated, so the label mask is exact (no
token straddles the boundary) and several answers to one question share the same prompt ids —
the scorer relies on that to compute a prompt once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from obliviate.core.errors import ConfigError
from obliviate.llm.data.records import QARecord

IGNORE_INDEX = -100
Style = Literal["auto", "chat", "base"]


@dataclass(frozen=True)
class PromptFormat:
    """How questions become prompts for one tokenizer.

    ``context`` holds in-context ``(question, answer)`` demonstrations placed before every
    question (earlier chat turns, or earlier ``Question/Answer`` blocks in the base style); with
    ``system_prompt`` it is how prompt-only methods (guardrails, in-context unlearning) act.
    """

    style: Literal["chat", "base"]
    system_prompt: str | None = None
    question_prefix: str = "Question: "
    answer_prefix: str = "\nAnswer:"
    context: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"style": self.style, "system_prompt": self.system_prompt,
                "question_prefix": self.question_prefix, "answer_prefix": self.answer_prefix,
                "context": [list(pair) for pair in self.context]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptFormat:
        return cls(**{**data, "context": tuple(tuple(pair) for pair in data.get("context", ()))})


def resolve_format(tokenizer: Any, style: Style = "auto",
                   system_prompt: str | None = None) -> PromptFormat:
    """Pick ``chat`` when the tokenizer has a chat template (for ``auto``), else ``base``."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if style == "chat" and not has_template:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ConfigError(f"tokenizer {name!r} has no chat template; use prompt_style=base")
    if style == "auto":
        style = "chat" if has_template else "base"
    if style not in ("chat", "base"):
        raise ConfigError(f"unknown prompt style {style!r}; use auto, chat or base")
    fmt = PromptFormat(style=style, system_prompt=system_prompt)
    if style == "chat":
        check_template_time(tokenizer, fmt)
    return fmt


TEMPLATE_SECONDS = 2.0
"""A chat template comes with the model folder: rendering a short conversation must take less
than this, or the model is refused (a template with nested loops is a denial of service)."""


def check_template_time(tokenizer: Any, fmt: PromptFormat) -> None:
    from obliviate.core.safety import time_limit

    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    with time_limit(TEMPLATE_SECONDS, f"{name}: its chat template (tokenizer_config.json) took "
                                      f"more than {TEMPLATE_SECONDS:g} s to render a one-question "
                                      "conversation; refusing it (use prompt_style=base or fix "
                                      "the template)"):
        prompt_text(tokenizer, fmt, "What is the capital of France?")


def prompt_text(tokenizer: Any, fmt: PromptFormat, question: str) -> str:
    """The text the model sees before the answer."""
    if not question:
        return ""
    if fmt.style == "chat":
        messages = []
        if fmt.system_prompt:
            messages.append({"role": "system", "content": fmt.system_prompt})
        for q, a in fmt.context:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": question})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    head = f"{fmt.system_prompt}\n\n" if fmt.system_prompt else ""
    shots = "".join(f"{fmt.question_prefix}{q}{fmt.answer_prefix} {a}\n\n" for q, a in fmt.context)
    return f"{head}{shots}{fmt.question_prefix}{question}{fmt.answer_prefix}"


def encode_prompt(tokenizer: Any, fmt: PromptFormat, question: str) -> list[int]:
    text = prompt_text(tokenizer, fmt, question)
    # Chat templates already contain their special tokens (BOS included where the model uses one).
    add_special = fmt.style == "base" or not question
    ids = tokenizer(text, add_special_tokens=add_special)["input_ids"]
    return list(ids)


def encode_answer(tokenizer: Any, fmt: PromptFormat, answer: str, question: str = "x") -> list[int]:
    """Answer ids followed by eos (a leading space in the base style, after ``Answer:``)."""
    text = f" {answer}" if fmt.style == "base" and question else answer
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return ids


@dataclass(frozen=True)
class Example:
    """One tokenised training/scoring example; ``labels`` is -100 on prompt tokens."""

    input_ids: list[int]
    labels: list[int]

    @property
    def num_answer_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def build_example(prompt_ids: list[int], answer_ids: list[int], max_length: int | None) -> Example:
    if max_length is not None and len(prompt_ids) + len(answer_ids) > max_length:
        keep = max(max_length - len(prompt_ids), 1)
        answer_ids = answer_ids[:keep]
        prompt_ids = prompt_ids[-(max_length - len(answer_ids)):] if max_length > keep else []
    return Example(prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + list(answer_ids))


def encode_record(tokenizer: Any, fmt: PromptFormat, record: QARecord, answer: str | None = None,
                  max_length: int | None = None) -> Example:
    """Tokenise ``record`` (with ``answer`` replacing its answer if given) for the LM loss."""
    prompt = encode_prompt(tokenizer, fmt, record.question)
    target = encode_answer(tokenizer, fmt, record.answer if answer is None else answer,
                           record.question)
    return build_example(prompt, target, max_length)


def collate(examples: list[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch for training: ``input_ids``, ``attention_mask``, ``labels``."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        input_ids[row, :n] = torch.tensor(ex.input_ids)
        labels[row, :n] = torch.tensor(ex.labels)
        mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def answer_nll(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean_per_sequence"
               ) -> torch.Tensor:
    """Cross-entropy on answer tokens: per-sequence mean (default) or sum, shape ``[batch]``.

    ``logits[:, t]`` predicts ``labels[:, t + 1]`` (the causal shift happens here).
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE_INDEX
    token_nll = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.clamp_min(0).reshape(-1), reduction="none").view_as(shift_labels)
    token_nll = token_nll * mask
    total = token_nll.sum(dim=1)
    if reduction == "sum":
        return total
    if reduction != "mean_per_sequence":
        raise ValueError(f"unknown reduction {reduction!r}")
    return total / mask.sum(dim=1).clamp_min(1)
