"""The shared answer scorer and batched greedy generation, on a tiny random Llama."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from obliviate.core.errors import ConfigError
from obliviate.llm.data.formatting import (
    PromptFormat,
    answer_nll,
    collate,
    encode_record,
    resolve_format,
)
from obliviate.llm.data.records import QARecord
from obliviate.llm.evaluation.generation import greedy_generate, greedy_generate_ids
from obliviate.llm.evaluation.scorer import AnswerScorer, AnswerTree, answer_lists
from obliviate.llm.models import TinyModelConfig, tiny_llama, train_tokenizer

torch.set_num_threads(1)

CONFIG = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)


@pytest.fixture(scope="module")
def data():
    from obliviate.llm.data.synthetic import SyntheticFactsConfig, generate_synthetic_facts

    return generate_synthetic_facts(SyntheticFactsConfig(
        num_people=8, facts_per_person=4, forget_people=2, holdout_people=2, num_perturbed=3,
        seed=0))


@pytest.fixture(scope="module")
def tok(data):
    texts = [t for split in data.values() for r in split
             for t in (r.question, r.answer, r.paraphrased_answer or "", *r.perturbed_answers)]
    return train_tokenizer(texts, vocab_size=400)


def peaked_model(tok, attn: str = "sdpa", seed: int = 0):
    """A random tiny Llama with large weights, so its predictions are confident and varied."""
    model = tiny_llama(tok, CONFIG, seed=seed)
    model.config._attn_implementation = attn
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.15, generator=gen)
    return model.eval()


@pytest.fixture(scope="module")
def records(data):
    """Questions of different lengths, a repeated question, a text record, a short answer."""
    recs = list(data["forget"][:4]) + list(data["retain"][:4])
    recs.append(replace(data["retain"][5], question=data["forget"][0].question))
    recs.append(QARecord(question="", answer=data["retain"][6].answer))
    recs.append(QARecord(question=data["retain"][7].question, answer="Yes.",
                         perturbed_answers=("No.", "Maybe so, who knows.")))
    return recs


def _flat(scores):
    return [s for row in scores for s in row]


LONG_PREFIX = PromptFormat(style="base", question_prefix="System: answer briefly and truly. Q: ")


@pytest.mark.parametrize(("attn", "long_prefix"),
                         [("eager", False), ("sdpa", False), ("sdpa", True)])
def test_packed_prefix_and_batched_equal_naive(tok, records, attn, long_prefix):
    model = peaked_model(tok, attn)
    fmt = LONG_PREFIX if long_prefix else resolve_format(tok)
    answers = answer_lists(records)
    naive = AnswerScorer(model, tok, fmt, mode="naive")
    ref = _flat(naive.score(records, answers))
    for mode in ("packed", "prefix", "batched"):
        scorer = AnswerScorer(model, tok, fmt, mode=mode, batch_size=3, batch_tokens=400)
        assert scorer.mode == mode
        got = _flat(scorer.score(records, answers))
        assert [g.num_tokens for g in got] == [r.num_tokens for r in ref]
        np.testing.assert_allclose([g.nll_sum for g in got], [r.nll_sum for r in ref],
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose([g.mean_nll for g in got], [r.mean_nll for r in ref],
                                   rtol=1e-5, atol=1e-6)
        if mode in ("packed", "prefix"):  # prompts computed once
            assert scorer.stats.forward_tokens < 0.7 * naive.stats.forward_tokens
            assert scorer.stats.padding_tokens < 0.1 * scorer.stats.forward_tokens
        if mode == "packed":  # several questions share a row
            assert scorer.stats.sequences < len({r.question for r in records}) - 1
            packed_tokens = scorer.stats.real_tokens
        if mode == "prefix" and long_prefix:  # the shared system prompt is computed once
            shared = len(tok(LONG_PREFIX.question_prefix)["input_ids"]) - 1
            assert scorer.stats.real_tokens < packed_tokens - 5 * shared
            assert scorer.stats.padding_tokens < 0.1 * scorer.stats.forward_tokens


def test_scores_equal_training_loss(tok, records):
    """Independent reference: the training collate + answer_nll path, one example at a time."""
    model = peaked_model(tok)
    fmt = resolve_format(tok)
    scorer = AnswerScorer(model, tok, fmt, max_length=24, row_tokens=40, batch_size=2)
    got = _flat(scorer.score(records, answer_lists(records)))
    expected = []
    with torch.no_grad():
        for record, answers in zip(records, answer_lists(records), strict=True):
            for answer in answers:
                batch = collate([encode_record(tok, fmt, record, answer, max_length=24)],
                                tok.pad_token_id)
                logits = model(input_ids=batch["input_ids"]).logits
                expected.append(float(answer_nll(logits, batch["labels"], reduction="sum")[0]))
    np.testing.assert_allclose([g.nll_sum for g in got], expected, rtol=1e-5, atol=1e-5)


def test_token_stats_match_naive(tok, records):
    model = peaked_model(tok)
    fmt = resolve_format(tok)
    packed = _flat(AnswerScorer(model, tok, fmt).score(records, answer_lists(records), True))
    naive = _flat(AnswerScorer(model, tok, fmt, mode="naive").score(
        records, answer_lists(records), True))
    for p, n in zip(packed, naive, strict=True):
        assert len(p.token_stats) == p.num_tokens
        np.testing.assert_allclose(p.token_stats.logprobs.sum(), -p.nll_sum, atol=1e-4)
        for name in ("logprobs", "mu", "sigma"):
            np.testing.assert_allclose(getattr(p.token_stats, name),
                                       getattr(n.token_stats, name), atol=1e-5)
        assert (p.token_stats.is_argmax == n.token_stats.is_argmax).all()
    assert packed[0].token_stats.text == records[0].answer
    assert any(p.token_stats.is_argmax.any() for p in packed)


def test_answer_tree_runs_the_tokens_answers_start_with_once():
    # each answer feeds all its tokens but the last: (1 2 3) (1 2 4) (5) (1 2 3)
    tree = AnswerTree([(1, 2, 3, 9), (1, 2, 4, 9), (5, 9), (1, 2, 3, 9), (7,)])
    assert tree.tokens == [1, 2, 3, 4, 5]
    assert tree.depths == [0, 1, 2, 2, 0]
    assert tree.paths == [[0, 1, 2], [0, 1, 3], [4], [0, 1, 2], []]
    assert tree.ancestors[3].tolist() == [True, True, False, True, False]
    assert tree.ancestors[4].tolist() == [False, False, False, False, True]
    assert len(tree) == 5


@pytest.mark.parametrize("tree_tokens", [512, 6])
def test_prefix_mode_runs_each_prompts_answer_tree_with_naive_scores(tok, data, monkeypatch,
                                                                     tree_tokens):
    """Answers that start alike run their common tokens once and score as run one by one
    (with a small ``TREE_TOKENS`` the answers split into several trees)."""
    import obliviate.llm.evaluation.scorer as scorer_module

    monkeypatch.setattr(scorer_module, "TREE_TOKENS", tree_tokens)
    base = data["forget"][0]
    record = replace(base, perturbed_answers=[base.answer + " indeed", base.answer + " again",
                                              base.answer.split()[0] + " nobody"])
    model = peaked_model(tok)
    fmt = resolve_format(tok)
    scorer = AnswerScorer(model, tok, fmt)
    got = scorer.score([record], answer_lists([record]))[0]
    naive = AnswerScorer(model, tok, fmt, mode="naive").score([record], answer_lists([record]))[0]
    np.testing.assert_allclose([s.nll_sum for s in got], [s.nll_sum for s in naive], atol=1e-5)
    answers = [scorer.encode(record.question, a)[1] for a in answer_lists([record])[0]]
    fed = sum(len(a) - 1 for a in answers)
    prompt = len(scorer.encode(record.question, record.answer)[0])
    run = scorer.stats.forward_tokens - scorer.stats.padding_tokens - prompt
    if tree_tokens == 512:
        tree = AnswerTree(answers)
        assert run == len(tree) < fed
    else:  # each answer (over 6 tokens) its own tree: nothing shared
        assert run == fed


@pytest.mark.parametrize("vocab_chunk", [2048, 37])
def test_token_stats_only_for_the_flagged_records(tok, records, vocab_chunk, monkeypatch):
    # answers without stats go through the head a slice of the vocabulary at a time (37: many
    # slices of the tiny model's vocabulary), beside flagged ones in the same chunk of rows
    from obliviate.llm.evaluation import vocab_chunks

    monkeypatch.setattr(vocab_chunks, "VOCAB_CHUNK", vocab_chunk)
    model = peaked_model(tok)
    fmt = resolve_format(tok)
    every = AnswerScorer(model, tok, fmt).score(records, answer_lists(records), True)
    flags = [i % 2 == 0 for i in range(len(records))]
    scorer = AnswerScorer(model, tok, fmt)
    some = scorer.score(records, answer_lists(records), flags)
    for flag, row, full in zip(flags, some, every, strict=True):
        for got, want in zip(row, full, strict=True):
            # float32 rounding: unflagged answers' log-softmax is taken slice by slice
            assert got.nll_sum == pytest.approx(want.nll_sum, rel=1e-7, abs=1e-5)
            if flag:
                for name in ("logprobs", "mu", "sigma", "is_argmax"):
                    np.testing.assert_allclose(getattr(got.token_stats, name),
                                               getattr(want.token_stats, name), atol=1e-6)
                assert got.token_stats.text == want.token_stats.text
    # an answer another flagged record shares has them; the others have none
    flagged = {(r.question, a) for r, f in zip(records, flags, strict=True) if f
               for a in answer_lists([r])[0]}
    for record, row in zip(records, some, strict=True):
        for text, got in zip(answer_lists([record])[0], row, strict=True):
            assert (got.token_stats is not None) == ((record.question, text) in flagged)
    with pytest.raises(ConfigError, match="token_stats flags"):
        scorer.score(records, answer_lists(records), flags[:-1])


def test_cache_scores_each_answer_once(tok, records):
    model = peaked_model(tok)
    scorer = AnswerScorer(model, tok, resolve_format(tok))
    first = scorer.score_records(records)
    calls, computed = scorer.stats.forward_calls, scorer.stats.answers_computed
    assert computed == len({(r.question, a) for r in records for a in answer_lists([r])[0]})
    again = scorer.score_records(records)
    assert scorer.stats.forward_calls == calls and scorer.stats.cache_hits >= computed
    assert again[0].gt is first[0].gt
    # token stats were not computed: asking for them recomputes once, then they are cached
    with_stats = scorer.score(records, token_stats=True)
    assert with_stats[0][0].token_stats is not None
    assert scorer.stats.forward_calls > calls
    calls = scorer.stats.forward_calls
    scorer.score(records)
    assert scorer.stats.forward_calls == calls
    scorer.clear_cache()
    computed = scorer.stats.answers_computed
    scorer.score(records[:1])
    assert scorer.stats.forward_calls > calls and scorer.stats.answers_computed == computed + 1


def test_record_scores_layout_and_training_mode(tok, records):
    model = peaked_model(tok).train()
    scores = AnswerScorer(model, tok, resolve_format(tok)).score_records(records)
    assert model.training
    assert scores[0].paraphrased is not None and len(scores[0].perturbed) == 3
    assert scores[-1].paraphrased is None and len(scores[-1].perturbed) == 2
    text = scores[-2]  # empty question: the first token has no predictor
    assert text.gt.num_tokens == len(tok(records[-2].answer)["input_ids"])
    assert np.isclose(scores[0].gt.prob, np.exp(-scores[0].gt.mean_nll))
    # nothing to score (empty prompt, answer = eos only) in every mode: no crash, NaN mean
    for mode in ("packed", "prefix", "batched", "naive"):
        [[empty]] = AnswerScorer(model, tok, resolve_format(tok), mode=mode).score(
            [QARecord(question="", answer="")], token_stats=True)
        assert empty.num_tokens == 0 and np.isnan(empty.mean_nll) and len(empty.token_stats) == 0


def test_scorer_options_are_checked():
    fake = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2"))
    tok = SimpleNamespace(pad_token_id=0, eos_token_id=1)
    assert AnswerScorer(fake, tok, None).mode == "batched"
    assert AnswerScorer(fake, tok, None, mode="naive").mode == "naive"
    with pytest.raises(ConfigError):
        AnswerScorer(fake, tok, None, mode="fast")
    with pytest.raises(ConfigError):
        AnswerScorer(fake, tok, None, batch_size=0)


# -- generation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_batched_generation_equals_single(tok, data, attn):
    model = peaked_model(tok, attn)
    fmt = resolve_format(tok)
    questions = [r.question for r in data["forget"][:5] + data["retain"][:5]]
    batched = greedy_generate(model, tok, fmt, questions, max_new_tokens=12, batch_size=4)
    single = [greedy_generate(model, tok, fmt, [q], max_new_tokens=12, batch_size=1)[0]
              for q in questions]
    assert batched == single
    assert len(set(batched)) > 1 and all(batched)
    ids = greedy_generate_ids(model, [tok(q)["input_ids"] for q in questions], 7, batch_size=3)
    assert all(0 < len(x) <= 7 for x in ids)


class _Scripted(torch.nn.Module):
    """A stand-in model whose greedy continuation is fixed: tokens 5, 6, eos, 7, ..."""

    def __init__(self, eos: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.eos = eos
        self.seen: list[torch.Tensor] = []

    def generate(self, input_ids, attention_mask, generation_config):
        self.seen.append(attention_mask)
        n = generation_config.max_new_tokens
        cont = torch.tensor([5, 6, self.eos, 7, 8, 9][:n]).repeat(input_ids.shape[0], 1)
        return torch.cat([input_ids, cont], dim=1)


def test_generation_cuts_at_eos_and_left_pads():
    model = _Scripted(eos=2)
    prompts = [[9, 9, 9], [4], [3, 3]]
    out = greedy_generate_ids(model, prompts, max_new_tokens=6, batch_size=2, pad_token_id=0,
                              eos_ids=[2])
    assert out == [[5, 6]] * 3
    first = model.seen[0]  # longest prompts first, padded on the left
    assert first.tolist() == [[1, 1, 1], [0, 1, 1]]
    assert greedy_generate_ids(model, [[1]], max_new_tokens=2, eos_ids=[2]) == [[5, 6]]
    with pytest.raises(ConfigError):
        greedy_generate_ids(model, [[]], max_new_tokens=2)
