"""Quantization (RTN) and white-box probe attacks.

The quantizer is checked against hand-computed values; the attacks run on a tiny Llama that
memorised synthetic facts (trained as in ``tests/llm/methods/conftest.py``), on a GradAscent-
unlearned copy of it and on an oracle trained the same way on the retain facts only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import obliviate.llm.attacks  # noqa: F401  (registers the attacks)
import obliviate.llm.methods  # noqa: F401  (registers the methods)
from obliviate.core.errors import ConfigError
from obliviate.core.registry import ATTACKS, METHODS
from obliviate.core.task import DataSplit, UnlearningTask
from obliviate.llm.attacks.base import AttackContext, AttackTarget, ProbeOptions
from obliviate.llm.attacks.probes import lens_query
from obliviate.llm.attacks.quantization import quantize_model, quantize_rtn
from obliviate.llm.data.formatting import collate, encode_answer, encode_record, resolve_format
from obliviate.llm.data.synthetic import SyntheticFactsConfig, generate_synthetic_facts
from obliviate.llm.methods.base import UnlearnContext, UnlearnTrainConfig
from obliviate.llm.models import TinyModelConfig, tiny_llama, train_tokenizer
from obliviate.llm.task import task_texts
from obliviate.llm.training import TrainConfig, train

# -- the quantizer, by hand ---------------------------------------------------------------------
# Row 0 holds two full groups of 4 and a partial group of 2; row 1 three constant groups.
W = torch.tensor([[-1.5, -0.5, 0.5, 1.5, 0.0, 0.25, -0.75, 1.5, 1.0, 3.0],
                  [0.5, 0.5, 0.5, 0.5, -0.3, -0.3, -0.3, -0.3, 0.0, 0.0]])


def test_rtn_asymmetric_two_bits_by_hand():
    # maxq = 3.
    # [-1.5 -0.5 0.5 1.5]: scale = 3/3 = 1, zero = round(1.5) = 2 (torch.round: half to even);
    #   w/scale = [-1.5 -0.5 0.5 1.5] rounds half-to-even to [-2 -0 0 2], + 2 = [0 2 2 4],
    #   clamp to 3 -> w' = [-2 0 0 1] (half-away-from-zero would give [-2 -1 1 1]).
    # [0 .25 -.75 1.5]: scale = 2.25/3 = 0.75, zero = round(1) = 1, w/scale = [0 1/3 -1 2]
    #   -> q = [1 1 0 3] -> w' = [0 0 -0.75 1.5].
    # [1 3] (partial, one-signed): the range is extended to 0 -> [0, 3]: scale 1, zero 0,
    #   w' = [1 3]. (With the raw range [1, 3]: scale 2/3, zero round(-1.5) = -2 clamped to 0,
    #   q(3) = round(4.5) = 4 clamped to 3 -> w' = 2: an error of 1.0 > scale/2.)
    # Constant groups are exact: 0.5 -> scale 0.5, zero 0, q 1; -0.3 -> scale 0.3, zero 1, q 0;
    #   0 -> scale 0.
    deq, scales, zeros = quantize_rtn(W, bits=2, group_size=4)
    assert torch.equal(deq[0], torch.tensor([-2.0, 0.0, 0.0, 1.0, 0.0, 0.0, -0.75, 1.5, 1.0, 3.0]))
    assert torch.equal(deq[1], W[1])  # constant groups bit for bit
    assert torch.allclose(scales, torch.tensor([[1.0, 0.75, 1.0], [0.5, 0.3, 0.0]]))
    assert torch.equal(zeros, torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0]]))
    assert not torch.signbit(zeros).any()  # no -0.0 zero points
    assert deq.dtype == W.dtype and deq.shape == W.shape


def test_rtn_symmetric_three_bits_by_hand():
    # half = 4, scale = max|w| / 3, zero = 4.
    # [-1.5 -0.5 0.5 1.5]: scale 0.5, w/scale = [-3 -1 1 3], exact.
    # [0 .25 -.75 1.5]: scale 0.5, w/scale = [0 0.5 -1.5 3] -> [0 0 -2 3] (ties to even)
    #   -> w' = [0 0 -1 1.5].  [1 3]: scale 1, exact.  Constant groups exact, zero group scale 0.
    deq, scales, zeros = quantize_rtn(W, bits=3, group_size=4, symmetric=True)
    assert torch.equal(deq[0], torch.tensor([-1.5, -0.5, 0.5, 1.5, 0.0, 0.0, -1.0, 1.5, 1.0, 3.0]))
    assert torch.equal(deq[1], W[1])
    assert torch.allclose(scales, torch.tensor([[0.5, 0.5, 1.0], [0.5, 0.3, 0.0]]))
    assert torch.equal(zeros, torch.full((2, 3), 4.0))


def test_group_boundaries_are_per_group():
    # one group of 10 instead of 4 + 4 + 2: a single scale (3 - -1.5) / 3 = 1.5 for row 0
    deq, scales, _ = quantize_rtn(W, bits=2, group_size=10)
    assert scales.shape == (2, 1) and float(scales[0, 0]) == pytest.approx(1.5)
    # group_size larger than the row: one partial group, same result
    deq_big, scales_big, _ = quantize_rtn(W, bits=2, group_size=128)
    assert torch.equal(deq, deq_big) and torch.equal(scales, scales_big)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [7, 32, 128])
def test_rtn_error_is_at_most_half_a_step(symmetric, bits, group_size):
    gen = torch.Generator().manual_seed(bits * 1000 + group_size)
    weight = torch.randn(6, 100, generator=gen) * 0.05
    weight[1] = weight[1].abs() + 0.1  # a one-signed row
    weight[2, :group_size] = 0.3  # a constant group
    deq, scales, zeros = quantize_rtn(weight, bits, group_size, symmetric=symmetric)
    per_column = scales.repeat_interleave(group_size, dim=1)[:, :weight.shape[1]]
    assert torch.all((weight - deq).abs() <= per_column / 2 * (1 + 1e-5) + 1e-7)
    assert torch.equal(deq[2, :group_size], weight[2, :group_size])
    # the codes are integers in [0, 2^bits - 1]
    zero_cols = zeros.repeat_interleave(group_size, dim=1)[:, :weight.shape[1]]
    live = per_column > 0
    codes = deq[live] / per_column[live] + zero_cols[live]
    assert torch.allclose(codes, codes.round(), atol=1e-3)
    assert codes.round().min() >= 0 and codes.round().max() <= 2 ** bits - 1


def test_rtn_keeps_dtype_and_rejects_bad_settings():
    deq, _, _ = quantize_rtn(W.to(torch.bfloat16), bits=4, group_size=4)
    assert deq.dtype == torch.bfloat16
    with pytest.raises(ConfigError):
        quantize_rtn(W, bits=0, group_size=4)
    with pytest.raises(ConfigError):
        quantize_rtn(W, bits=1, group_size=4, symmetric=True)
    with pytest.raises(ConfigError):
        quantize_rtn(W, bits=4, group_size=0)
    with pytest.raises(ConfigError):
        quantize_rtn(W[0], bits=4, group_size=4)


# -- the tiny world: memorised, unlearned, oracle -----------------------------------------------
@dataclass
class World:
    task: UnlearningTask
    tokenizer: Any
    fmt: Any
    config: TinyModelConfig
    states: dict[str, dict[str, torch.Tensor]]

    def model(self, name: str) -> torch.nn.Module:
        model = tiny_llama(self.tokenizer, self.config)
        model.load_state_dict(copy.deepcopy(self.states[name]))
        return model.eval()

    def target(self, name: str) -> AttackTarget:
        return AttackTarget(name, self.model(name), self.tokenizer, self.fmt)

    def attack(self, attack: str, name: str, metric: str = "rouge", **options: Any) -> Any:
        ctx = AttackContext(task=self.task, target=self.target(name),
                            oracle=self.target("oracle"), probe=ProbeOptions(metric=metric))
        return ATTACKS.get(attack, "llm")(**options).run(ctx)


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    facts = generate_synthetic_facts(SyntheticFactsConfig(
        num_people=6, facts_per_person=4, forget_people=1, holdout_people=1, seed=0))
    task = UnlearningTask("attacks", "llm", DataSplit("forget", facts["forget"]),
                          DataSplit("retain", facts["retain"]),
                          eval_splits={"holdout": DataSplit("holdout", facts["holdout"])})
    tokenizer = train_tokenizer(task_texts(task), vocab_size=400)
    fmt = resolve_format(tokenizer, "base")
    config = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                             vocab_size=400)

    def trained(records: list) -> torch.nn.Module:
        model = tiny_llama(tokenizer, config, seed=0)
        examples = [encode_record(tokenizer, fmt, r) for r in records]
        train(model, examples, lambda b: collate(b, tokenizer.pad_token_id),
              TrainConfig(epochs=100, learning_rate=3e-3, batch_size=8, warmup_ratio=0.05,
                          weight_decay=0.0, lr_scheduler="cosine"))
        return model

    memorised = trained(task.full.records)
    oracle = trained(task.retain.records)
    ctx = UnlearnContext(tokenizer=tokenizer, fmt=fmt, task=task, max_length=96,
                         train=UnlearnTrainConfig(max_steps=12, learning_rate=3e-4, batch_size=4,
                                                  warmup_ratio=0.0, checkpoint_every=1000,
                                                  log_every=4))
    unlearned = METHODS.get("grad_ascent", "llm")().run(
        copy.deepcopy(memorised), task, tmp_path_factory.mktemp("ga"), ctx=ctx,
        save=False).model
    states = {name: copy.deepcopy(m.state_dict()) for name, m in
              (("memorised", memorised), ("oracle", oracle), ("ga", unlearned))}
    return World(task, tokenizer, fmt, config, states)


def test_attacks_are_registered():
    assert {"quantization", "logit_lens", "linear_probe"} <= set(ATTACKS.names("llm"))


# -- quantization --------------------------------------------------------------------------------
def test_quantize_model_copies_and_skips_head_and_embeddings(world):
    model = world.model("memorised")
    before = copy.deepcopy(model.state_dict())
    quantized = quantize_model(model, bits=4, group_size=32)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # the original is untouched
    q_state = quantized.state_dict()
    assert torch.equal(q_state["model.embed_tokens.weight"], before["model.embed_tokens.weight"])
    assert torch.equal(q_state["model.norm.weight"], before["model.norm.weight"])
    proj = q_state["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(proj, before["model.layers.0.self_attn.q_proj.weight"])
    # at most 2^4 distinct values in each group of 32 input weights
    assert max(len(torch.unique(g)) for g in proj.reshape(-1, 32)) <= 16
    # the tied head/embedding is quantized once when asked for
    with_head = quantize_model(model, bits=4, group_size=32, include_lm_head=True).state_dict()
    assert not torch.equal(with_head["lm_head.weight"], before["lm_head.weight"])
    assert torch.equal(with_head["lm_head.weight"], with_head["model.embed_tokens.weight"])


def test_quantization_attack_on_memorised_model(world):
    # measured (torch 2.13 CPU): ROUGE plain 1.000, int8 1.000, int4 1.000; Prob 0.980, int8
    # 0.980, int4 0.978; oracle ROUGE 0.513 / Prob 0.066 at every precision
    result = world.attack("quantization", "memorised")
    assert set(result.variants) == {"int8", "int4"}
    for metric in ("rouge", "prob"):
        plain = result.details[f"plain_{metric}"]
        assert abs(result.variants["int8"][f"model_{metric}"] - plain) <= 0.05
        assert abs(result.variants["int4"][f"model_{metric}"] - plain) <= 0.05
    assert result.plain >= 0.95 and result.oracle_plain < 0.7
    best = max(result.variants, key=lambda k: result.variants[k]["model"])
    assert result.attacked == result.variants[best]["model"]
    assert result.oracle_attacked == result.variants[best]["oracle"]


def test_quantization_does_not_restore_grad_ascent_on_the_tiny_model(world):
    # Measured (torch 2.13 CPU), GradAscent 12 steps at lr 3e-4:
    #   model  ROUGE plain 0.104, int8 0.104, int4 0.104 | Prob 0.174, 0.174, 0.173
    #   oracle ROUGE plain 0.513, int8 0.513, int4 0.513 | Prob 0.066, 0.066, 0.067
    # 4-bit RTN does NOT restore the forgotten facts here, unlike Zhang et al. 2024 on 7B models
    # unlearned at lr 1e-5: to forget at all the tiny model needs updates of ~15% of a 4-bit
    # step (mean |delta| / scale 0.15), enough for the unlearned weights to keep their effect
    # after rounding. (Gentler GradAscent, 12 steps at lr 1e-4, forgets only partly: ROUGE
    # 0.803, and int4 lifts it to 0.869 - a small effect in Zhang et al.'s direction.)
    model = world.model("ga")
    before = copy.deepcopy(model.state_dict())
    ctx = AttackContext(task=world.task, target=AttackTarget("ga", model, world.tokenizer,
                                                             world.fmt),
                        oracle=world.target("oracle"), probe=ProbeOptions())
    result = ATTACKS.get("quantization", "llm")().run(ctx)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    for metric in ("rouge", "prob"):
        plain = result.details[f"plain_{metric}"]
        for variant in ("int8", "int4"):
            assert abs(result.variants[variant][f"model_{metric}"] - plain) <= 0.05
    assert result.plain < 0.3 and result.attacked < 0.3  # forgetting survives quantization
    assert result.recovery is not None and result.recovery < 0  # still below the oracle


# -- logit lens ----------------------------------------------------------------------------------
def test_logit_lens_first_token_on_memorised_model(world):
    # measured: the first answer token is top-1 at the last layer for 4/4 forget records (layer 1:
    # 4/4); the oracle also has it in its top-4 at the last layer for 4/4 (top-1 for 2/4): the
    # first token is the person's name, copied from the question
    result = world.attack("logit_lens", "memorised", target="first")
    assert [point["layer"] for point in result.curve] == [1, 2]  # one entry per layer
    assert result.curve[-1]["model_top1"] >= 0.75
    assert result.plain == result.curve[-1]["model"] and result.attacked >= result.plain
    assert result.oracle_plain >= 0.75  # uninformative target: the oracle predicts it too


def test_logit_lens_divergent_token(world):
    # the default target is the first token where the paraphrased answer leaves every
    # perturbed answer; measured top-4 (any layer = last layer here): memorised 0.50,
    # GradAscent 0.50, oracle 0.25
    record = world.task.forget.records[0]
    ids, token = lens_query(world.tokenizer, world.fmt, record)
    prompt_len = len(lens_query(world.tokenizer, world.fmt, record, "first")[0])
    prefix = ids[prompt_len:]
    others = [encode_answer(world.tokenizer, world.fmt, p, record.question)
              for p in record.perturbed_answers]
    assert all(o[:len(prefix) + 1] != [*prefix, token] for o in others)
    assert any(o[:len(prefix)] == prefix for o in others)

    memorised = world.attack("logit_lens", "memorised")
    unlearned = world.attack("logit_lens", "ga")
    assert memorised.attacked >= memorised.oracle_attacked
    assert memorised.attacked >= 0.5 and memorised.oracle_attacked <= 0.25
    assert unlearned.attacked >= unlearned.plain
    assert len(memorised.details["ranks"]) == len(world.task.forget.records)


# -- linear probe --------------------------------------------------------------------------------
def test_linear_probe(world):
    # Pairwise accuracy on the 12 (true, perturbed) pairs of the 4 forget facts, contrast probe.
    # Measured at the last layer: probe memorised 0.917, GradAscent 0.667, oracle 0.417; at the
    # default middle layer (1 of 2): memorised 0.583, oracle 0.417. Output preference (plain):
    # memorised 0.917, GradAscent 1.000 (!), oracle 0.583 - GradAscent wrecks the greedy answers
    # but still ranks the true paraphrase above every perturbed one.
    last = world.attack("linear_probe", "memorised", layer=-1)
    assert last.attacked >= 0.75 and last.oracle_attacked <= 0.5
    assert last.details["model"]["train_pairwise"] >= 0.9  # the probe fits the retain facts
    unlearned = world.attack("linear_probe", "ga", layer=-1)
    assert last.oracle_attacked < unlearned.attacked <= last.attacked
    assert unlearned.plain >= 0.9 and unlearned.oracle_plain <= 0.6
    middle = world.attack("linear_probe", "memorised")
    assert middle.attacked >= middle.oracle_attacked
    assert middle.options["layer"] is None and middle.metric == "pairwise_accuracy"
