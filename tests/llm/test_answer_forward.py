"""The answer forward: a prefix every row shares runs once, with the same logits and gradients
as running the batch whole; the LM loss equals transformers' own."""

from __future__ import annotations

import pytest
import torch

import obliviate.llm.answer_forward as af
from obliviate.llm.data.formatting import build_example, collate
from obliviate.llm.models import train_tokenizer
from obliviate.llm.training import lm_loss

SYSTEM = "System: answer briefly and truly, name the person."


@pytest.fixture(scope="module")
def data(facts):
    return facts


@pytest.fixture(scope="module")
def tok(data):
    texts = [t for split in data.values() for r in split for t in (r.question, r.answer)]
    return train_tokenizer(texts + [SYSTEM], vocab_size=400)


def llama(tok, dropout: float = 0.0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         attention_dropout=dropout, attn_implementation="sdpa")
    return LlamaForCausalLM(config)


def batch_of(tok, data, system: bool = True) -> dict[str, torch.Tensor]:
    """Questions after a common system prompt, answers of different lengths, right-padded."""
    head = tok(SYSTEM)["input_ids"] if system else []
    examples = []
    for record in data["forget"][:2] + data["retain"][:4]:
        prompt = head + tok(f"Question: {record.question}\nAnswer:",
                            add_special_tokens=False)["input_ids"]
        answer = tok(f" {record.answer}", add_special_tokens=False)["input_ids"]
        examples.append(build_example(prompt, answer + [tok.eos_token_id], None))
    return collate(examples, tok.pad_token_id)


def counted(model) -> list[int]:
    """Batch sizes of the model's forward calls, recorded by a hook."""
    sizes: list[int] = []
    model.register_forward_pre_hook(
        lambda _m, _a, kw: sizes.append(kw["input_ids"].shape[0]), with_kwargs=True)
    return sizes


def loss_and_grads(model, batch, share: bool, monkeypatch):
    monkeypatch.setattr(af, "MIN_SHARED_PREFIX", 8 if share else 10**9)
    model.zero_grad(set_to_none=True)
    loss, _ = lm_loss(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_shared_prefix_runs_once_with_the_same_loss_and_gradients(tok, data, monkeypatch):
    batch = batch_of(tok, data)
    keep = af.answer_positions(batch["labels"])
    prefix = af.shared_prefix_length(batch, keep)
    assert prefix >= 8  # the system prompt and "Question:" are common to every row

    model = llama(tok).train()
    sizes = counted(model)
    whole_loss, whole = loss_and_grads(model, batch, share=False, monkeypatch=monkeypatch)
    assert sizes == [6]
    sizes.clear()
    shared_loss, shared = loss_and_grads(model, batch, share=True, monkeypatch=monkeypatch)
    assert sizes == [1, 6]  # the prefix for one row, then the rest of every row

    assert torch.allclose(shared_loss, whole_loss, rtol=1e-6, atol=1e-6)
    for name, grad in whole.items():
        assert torch.allclose(shared[name], grad, rtol=1e-4, atol=1e-6), name


def test_answer_logits_match_the_whole_batch_forward(tok, data, monkeypatch):
    batch = batch_of(tok, data)
    model = llama(tok).eval()
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        sizes = counted(model)
        logits, labels = af.answer_logits(model, batch)
    assert sizes == [1, 6]
    keep = af.answer_positions(batch["labels"])
    assert torch.allclose(logits, full[:, keep], atol=1e-5)
    assert torch.equal(labels, batch["labels"][:, keep + 1])


def test_lm_loss_is_the_transformers_causal_lm_loss(tok, data):
    batch = batch_of(tok, data)
    model = llama(tok).eval()
    with torch.no_grad():
        expected = model(**batch).loss
        loss, logs = lm_loss(model, batch)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert logs["loss"] == pytest.approx(expected.item(), rel=1e-6)


def test_no_shared_prefix_without_a_common_head(tok, data):
    batch = batch_of(tok, data, system=False)
    keep = af.answer_positions(batch["labels"])
    assert af.shared_prefix_length(batch, keep) == 0  # "Question:" alone is under 8 tokens
    one_row = {k: v[:1] for k, v in batch_of(tok, data).items()}
    assert af.shared_prefix_length(one_row, af.answer_positions(one_row["labels"])) == 0
    left_padded = batch_of(tok, data)
    left_padded["attention_mask"][1, 0] = 0  # a padded first column is not shared
    assert af.shared_prefix_length(left_padded, keep) == 0


def test_prefix_stops_before_the_first_kept_position():
    ids = torch.tensor([[5] * 12 + [1, 2], [5] * 12 + [3, 4]])
    labels = torch.full_like(ids, -100)
    labels[:, 10:] = ids[:, 10:]  # an answer starting inside the common run
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    keep = af.answer_positions(labels)
    assert int(keep.min()) == 9
    assert af.shared_prefix_length(batch, keep) == 9


def test_dropout_and_checkpointing_run_the_batch_whole(tok, data, monkeypatch):
    batch = batch_of(tok, data)
    with_dropout = llama(tok, dropout=0.1).train()
    assert not af._can_share(with_dropout)
    assert af._can_share(with_dropout.eval())  # no dropout at evaluation
    checkpointed = llama(tok).train()
    checkpointed.activation_checkpointing_enable()
    assert not af._can_share(checkpointed)
    sizes = counted(checkpointed)
    loss_and_grads(checkpointed, batch, share=True, monkeypatch=monkeypatch)
    assert sizes == [6]


class NoKeepLM(torch.nn.Module):
    """A causal LM whose forward takes a cache but not ``logits_to_keep``; with ``drop_cache``
    it returns no cache at all."""

    def __init__(self, inner, drop_cache: bool = False):
        super().__init__()
        self.inner, self.drop_cache = inner, drop_cache

    def forward(self, input_ids, attention_mask, cache=None, use_cache=False):
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, cache=cache,
                         use_cache=use_cache)
        if self.drop_cache:
            out.cache = None
        return out


def test_a_model_without_logits_to_keep_shares_and_slices(tok, data):
    batch = batch_of(tok, data)
    inner = llama(tok).eval()
    model = NoKeepLM(inner).eval()
    sizes = counted(model)
    with torch.no_grad():
        logits, _ = af.answer_logits(model, batch)
        full = inner(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert sizes == [1, 6]
    assert torch.allclose(logits, full[:, af.answer_positions(batch["labels"])], atol=1e-5)


def test_a_model_returning_no_cache_runs_whole_and_is_asked_once(tok, data):
    batch = batch_of(tok, data)
    model = NoKeepLM(llama(tok), drop_cache=True).eval()
    sizes = counted(model)
    with torch.no_grad():
        first, _ = af.answer_logits(model, batch)
        assert sizes == [1, 6]  # the prefix ran, no cache came back: the batch ran whole
        sizes.clear()
        second, _ = af.answer_logits(model, batch)
    assert sizes == [6]
    assert torch.equal(first, second)


def test_only_append_only_caches_are_shared():
    from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

    appending = DynamicCache()
    appending.layers = [DynamicLayer(), DynamicLayer()]
    assert af.shareable_cache(appending)
    windowed = DynamicCache()
    windowed.layers = [DynamicLayer(), DynamicSlidingWindowLayer(sliding_window=4)]
    assert not af.shareable_cache(windowed)
    assert not af.shareable_cache(object())
