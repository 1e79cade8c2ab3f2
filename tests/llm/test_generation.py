"""Greedy generation: token-identical to ``model.generate`` on a tiny random Llama, with and
without a shared prompt prefix, with end tokens, stop strings and per-prompt budgets; the scorer
continues from its own prompt cache without a second prefill."""

from __future__ import annotations

import pytest
import torch

from obliviate.core.errors import ConfigError
from obliviate.llm.data.formatting import PromptFormat, encode_prompt
from obliviate.llm.evaluation import generation
from obliviate.llm.evaluation.generation import (
    GenerationStats,
    decode,
    greedy_generate,
    greedy_generate_ids,
    greedy_tokens,
)
from obliviate.llm.evaluation.llama_steps import llama_steps
from obliviate.llm.evaluation.prompt_cache import (
    PrefixCache,
    body_and_head,
    common_prefix,
    merge_states,
    prefill,
)
from obliviate.llm.evaluation.scorer import AnswerScorer
from obliviate.llm.models import train_tokenizer

torch.set_num_threads(1)
NEW = 10


@pytest.fixture(scope="module")
def data():
    from obliviate.llm.data.synthetic import SyntheticFactsConfig, generate_synthetic_facts

    return generate_synthetic_facts(SyntheticFactsConfig(
        num_people=8, facts_per_person=4, forget_people=2, holdout_people=2, num_perturbed=3,
        seed=0))


@pytest.fixture(scope="module")
def tok(data):
    texts = [t for split in data.values() for r in split for t in (r.question, r.answer)]
    return train_tokenizer(texts, vocab_size=400)


def gqa_llama(tok, attn: str = "sdpa", seed: int = 0):
    """A random 2-layer Llama with grouped-query attention (4 query, 2 key/value heads) and
    large weights, so its greedy choices are confident and varied."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         attn_implementation=attn)
    model = LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.15, generator=gen)
    return model.eval()


def prompts_of(tok, data, shared: bool) -> list[list[int]]:
    """Questions of different lengths, optionally after a long common system prefix."""
    head = tok("System: answer briefly and truly, name the person.")["input_ids"] if shared else []
    questions = [r.question for r in data["forget"][:5] + data["retain"][:6]]
    return [head + tok(q, add_special_tokens=False)["input_ids"] for q in questions]


def hf_single(model, prompt, new, **kwargs) -> list[int]:
    out = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=new, do_sample=False,
                         pad_token_id=0, **kwargs)
    return out[0, len(prompt):].tolist()


def hf_left_padded(model, prompts, new) -> list[list[int]]:
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, width - len(p):] = 1
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new,
                         do_sample=False, pad_token_id=0, eos_token_id=None)
    return out[:, width:].tolist()


@pytest.mark.parametrize(("attn", "shared"), [("sdpa", True), ("sdpa", False), ("eager", True)])
def test_equals_model_generate(tok, data, attn, shared):
    model = gqa_llama(tok, attn)
    prompts = prompts_of(tok, data, shared)
    stats = GenerationStats()
    ours = greedy_generate_ids(model, prompts, NEW, batch_size=4, stats=stats)
    assert ours == hf_left_padded(model, prompts, NEW)
    assert ours == [hf_single(model, p, NEW, eos_token_id=None) for p in prompts]
    assert len({tuple(x) for x in ours}) > 3
    # the prefix all prompts share ran once for the 3 batches, the rest of each prompt once
    prefix = common_prefix(prompts)
    assert (prefix >= 10) == shared
    real = stats.prefill_tokens - stats.padding_tokens
    assert real <= sum(len(p) for p in prompts) - (len(prompts) - 1) * prefix
    # only live rows are fed back: 11 rows x (NEW - 1) steps, the head once per fed token
    assert stats.decode_tokens == len(prompts) * (NEW - 1)
    assert stats.head_positions == len(prompts) * NEW


def test_bfloat16_weights_generate_what_model_generate_does_up_to_near_ties(tok, data):
    """``model.dtype: bfloat16``: the shared prefix, the length-sorted batches and the Llama
    decoding steps run in the weights' dtype. bf16 keeps 8 bits of mantissa, so two ways of
    summing the same logits (ours, and ``model.generate`` one prompt at a time) can order two
    candidates whose logits lie a few bf16 steps apart differently; everywhere else the tokens
    are the same. So each row equals ``model.generate``'s, or first departs from it where
    ``model.generate``'s own logits for the two tokens are within 8 bf16 steps of each other."""
    model = gqa_llama(tok).to(torch.bfloat16)
    prompts = prompts_of(tok, data, shared=True)
    ours = greedy_generate_ids(model, prompts, NEW, batch_size=4)
    theirs = [hf_single(model, p, NEW, eos_token_id=None) for p in prompts]
    assert len({tuple(x) for x in ours}) > 3  # varied continuations, not one repeated
    assert sum(a == b for a, b in zip(ours, theirs, strict=True)) >= len(prompts) // 2
    for prompt, a, b in zip(prompts, ours, theirs, strict=True):
        if a == b:
            continue
        k = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + b[:k]])).logits[0, -1].float()
        step = torch.finfo(torch.bfloat16).eps * float(logits.abs().max())
        assert abs(float(logits[a[k]] - logits[b[k]])) <= 8 * step, (a, b, k)


def test_end_tokens_drop_rows_and_budgets_per_prompt(tok, data):
    model = gqa_llama(tok)
    prompts = prompts_of(tok, data, shared=True)
    free = greedy_generate_ids(model, prompts, NEW)
    # an end token that some continuations reach at different steps, others never
    counts: dict[int, int] = {}
    for row in free:
        for t in set(row[1:]):
            counts[t] = counts.get(t, 0) + 1
    eos = max(counts, key=lambda t: (0 < counts[t] < len(prompts), counts[t]))
    stats = GenerationStats()
    ours = greedy_generate_ids(model, prompts, NEW, eos_ids=[eos], stats=stats)
    reference = [hf_single(model, p, NEW, eos_token_id=eos) for p in prompts]
    assert ours == [r[:r.index(eos)] if eos in r else r for r in reference]
    assert any(len(x) < NEW - 1 for x in ours) and any(len(x) == NEW for x in ours)
    assert stats.decode_tokens < len(prompts) * (NEW - 1)  # finished rows left the batch
    budgets = [1 + i % NEW for i in range(len(prompts))]
    assert greedy_generate_ids(model, prompts, budgets) == [x[:b] for x, b in
                                                             zip(free, budgets, strict=True)]


def test_stop_strings_match_generate(tok, data):
    model = gqa_llama(tok)
    prompts = prompts_of(tok, data, shared=True)
    free = greedy_generate_ids(model, prompts, NEW)
    text = tok.decode(free[0][2:5])
    stop = text[len(text) // 2:len(text) // 2 + 3].strip() or text.strip()[:2]
    ours = greedy_generate_ids(model, prompts, NEW, stop_strings=[stop], tokenizer=tok)
    reference = [hf_single(model, p, NEW, eos_token_id=None, stop_strings=[stop], tokenizer=tok)
                 for p in prompts]
    assert ours == reference
    assert len(ours[0]) < NEW
    with pytest.raises(ConfigError):
        greedy_generate_ids(model, prompts, NEW, stop_strings=[stop])


def test_generate_fallback_for_models_without_custom_masks(tok, data, monkeypatch):
    model = gqa_llama(tok)
    prompts = prompts_of(tok, data, shared=False)
    eos = [tok.eos_token_id]
    fast = greedy_generate_ids(model, prompts, NEW, batch_size=4, eos_ids=eos)
    assert any(len(x) < NEW for x in fast)
    monkeypatch.setattr(generation, "takes_custom_masks", lambda model: False)
    assert greedy_generate_ids(model, prompts, NEW, batch_size=4, eos_ids=eos) == fast
    budgets = [2, NEW] * 5 + [3]
    assert greedy_generate_ids(model, prompts, budgets, batch_size=4, eos_ids=eos) == [
        x[:b] for x, b in zip(fast, budgets, strict=True)]


def test_scorer_generates_from_its_prompt_cache(tok, data):
    model = gqa_llama(tok)
    fmt = PromptFormat(style="base", question_prefix="System: answer briefly. Question: ")
    records = list(data["forget"][:5]) + list(data["retain"][:4])
    questions = [r.question for r in records]
    standalone = greedy_generate(model, tok, fmt, questions, max_new_tokens=NEW)
    scorer = AnswerScorer(model, tok, fmt)
    plain = AnswerScorer(model, tok, fmt).score(records)
    scores = scorer.score(records, generate={q: NEW for q in questions[:7]})
    assert [s[0].nll_sum for s in scores] == pytest.approx([s[0].nll_sum for s in plain],
                                                           abs=1e-4)
    # the 7 were continued from the scorer's prompt cache: no prompt token ran again
    assert scorer.generation_stats.prefill_tokens == 0
    assert scorer.generation_stats.decode_tokens > 0
    assert scorer.generations(questions[:7], NEW) == standalone[:7]
    assert scorer.generation_stats.prefill_tokens == 0  # served from the cache
    # the other two prefill now; a question the scorer never saw is generated after the call
    assert scorer.generations(questions, NEW) == standalone
    assert scorer.generation_stats.prefill_tokens > 0
    extra = data["retain"][9].question
    scorer.score(records[:1], generate={extra: NEW})
    assert scorer.generations([extra], NEW) == greedy_generate(model, tok, fmt, [extra], NEW)
    prompt = encode_prompt(tok, fmt, extra)
    assert scorer.generate([extra], NEW) == greedy_generate_ids(model, [prompt], NEW,
                                                               eos_ids=[tok.eos_token_id])
    # prompt caches of several scoring chunks (different widths) merged into decoding batches
    small = AnswerScorer(model, tok, fmt, batch_tokens=40)
    small.generation_batch_size = 4
    small.score(records, generate={q: NEW for q in questions})
    assert small.generation_stats.prefill_tokens == 0
    assert small.generations(questions, NEW) == standalone


def test_bad_arguments(tok):
    model = gqa_llama(tok)
    with pytest.raises(ConfigError):
        greedy_generate_ids(model, [[]], 2)
    with pytest.raises(ConfigError):
        greedy_generate_ids(model, [[1, 2]], 0)
    with pytest.raises(ConfigError):
        greedy_generate_ids(model, [[1, 2]], [2, 3])
    with pytest.raises(ConfigError):
        greedy_generate_ids(model, [[1, 2]], 2, batch_size=0)
    assert greedy_generate_ids(model, [], 2) == []


def test_lora_wrapped_model_takes_the_fast_path(tok, data):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(gqa_llama(tok), peft.LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    prompts = prompts_of(tok, data, shared=True)[:6]
    stats = GenerationStats()
    ours = greedy_generate_ids(model, prompts, NEW, stats=stats)
    assert stats.decode_tokens > 0  # not the model.generate fallback
    assert stats.decoder == "forward"  # LoRA projections: the model's forward, not llama_steps
    assert ours == [hf_single(model, p, NEW, eos_token_id=None) for p in prompts]


@pytest.mark.parametrize("where", ["layer", "head"])
def test_a_hooked_model_runs_its_own_forward(tok, data, where):
    """A forward hook (a user's, or accelerate's on a device-mapped layer) changes what the
    model computes: decoding then runs the model's modules, hooks included, and still equals
    ``model.generate``."""
    model = gqa_llama(tok, seed=1)
    module = model.model.layers[0] if where == "layer" else model.lm_head
    module.register_forward_hook(lambda _m, _i, out: (out[0] * 1.5, *out[1:])
                                 if isinstance(out, tuple) else out.flip(-1))
    prompts = prompts_of(tok, data, shared=True)[:6]
    stats = GenerationStats()
    ours = greedy_generate_ids(model, prompts, NEW, stats=stats)
    # a hooked layer: the body's own forward; a hooked head: the plain body's Llama steps, the
    # head's own forward for the next token
    assert stats.decoder == ("forward" if where == "layer" else "llama")
    assert ours == [hf_single(model, p, NEW, eos_token_id=None) for p in prompts]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_llama_steps_are_taken_and_match_the_forward(tok, data, attn, monkeypatch):
    model = gqa_llama(tok, attn, seed=1)
    prompts = prompts_of(tok, data, shared=True)
    stats = GenerationStats()
    fast = greedy_generate_ids(model, prompts, NEW, stats=stats)
    assert stats.decoder == "llama"
    assert fast == [hf_single(model, p, NEW, eos_token_id=None) for p in prompts]
    monkeypatch.setattr(generation, "FAST_STEPS", False)
    slow = GenerationStats()
    assert greedy_generate_ids(model, prompts, NEW, stats=slow) == fast
    assert slow.decoder == "forward"
    # the prefix every prompt shares is held once (cascade attention), the rest per row
    monkeypatch.setattr(generation, "FAST_STEPS", True)
    body, head = body_and_head(model)
    with torch.inference_mode():
        states = prefill(body, prompts, 0, 4096, torch.float32, PrefixCache())
        steps = llama_steps(body, states.kv, states.valid, 4)
        assert steps is not None
        assert steps.prefix == common_prefix(prompts) >= 10
        assert steps.keys[0].shape[2] == states.valid.shape[1] - steps.prefix + 4
        # a prompt set without a common prefix: nothing shared
        plain = prefill(body, prompts_of(tok, data, shared=False), 0, 4096, torch.float32)
        assert llama_steps(body, plain.kv, plain.valid, 4).prefix == 0
        # the scorer's chunks of different widths merged: the prefix stays in front, shared
        prefixes = PrefixCache()
        parts = [prefill(body, rows, 0, 4096, torch.float32, prefixes)
                 for rows in (prompts[:3], prompts[3:7], prompts[7:])]
        assert len({p.valid.shape[1] for p in parts}) > 1
        merged = merge_states(parts)
        steps = llama_steps(body, merged.kv, merged.valid, 4)
        assert steps is not None and steps.prefix == common_prefix(prompts)
        assert decode(body, head, merged, [NEW] * len(prompts), eos_ids=[]) == fast


def test_head_argmax_in_vocabulary_slices(monkeypatch):
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 23, bias=True)
    with torch.no_grad():
        head.weight[17] = head.weight[3]  # equal logits in two slices: the lower index wins
        head.bias[17] = head.bias[3] = 50.0
    hidden = torch.randn(6, 8)
    monkeypatch.setattr(generation, "HEAD_CHUNK", 5)
    picked = greedy_tokens(head, hidden)
    assert picked.tolist() == head(hidden).argmax(dim=-1).tolist() == [3] * 6
    with torch.no_grad():
        head.bias.zero_()
    assert greedy_tokens(head, hidden).tolist() == head(hidden).argmax(dim=-1).tolist()
