"""Attention one packed example at a time: the same loss and gradients as the packed row under
its dense block-diagonal mask and as the padded batch run whole; used only where it is the same
computation, and the model's attention implementation is always restored."""

from __future__ import annotations

import pytest
import torch
from transformers import AttentionInterface

import obliviate.llm.answer_forward as af
import obliviate.llm.segment_attention as sa
from obliviate.llm.training import lm_loss
from tests.llm import test_answer_forward
from tests.llm.test_answer_forward import assert_same_training, batch_of, grads_of, llama

tok = test_answer_forward.tok  # the fixture: a tokenizer trained on the facts


@pytest.fixture
def calls(monkeypatch):
    """The layouts :func:`segment_attention` was called with (``None``: without one)."""
    sa._register()
    seen: list[sa.SegmentLayout | None] = []

    def counting(module, query, key, value, attention_mask, **kwargs):
        seen.append(kwargs.get(sa.LAYOUT_KWARG))
        return sa.segment_attention(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, sa.NAME, counting)
    return seen


def dense_packed(model, batch, monkeypatch):
    """Loss and gradients of the packed row under its dense mask (no per-example attention)."""
    with monkeypatch.context() as patch:
        patch.setattr(sa, "ARCHITECTURES", frozenset())
        return grads_of(model, lm_loss, batch)


def assert_same_as_dense(model, batch, monkeypatch):
    expected_loss, expected = dense_packed(model, batch, monkeypatch)
    loss, grads = grads_of(model, lm_loss, batch)
    assert torch.allclose(loss, expected_loss, rtol=1e-6, atol=1e-6)
    for name, grad in expected.items():
        assert torch.allclose(grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_layout_reads_prefix_examples_and_padding():
    ids = torch.tensor([[5, 6, 1, 2, 3], [5, 6, 4, 0, 0], [5, 6, 7, 8, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    one_row = af.pack({"input_ids": ids, "attention_mask": mask}, prefix=2, width=100)
    assert sa.layout(one_row.owner) == sa.SegmentLayout(
        2, (sa.RowLayout(((2, 5), (5, 6), (6, 8)), 0),))
    no_prefix = af.pack({"input_ids": ids, "attention_mask": mask}, prefix=0, width=5)
    assert sa.layout(no_prefix.owner) == sa.SegmentLayout(0, (
        sa.RowLayout(((0, 5),), 0), sa.RowLayout(((0, 3),), 2), sa.RowLayout(((0, 4),), 1)))
    prefix_mask = sa.layout(one_row.owner).mask(3, torch.device("cpu"))
    assert prefix_mask.tolist() == [[True, True, True, False, False],
                                    [True, True, True, True, False],
                                    [True, True, True, True, True]]
    with pytest.raises(ValueError, match="prefix, examples, padding"):
        sa.layout(torch.tensor([[-1, 0, -2, 1]]))
    with pytest.raises(ValueError, match="different lengths"):
        sa.layout(torch.tensor([[-1, -1, 0], [-1, 1, 1]]))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_per_example_attention_trains_as_the_dense_mask_and_the_whole_batch(
        tok, facts, attention, calls, monkeypatch):
    batch = batch_of(tok, facts)
    model = llama(tok, attention=attention).train()
    assert_same_training(model, batch)  # against the padded batch run whole
    assert_same_as_dense(model, batch, monkeypatch)
    layouts = [c for c in calls if c is not None]
    assert layouts and len(layouts) == len(calls)  # every layer's call had the layout
    assert layouts[0].prefix == af.shared_prefix_length(batch)
    assert len(layouts[0].rows) == 1 and len(layouts[0].rows[0].spans) == 6
    assert model.config._attn_implementation == attention  # restored


def test_rows_with_padding_and_no_shared_prefix(tok, facts, calls, monkeypatch):
    batch = batch_of(tok, facts)
    monkeypatch.setattr(af, "MIN_SHARED_PREFIX", 10**9)  # every example its own prefix
    monkeypatch.setattr(af, "PACK_WIDTH", int(batch["attention_mask"].sum(1).max()))
    model = llama(tok).train()
    assert_same_training(model, batch)
    assert_same_as_dense(model, batch, monkeypatch)
    layout = next(c for c in calls if c is not None)
    assert layout.prefix == 0 and len(layout.rows) > 1
    assert any(row.padding for row in layout.rows)  # unequal rows end in padding


def test_not_used_under_activation_checkpointing_or_for_other_architectures(
        tok, facts, calls, monkeypatch):
    batch = batch_of(tok, facts)
    model = llama(tok).train()
    model.activation_checkpointing_enable()
    assert not sa.applies(model)
    assert_same_training(model, batch)
    model.activation_checkpointing_disable()
    monkeypatch.setattr(model.config, "model_type", "gemma2")  # soft-caps its logits
    assert not sa.applies(model)
    assert_same_training(model, batch)
    assert calls == []


def test_the_attention_implementation_is_restored_after_an_error(tok, facts):
    model = llama(tok).train()
    with pytest.raises(RuntimeError, match="boom"), sa.segments(model):
        assert model.config._attn_implementation == sa.NAME
        raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"


def test_without_a_layout_it_is_sdpa_under_the_mask(tok, facts):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    model = llama(tok)
    attention = model.model.layers[0].self_attn
    query, key, value = torch.randn(2, 4, 7, 16), torch.randn(2, 2, 7, 16), torch.randn(2, 2, 7, 16)
    mask = torch.ones(7, 7, dtype=torch.bool).tril()[None, None].expand(2, 1, 7, 7)
    got, _ = sa.segment_attention(attention, query, key, value, mask, scaling=0.25)
    expected, _ = sdpa_attention_forward(attention, query, key, value, mask, scaling=0.25)
    assert torch.equal(got, expected)
