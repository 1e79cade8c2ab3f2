"""The LM head's token log-probabilities computed a slice of the vocabulary at a time."""

from __future__ import annotations

import pytest
import torch

from obliviate.llm.evaluation import vocab_chunks
from obliviate.llm.evaluation.vocab_chunks import head_token_logprobs

torch.set_num_threads(1)


@pytest.mark.parametrize(("bias", "chunk"), [(False, 7), (True, 16), (True, 1000)])
def test_equals_log_softmax_of_the_full_head(bias, chunk):
    gen = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(12, 50, bias=bias)
    with torch.no_grad():
        head.weight.normal_(0, 2.0, generator=gen)
        if bias:
            head.bias.normal_(0, 1.0, generator=gen)
    hidden = torch.randn(9, 12, generator=gen)
    # the first and last column of the vocabulary and both sides of a slice boundary
    labels = torch.tensor([0, 49, 6, 7, 15, 16, 31, 32, 3])
    got = head_token_logprobs(hidden, head, labels, vocab_chunk=chunk)
    want = torch.log_softmax(head(hidden).double(), dim=-1).gather(-1, labels[:, None])[:, 0]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=0)
    assert not got.requires_grad  # scoring only: no graph is kept


def test_no_rows_and_labels_outside_the_vocabulary():
    head = torch.nn.Linear(4, 10)
    none = torch.zeros(0, dtype=torch.long)
    assert head_token_logprobs(torch.zeros(0, 4), head, none).numel() == 0
    with pytest.raises(ValueError, match="10 rows"):
        head_token_logprobs(torch.zeros(1, 4), head, torch.tensor([10]))


def test_the_default_slice_is_read_at_call_time(monkeypatch):
    calls = []
    real = torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear",
                        lambda x, w, b=None: calls.append(w.shape[0]) or real(x, w, b))
    monkeypatch.setattr(vocab_chunks, "VOCAB_CHUNK", 4)
    head_token_logprobs(torch.randn(2, 3), torch.nn.Linear(3, 10), torch.tensor([1, 9]))
    assert calls == [4, 4, 2]
