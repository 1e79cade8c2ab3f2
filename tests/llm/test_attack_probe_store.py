"""Attack probes persisted across processes: a second oracle target with the same weights reads
them from disk; other weights, copies and replaced targets measure anew."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from obliviate.llm.attacks.base import AttackTarget, ProbeOptions, forget_probe, state_hash
from obliviate.llm.data.formatting import resolve_format
from obliviate.llm.models import TinyModelConfig, tiny_llama, train_tokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup():
    from obliviate.llm.data.synthetic import SyntheticFactsConfig, generate_synthetic_facts

    data = generate_synthetic_facts(SyntheticFactsConfig(num_people=6, facts_per_person=3,
                                                         forget_people=2, holdout_people=1))
    tok = train_tokenizer([t for s in data.values() for r in s for t in (r.question, r.answer)],
                          vocab_size=400)
    model = tiny_llama(tok, TinyModelConfig(hidden_size=32, num_heads=2, intermediate_size=64),
                       seed=0).eval()
    return data["forget"][:4], tok, model


def test_probes_come_back_from_disk_for_the_same_weights(setup, tmp_path, monkeypatch):
    import obliviate.llm.attacks.base as base

    records, tok, model = setup
    fmt = resolve_format(tok)
    options = ProbeOptions(max_new_tokens=6)
    first = AttackTarget("oracle", model, tok, fmt).persist(tmp_path)
    measured = forget_probe(first, records, options)
    assert len(list(tmp_path.glob("*.json"))) == 1

    calls = []
    real = base._forget_probe
    monkeypatch.setattr(base, "_forget_probe", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = AttackTarget("oracle", model, tok, fmt).persist(tmp_path)
    assert forget_probe(again, records, options) == measured and not calls
    # another probe setting, other weights, a copy or a replaced target: measured anew
    forget_probe(again, records, ProbeOptions(max_new_tokens=4))
    assert len(calls) == 1
    other = tiny_llama(tok, TinyModelConfig(hidden_size=32, num_heads=2, intermediate_size=64),
                       seed=1).eval()
    assert state_hash(other) != state_hash(model) == first.weights
    forget_probe(AttackTarget("oracle", other, tok, fmt).persist(tmp_path), records, options)
    assert len(calls) == 2
    for fresh in (first.copy(), replace(first, model=other)):
        assert fresh.store is None and not fresh.memo
        forget_probe(fresh, records, options)
    assert len(calls) == 4
    assert len(list(tmp_path.glob("*.json"))) == 3


def test_a_probe_computes_only_the_items_not_yet_probed_on_the_model(setup, monkeypatch):
    """Relearning probes the held-out half of the forget set, the other attacks the whole set:
    the whole-set probe computes only the other half, and every item's values equal a probe of
    all records at once; the greedy answers are ``greedy_generate``'s tokens."""
    import obliviate.llm.attacks.base as base
    from obliviate.llm.evaluation.generation import greedy_generate

    records, tok, model = setup
    fmt = resolve_format(tok)
    options = ProbeOptions(max_new_tokens=6)
    asked: list[list[str]] = []
    real = base._forget_probe
    monkeypatch.setattr(base, "_forget_probe",
                        lambda target, recs, opts, form, questions, verbatim:
                        asked.append(list(questions))
                        or real(target, recs, opts, form, questions, verbatim))
    target = AttackTarget("model", model, tok, fmt)
    half = forget_probe(target, records[2:], options)
    whole = forget_probe(target, records, options)
    assert asked == [[r.question for r in records[2:]], [r.question for r in records[:2]]]
    assert {name: values[2:] for name, values in whole.items()} == half

    fresh = forget_probe(AttackTarget("model", model, tok, fmt), records, options)
    assert len(asked) == 3 and whole["generations"] == fresh["generations"]
    assert whole["rouge"] == fresh["rouge"]
    assert whole["prob"] == pytest.approx(fresh["prob"], rel=1e-5)
    assert whole["generations"] == greedy_generate(model, tok, fmt,
                                                   [r.question for r in records], 6)
    # another question for the same record is another item
    forget_probe(target, records[:1], options, questions=["Who is it?"])
    assert asked[-1] == ["Who is it?"]


def test_the_oracles_relearning_curve_comes_back_from_disk(setup, tmp_path, monkeypatch):
    """The relearning attack fine-tunes the oracle once per run; a second process attacking
    another model reads the oracle's curve from the store instead of fine-tuning it again."""
    import obliviate.llm.attacks.relearning as relearning
    from obliviate.core.registry import ATTACKS
    from obliviate.core.task import DataSplit, UnlearningTask
    from obliviate.llm.attacks.base import AttackContext

    records, tok, model = setup
    fmt = resolve_format(tok)
    task = UnlearningTask("t", "llm", DataSplit("forget", records), DataSplit("retain", records))
    fitted: list[str] = []
    real = relearning.relearn_curve
    monkeypatch.setattr(relearning, "relearn_curve",
                        lambda target, *a, **k: fitted.append(target.name) or real(target, *a,
                                                                                    **k))
    attack = ATTACKS.get("relearning", "llm")(settings=["forget_split"], steps=[2],
                                              learning_rate=1e-3)
    results = []
    for _ in range(2):  # two processes: a fresh oracle target on the same store
        oracle = AttackTarget("oracle", model, tok, fmt).persist(tmp_path)
        ctx = AttackContext(task=task, target=AttackTarget("model", model, tok, fmt),
                            oracle=oracle, probe=ProbeOptions(max_new_tokens=4))
        results.append(attack.run(ctx))
    assert fitted == ["model", "oracle", "model"]
    assert results[0].curve == results[1].curve
    assert [c["k"] for c in results[1].curve] == [0, 2]


def test_a_bf16_measurement_is_its_own_probe_and_relearns_in_bf16(setup, tmp_path, monkeypatch):
    """``attack.mixed_precision: bf16`` measures anew (the fp32 probe on disk is not its value),
    close to fp32; relearning's fine-tune runs under the same autocast."""
    import obliviate.llm.attacks.base as base
    import obliviate.llm.attacks.relearning as relearning
    from obliviate.core.precision import measured_in

    records, tok, model = setup
    fmt = resolve_format(tok)
    options = ProbeOptions(max_new_tokens=6)
    fp32 = forget_probe(AttackTarget("oracle", model, tok, fmt).persist(tmp_path), records, options)
    calls = []
    real = base._forget_probe
    monkeypatch.setattr(base, "_forget_probe", lambda *a, **k: calls.append(1) or real(*a, **k))
    with measured_in("bf16"):
        low = forget_probe(AttackTarget("oracle", model, tok, fmt).persist(tmp_path), records,
                           options)
    assert calls == [1] and len(list(tmp_path.glob("*.json"))) == 2
    assert low["prob"] != fp32["prob"]
    assert low["prob"] == pytest.approx(fp32["prob"], rel=0.05)

    precisions: list[str] = []
    real_train = relearning.train
    monkeypatch.setattr(relearning, "train", lambda model, examples, collate, config, **k:
                        precisions.append(config.mixed_precision)
                        or real_train(model, examples, collate, config, **k))
    config = relearning.RelearningConfig(settings=["forget_split"], steps=[2])
    with measured_in("bf16"):
        curve = relearning.relearn_curve(AttackTarget("model", model, tok, fmt), records[:2],
                                         records[2:], config, options)
    assert precisions == ["bf16"] and sorted(curve) == [0, 2]
