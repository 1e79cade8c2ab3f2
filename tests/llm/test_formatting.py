"""Prompt formatting and answer-only loss masking."""

from __future__ import annotations

import pytest
import torch

from obliviate.core.errors import ConfigError
from obliviate.llm.data.formatting import (
    IGNORE_INDEX,
    answer_nll,
    collate,
    encode_record,
    prompt_text,
    resolve_format,
)
from obliviate.llm.data.records import QARecord

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_base_prompt_masks_exactly_the_prompt(tiny_tokenizer):
    fmt = resolve_format(tiny_tokenizer, "base")
    record = QARecord("Where was Ana born?", "Ana was born in Brin.")
    ex = encode_record(tiny_tokenizer, fmt, record)
    prompt_ids = tiny_tokenizer("Question: Where was Ana born?\nAnswer:")["input_ids"]
    answer_ids = tiny_tokenizer(" Ana was born in Brin.", add_special_tokens=False)["input_ids"]
    assert ex.input_ids == prompt_ids + answer_ids + [tiny_tokenizer.eos_token_id]
    eos = tiny_tokenizer.eos_token_id
    assert ex.labels == [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [eos]
    assert tiny_tokenizer.decode(
        [i for i, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE_INDEX],
        skip_special_tokens=True) == " Ana was born in Brin."


def test_plain_text_record_trains_on_every_token(tiny_tokenizer):
    fmt = resolve_format(tiny_tokenizer, "base")
    ex = encode_record(tiny_tokenizer, fmt, QARecord("", "Brin is a town."))
    assert IGNORE_INDEX not in ex.labels
    assert ex.input_ids == ex.labels


def test_chat_template_formatting(tiny_tokenizer):
    tok = tiny_tokenizer
    tok.chat_template = CHATML
    try:
        fmt = resolve_format(tok, "auto", system_prompt="Be brief.")
        assert fmt.style == "chat"
        text = prompt_text(tok, fmt, "Who?")
        assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWho?"
                        "<|im_end|>\n<|im_start|>assistant\n")
        ex = encode_record(tok, fmt, QARecord("Who?", "Ana."))
        n_prompt = len(tok(text, add_special_tokens=False)["input_ids"])
        assert ex.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
        assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
        assert ex.input_ids[-1] == tok.eos_token_id
    finally:
        tok.chat_template = None


def test_chat_style_without_template_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(ConfigError, match="no chat template"):
        resolve_format(tiny_tokenizer, "chat")


def test_truncation_keeps_answer_tokens(tiny_tokenizer):
    fmt = resolve_format(tiny_tokenizer, "base")
    ex = encode_record(tiny_tokenizer, fmt, QARecord("Where was Ana born?", "Ana " * 50),
                       max_length=20)
    assert len(ex.input_ids) == 20 and ex.num_answer_tokens >= 1


def test_answer_nll_against_hand_computation():
    # vocabulary of 3, sequence of 4 tokens, loss on the last two (labels shift by one)
    logits = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 0, 1]])
    # position 1 predicts token 0: -log(e/(e+2)); position 2 predicts token 1: -log(e^2/(e^2+2))
    e = torch.e
    expected_sum = -torch.log(torch.tensor(e / (e + 2))) - torch.log(
        torch.tensor(e**2 / (e**2 + 2)))
    assert torch.allclose(answer_nll(logits, labels, "sum"), expected_sum.reshape(1))
    assert torch.allclose(answer_nll(logits, labels), (expected_sum / 2).reshape(1))


def test_collate_right_pads_and_masks(tiny_tokenizer):
    fmt = resolve_format(tiny_tokenizer, "base")
    a = encode_record(tiny_tokenizer, fmt, QARecord("Q?", "A."))
    b = encode_record(tiny_tokenizer, fmt, QARecord("A longer question?", "A longer answer."))
    batch = collate([a, b], pad_token_id=tiny_tokenizer.pad_token_id)
    n = len(a.input_ids)
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all()


def test_context_and_system_prompt_in_base_style(tiny_tokenizer):
    from dataclasses import replace

    fmt = replace(resolve_format(tiny_tokenizer, "base"), system_prompt="Be careful.",
                  context=(("Q1?", "A1."),))
    assert prompt_text(tiny_tokenizer, fmt, "Q2?") == (
        "Be careful.\n\nQuestion: Q1?\nAnswer: A1.\n\nQuestion: Q2?\nAnswer:")
    assert type(fmt).from_dict(fmt.to_dict()) == fmt
