"""Relearning and rephrasing attacks on a tiny memorised Llama, its oracle and a GradAscent model.

The models copy ``tests/llm/methods/conftest.py``'s ``memorised`` fixture (6 synthetic people x
4 facts, 1 forget person = 4 forget facts, 16 retain facts; 100 epochs at lr 3e-3): the target
is trained on forget + retain, the oracle on retain only with the same settings, and GradAscent
unlearns the target for 12 steps at lr 3e-4 (as the method tests do).

The numbers in comments were measured on this machine (CPU, one thread) with the settings used
here. At this scale GradAscent over-forgets: its greedy answers for the forget person degenerate
("hhhhor is undecrest."), so its plain ROUGE-L (0.10) is *below* the oracle's (0.49, which
comes from the shared answer templates and the name copied from the question), while its answer
Prob (0.17) stays above the oracle's (0.07).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from obliviate.core.errors import ConfigError
from obliviate.core.registry import ATTACKS, METHODS
from obliviate.core.task import DataSplit, UnlearningTask
from obliviate.llm.attacks.base import AttackContext, AttackTarget, ProbeOptions
from obliviate.llm.attacks.relearning import RelearningConfig, related_records, relearn_split
from obliviate.llm.attacks.rephrasing import cloze, multiple_choice, split_answer
from obliviate.llm.data.formatting import collate, encode_answer, encode_record, resolve_format
from obliviate.llm.data.records import QARecord
from obliviate.llm.data.synthetic import SyntheticFactsConfig, generate_synthetic_facts


@dataclass
class Trio:
    task: UnlearningTask
    tokenizer: Any
    fmt: Any
    target: torch.nn.Module
    oracle: torch.nn.Module
    unlearned: torch.nn.Module

    def context(self, name: str, seed: int = 0) -> AttackContext:
        model = {"target": self.target, "grad_ascent": self.unlearned}[name]
        return AttackContext(
            task=self.task, target=AttackTarget(name, model, self.tokenizer, self.fmt),
            oracle=AttackTarget("oracle", self.oracle, self.tokenizer, self.fmt),
            probe=ProbeOptions(max_new_tokens=32), seed=seed)


@pytest.fixture(scope="session")
def trio(tmp_path_factory) -> Trio:
    import obliviate.llm.attacks  # noqa: F401  (registers the attacks)
    import obliviate.llm.methods  # noqa: F401  (registers the methods)
    from obliviate.llm.methods.base import UnlearnContext, UnlearnTrainConfig
    from obliviate.llm.models import TinyModelConfig, tiny_llama, train_tokenizer
    from obliviate.llm.task import task_texts
    from obliviate.llm.training import TrainConfig, train

    facts = generate_synthetic_facts(SyntheticFactsConfig(
        num_people=6, facts_per_person=4, forget_people=1, holdout_people=1, seed=0))
    task = UnlearningTask("attacks", "llm", DataSplit("forget", facts["forget"]),
                          DataSplit("retain", facts["retain"]),
                          eval_splits={"holdout": DataSplit("holdout", facts["holdout"])})
    tokenizer = train_tokenizer(task_texts(task), vocab_size=400)
    fmt = resolve_format(tokenizer, "base")
    config = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                             vocab_size=400)

    def fit(records: list[QARecord]) -> torch.nn.Module:
        model = tiny_llama(tokenizer, config, seed=0)
        examples = [encode_record(tokenizer, fmt, r) for r in records]
        train(model, examples, lambda b: collate(b, tokenizer.pad_token_id),
              TrainConfig(epochs=100, learning_rate=3e-3, batch_size=8, warmup_ratio=0.05,
                          weight_decay=0.0, lr_scheduler="cosine"))
        return model.eval()

    target = fit(list(task.full.records))
    oracle = fit(list(task.retain.records))
    ctx = UnlearnContext(tokenizer=tokenizer, fmt=fmt, task=task, max_length=96,
                         train=UnlearnTrainConfig(max_steps=12, learning_rate=3e-4, batch_size=4,
                                                  warmup_ratio=0.0, checkpoint_every=1000,
                                                  log_every=4))
    unlearned = METHODS.get("grad_ascent", "llm")().run(
        copy.deepcopy(target), task, tmp_path_factory.mktemp("ga"), ctx=ctx,
        save=False).model.eval()
    return Trio(task, tokenizer, fmt, target, oracle, unlearned)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# -- relearning -----------------------------------------------------------------------------------
# lr 1e-3 suits the tiny model (its own training used 3e-3; the default 1e-5 is for pretrained
# LLMs). Measured, split seed 0 (relearn facts 2 and 3 of the forget person, probe 0 and 1):
#   forget_split  k=0/5/10/20  GradAscent ROUGE 0.08/0.83/0.83/0.67, Prob 0.18/0.50/0.56/0.52
#                              oracle     ROUGE 0.50/0.50/0.33/0.08, Prob 0.04/0.04/0.03/0.02
#   related (10 retain facts)  GradAscent ROUGE 0.10/0.40/0.81/0.54, Prob 0.17/0.57/0.73/0.71
#                              oracle     ROUGE 0.49/0.49/0.49/0.49, Prob 0.07/0.07/0.07/0.06
# Across split seeds 0-2 and lr 3e-4..3e-3 (with 2 or 8 related facts) GradAscent's relearned
# Prob stayed above the oracle's in both settings; related-setting ROUGE separated less reliably
# (the oracle's template matches keep it at 0.45-0.49; GradAscent's peak ranged 0.28-0.81), so
# the related assertions are on Prob, plus the peak ROUGE measured here.
RELEARN = {"learning_rate": 1e-3, "steps": [5, 10, 20]}


@pytest.fixture(scope="module")
def relearned(trio) -> dict[str, Any]:
    attack = ATTACKS.get("relearning", "llm")(**RELEARN)
    before = {"target": _state(trio.target), "oracle": _state(trio.oracle),
              "grad_ascent": _state(trio.unlearned)}
    results = {name: attack.run(trio.context(name)) for name in ("grad_ascent", "target")}
    return {"results": results, "before": before}


def _point(result: Any, setting: str, k: int) -> dict[str, Any]:
    return next(c for c in result.curve if c["setting"] == setting and c["k"] == k)


def test_relearning_never_modifies_the_passed_models(trio, relearned):
    before = relearned["before"]
    assert _unchanged(trio.target, before["target"])
    assert _unchanged(trio.oracle, before["oracle"])
    assert _unchanged(trio.unlearned, before["grad_ascent"])


def test_relearning_result_shape(relearned):
    result = relearned["results"]["grad_ascent"]
    assert result.attack == "relearning" and result.metric == "rouge"
    for setting in ("forget_split", "related"):
        ks = [c["k"] for c in result.curve if c["setting"] == setting]
        assert ks == [0, 5, 10, 20]
        assert all({"setting", "k", "model", "oracle"} <= set(c) for c in result.curve)
        assert result.variants[setting]["k"] == 20
    split = result.variants["forget_split"]
    assert split["n_train"] == 2 and split["n_probe"] == 2
    assert result.variants["related"]["n_train"] == 10
    assert result.variants["related"]["n_probe"] == 4
    # attacked / plain are forget_split's k=20 / k=0 values
    assert result.attacked == _point(result, "forget_split", 20)["model"]
    assert result.plain == _point(result, "forget_split", 0)["model"]
    assert result.oracle_attacked == _point(result, "forget_split", 20)["oracle"]
    assert result.recovery == pytest.approx(result.attacked - result.oracle_attacked)


def test_relearning_two_forget_facts_brings_back_the_held_out_two(relearned):
    result = relearned["results"]["grad_ascent"]
    # measured: plain 0.08 -> attacked 0.67 (ROUGE-L recall); oracle 0.50 -> 0.08
    assert result.attacked > result.plain + 0.3
    assert result.recovery > 0.3
    peak = max(c["model"] for c in result.curve if c["setting"] == "forget_split")
    assert peak > 0.6  # 0.83 at k=5 and 10
    # Prob: 0.18 -> 0.52 for GradAscent, 0.04 -> 0.02 for the oracle
    top = _point(result, "forget_split", 20)
    assert top["model_prob"] > 0.3 > 0.1 > top["oracle_prob"]


def test_held_out_facts_cannot_be_guessed_from_the_relearned_ones(relearned):
    """The oracle never saw the forget person: relearning two of their facts does not teach it
    the other two (Deeb & Roger's condition on the split)."""
    result = relearned["results"]["grad_ascent"]
    oracle = [c["oracle_prob"] for c in result.curve if c["setting"] == "forget_split"]
    assert max(oracle) < 0.1  # measured 0.02-0.04 at every k


def test_relearning_on_disjoint_retain_data_lifts_grad_ascent_above_the_oracle(relearned):
    result = relearned["results"]["grad_ascent"]
    start, end = _point(result, "related", 0), _point(result, "related", 20)
    # measured Prob: GradAscent 0.17 -> 0.71, oracle 0.07 -> 0.06
    assert end["model_prob"] > start["model_prob"] + 0.3
    assert end["model_prob"] > end["oracle_prob"] + 0.3
    assert end["oracle_prob"] < start["oracle_prob"] + 0.05
    # ROUGE peaks at k=10: 0.81 vs the oracle's 0.49 (from 0.10 before relearning)
    peak = _point(result, "related", 10)
    assert peak["model_rouge"] > peak["oracle_rouge"] + 0.15


def test_relearning_keeps_what_the_target_knows(relearned):
    result = relearned["results"]["target"]
    # measured: the target answers its held-out forget facts perfectly before and after
    assert result.plain > 0.9 and result.attacked > 0.9
    assert result.recovery > 0.5


def test_relearn_split_within_entity_is_disjoint_stratified_and_deterministic():
    facts = generate_synthetic_facts(SyntheticFactsConfig(
        num_people=5, facts_per_person=5, forget_people=3, holdout_people=0, seed=1))
    records = facts["forget"]
    relearn, held = relearn_split(records, 0.5, seed=3)
    assert set(relearn).isdisjoint(held) and sorted(relearn + held) == list(range(15))
    assert {records[i].key() for i in relearn}.isdisjoint({records[i].key() for i in held})
    people = {r.entity for r in records}
    assert len(people) == 3
    for person in people:  # every person has relearned and held-out facts: 2 or 3 of 5
        mine = [i for i, r in enumerate(records) if r.entity == person]
        assert 1 <= len(set(mine) & set(relearn)) <= len(mine) - 1
        assert len(set(mine) & set(relearn)) in (2, 3)
    assert relearn_split(records, 0.5, seed=3) == (relearn, held)
    others = [relearn_split(records, 0.5, seed=s)[0] for s in range(4, 10)]
    assert any(o != relearn for o in others)


def test_relearn_split_other_policies_and_errors():
    facts = generate_synthetic_facts(SyntheticFactsConfig(
        num_people=5, facts_per_person=3, forget_people=4, holdout_people=0, seed=2))
    records = facts["forget"]
    relearn, held = relearn_split(records, 0.5, seed=0, split_by="across_entities")
    assert {records[i].entity for i in relearn}.isdisjoint({records[i].entity for i in held})
    assert len(relearn) == 6 and len(held) == 6
    relearn, held = relearn_split(records, 0.25, seed=0, split_by="record")
    assert len(relearn) == 3 and len(held) == 9 and set(relearn).isdisjoint(held)
    # records without entity and one-fact entities are pooled and split
    loose = [QARecord(f"q{i}", f"a{i}") for i in range(4)] + [QARecord("q", "a", entity="x")]
    relearn, held = relearn_split(loose, 0.5, seed=0)
    assert len(relearn) in (2, 3) and relearn and held and set(relearn).isdisjoint(held)
    with pytest.raises(ConfigError):
        relearn_split(loose[:1], 0.5)
    with pytest.raises(ConfigError):
        relearn_split(records[:3], 0.5, split_by="across_entities")  # one entity


def test_relearning_config_and_related_sample():
    config = RelearningConfig(steps=[20, 5, 5])
    assert config.steps == [0, 5, 20]
    with pytest.raises(Exception, match="steps"):
        RelearningConfig(steps=[-1])
    retain = [QARecord(f"q{i}", f"a{i}") for i in range(12)]
    sample = related_records(retain, 5, seed=0)
    assert len(sample) == 5 and sample == related_records(retain, 5, seed=0)
    assert [retain.index(r) for r in sample] == sorted(retain.index(r) for r in sample)
    assert related_records(retain, None, seed=0) == retain


# -- rephrasing -----------------------------------------------------------------------------------
# Measured (ROUGE-L recall / Prob; model vs oracle on the same variant):
#                       GradAscent        oracle           target
#   plain               0.10 / 0.17       0.49 / 0.07      0.93 / 0.98
#   paraphrase          0.00 / 0.12       0.23 / 0.04      0.21 / 0.49
#   fill_in_blank       0.00 / 0.08       0.00 / 0.08      0.19 / 0.20
#   answer_prefix       0.16 / 0.15       0.44 / 0.09      0.97 / 0.98
#   jailbreak (best)    0.02 / 0.10       0.00 / 0.04      0.15 / 0.22
#   few_shot_retain     0.00 / 0.12       0.04 / 0.04      0.15 / 0.23
#   multiple_choice     acc 0.75          acc 0.25         acc 0.75   (chance 0.25)
# So no rephrasing brings GradAscent's *generations* back above the oracle (its best variant,
# answer_prefix, stays 0.28 below), but multiple choice shows it still prefers the true answer
# exactly as often as the target does (3 of 4; the same under MC shuffle seeds 0-3), and its
# answer Prob stays above the oracle's under every rephrasing.
@pytest.fixture(scope="module")
def rephrased(trio) -> dict[str, Any]:
    attack = ATTACKS.get("rephrasing", "llm")()
    before = _state(trio.unlearned)
    results = {name: attack.run(trio.context(name)) for name in ("grad_ascent", "target")}
    assert _unchanged(trio.unlearned, before)
    return results


def test_rephrasing_reports_every_variant_with_the_oracle(rephrased):
    result = rephrased["grad_ascent"]
    assert set(result.variants) == {"paraphrase", "fill_in_blank", "multiple_choice",
                                    "answer_prefix", "jailbreak_system_prompt",
                                    "few_shot_retain"}
    assert result.variants["multiple_choice"]["metric"] == "accuracy"
    assert result.variants["multiple_choice"]["chance"] == pytest.approx(0.25)
    best = result.details["best_variant"]
    assert best != "multiple_choice"
    assert result.attacked == result.variants[best]["model"]
    assert result.oracle_attacked == result.variants[best]["oracle"]
    generation = [v for k, v in result.variants.items() if k != "multiple_choice"]
    assert result.attacked == max(v["model"] for v in generation)
    assert len(result.variants["jailbreak_system_prompt"]["per_prompt"]) == 3


def test_answer_prefix_elicits_what_the_target_knows(rephrased):
    result = rephrased["target"]
    prefix = result.variants["answer_prefix"]
    assert prefix["model"] > 0.9 and prefix["oracle"] < 0.6  # measured 0.97 vs 0.44
    assert result.details["best_variant"] == "answer_prefix"
    assert result.recovery > 0.4


def test_rephrasing_does_not_restore_grad_ascent_generations(rephrased):
    result = rephrased["grad_ascent"]
    assert result.details["best_variant"] == "answer_prefix"  # 0.16
    assert result.attacked < result.oracle_attacked - 0.15  # 0.16 vs 0.44
    assert result.variants["answer_prefix"]["model"] < 0.3


def test_multiple_choice_exposes_what_grad_ascent_kept(rephrased):
    ga = rephrased["grad_ascent"].variants["multiple_choice"]
    target = rephrased["target"].variants["multiple_choice"]
    assert ga["model"] > ga["oracle"]  # 0.75 vs 0.25 (= chance)
    assert ga["model"] == target["model"]  # the target also picks 3 of 4
    # the answer likelihood stays above the oracle's under rephrasings (0.12 vs 0.04)
    for variant in ("paraphrase", "few_shot_retain"):
        entry = rephrased["grad_ascent"].variants[variant]
        assert entry["model_prob"] > 2 * entry["oracle_prob"], variant


def test_cloze_blanks_the_last_third_of_the_answer():
    assert cloze("Brynaya Grimadahl works as an actuary.") == (
        "Brynaya Grimadahl works as ____", "an actuary.")
    assert cloze("Seven words are in this answer here.", 1 / 3, "[BLANK]") == (
        "Seven words are in [BLANK]", "this answer here.")
    assert cloze("Two words") == ("Two ____", "words")
    assert cloze("Yes.") == ("____", "Yes.")
    with pytest.raises(ConfigError):
        cloze("   ")


def test_split_answer_keeps_at_least_one_word_to_probe():
    assert split_answer("Brynaya Grimadahl works as an actuary.") == (
        "Brynaya Grimadahl works", "as an actuary.")
    assert split_answer("Two words", 3) == ("Two", "words")
    assert split_answer("One") is None


def test_answer_prefix_tokens_match_the_training_tokens(trio):
    """Prompt + prefix + rest, tokenised apart, equals the answer as encoded for training."""
    tok = trio.tokenizer
    for record in trio.task.forget.records:
        prefix, rest = split_answer(record.answer, 3)
        joined = (tok(" " + prefix, add_special_tokens=False)["input_ids"]
                  + tok(" " + rest, add_special_tokens=False)["input_ids"])
        assert joined == encode_answer(tok, trio.fmt, record.answer)[:-1]


def test_multiple_choice_prompt_and_shuffle():
    record = QARecord("Where is X from?", "X's hometown is A.",
                      paraphrased_answer="X comes from A.",
                      perturbed_answers=("X comes from B.", "X comes from C.", "X comes from D."))
    item = multiple_choice(record, seed=0, index=0)
    assert item is not None
    assert sorted(item.options) == sorted(["X comes from A.", *record.perturbed_answers])
    assert item.options[item.correct] == "X comes from A."  # the paraphrased answer's template
    assert item.question.startswith("Where is X from?\nOptions:\nA. ")
    for letter, option in zip("ABCD", item.options, strict=True):
        assert f"\n{letter}. {option}" in item.question
    assert multiple_choice(record, seed=0, index=0) == item
    shuffles = [multiple_choice(record, seed=s, index=0) for s in range(8)]
    assert len({m.options for m in shuffles if m is not None}) > 1
    assert all(m is not None and m.options[m.correct] == "X comes from A." for m in shuffles)
    plain = multiple_choice(QARecord("q?", "the answer", perturbed_answers=("a wrong one",)))
    assert plain is not None and plain.options[plain.correct] == "the answer"
    assert multiple_choice(QARecord("q?", "a")) is None


def test_both_attacks_are_registered():
    import obliviate.llm.attacks  # noqa: F401

    for name in ("relearning", "rephrasing"):
        assert ATTACKS.get(name, "llm").name == name


def test_attacks_run_without_an_oracle_and_on_the_prob_metric(trio):
    ctx = trio.context("grad_ascent")
    ctx = AttackContext(task=ctx.task, target=ctx.target, oracle=None,
                        probe=ProbeOptions(max_new_tokens=8, metric="prob"))
    relearn = ATTACKS.get("relearning", "llm")(settings=["related"], steps=[2],
                                                learning_rate=1e-3).run(ctx)
    assert [c["k"] for c in relearn.curve] == [0, 2]
    assert relearn.oracle_attacked is None and relearn.recovery is None
    assert relearn.attacked == relearn.curve[-1]["model_prob"]
    rephrase = ATTACKS.get("rephrasing", "llm")(variants=["answer_prefix",
                                                          "multiple_choice"]).run(ctx)
    assert rephrase.details["best_variant"] == "answer_prefix"
    assert rephrase.attacked == rephrase.variants["answer_prefix"]["model_prob"]
    assert rephrase.oracle_attacked is None


def test_oracle_is_measured_once_for_every_attacked_model(trio, monkeypatch):
    """The oracle's probes (plain, rephrased, quantized) are the same for every unlearned model
    of a run: one oracle target measures them once, and the values equal a fresh measurement."""
    import obliviate.llm.attacks.base as base
    import obliviate.llm.attacks.quantization as quantization

    generated: list[torch.nn.Module] = []
    quantized: list[torch.nn.Module] = []
    real_probe, real_quantize = base._forget_probe, quantization.quantize_model

    def counting_probe(target, *args, **kwargs):
        generated.append(target.model)
        return real_probe(target, *args, **kwargs)

    def counting_quantize(model, *args, **kwargs):
        quantized.append(model)
        return real_quantize(model, *args, **kwargs)

    monkeypatch.setattr(base, "_forget_probe", counting_probe)
    monkeypatch.setattr(quantization, "quantize_model", counting_quantize)
    rephrasing = ATTACKS.get("rephrasing", "llm")(variants=["paraphrase"])
    quantize = ATTACKS.get("quantization", "llm")(bits=[4])
    oracle = AttackTarget("oracle", trio.oracle, trio.tokenizer, trio.fmt)
    shared = []
    for name in ("target", "grad_ascent"):
        ctx = trio.context(name)
        ctx.oracle = oracle
        shared.append((rephrasing.run(ctx), quantize.run(ctx)))
    # plain probe (shared by both attacks) + paraphrase, once for both models; one int4 copy
    assert sum(m is trio.oracle for m in generated) == 2
    assert sum(m is trio.oracle for m in quantized) == 1
    assert shared[0][0].variants["paraphrase"]["model"] != \
        shared[1][0].variants["paraphrase"]["model"]  # the models themselves are measured

    fresh_rephrased, fresh_quantized = (rephrasing.run(trio.context("grad_ascent")),
                                        quantize.run(trio.context("grad_ascent")))
    for rephrased, quant in shared:
        assert rephrased.oracle_plain == fresh_rephrased.oracle_plain
        assert rephrased.variants["paraphrase"]["oracle"] == \
            fresh_rephrased.variants["paraphrase"]["oracle"]
        assert quant.oracle_attacked == fresh_quantized.oracle_attacked
    assert sum(m is trio.oracle for m in quantized) == 2  # a new oracle target measures anew
