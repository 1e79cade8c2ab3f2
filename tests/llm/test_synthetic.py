"""Tests for the deterministic synthetic fictitious-facts generator."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from obliviate.core.errors import ConfigError
from obliviate.llm.data.records import QARecord
from obliviate.llm.data.synthetic import (
    FACT_KINDS,
    SPLITS,
    SyntheticFactsConfig,
    generate_synthetic_facts,
)

_DIGEST_CODE = """
import hashlib, json
from obliviate.llm.data.synthetic import SyntheticFactsConfig, generate_synthetic_facts
data = generate_synthetic_facts(SyntheticFactsConfig(num_people=30, facts_per_person=12, seed=7))
blob = json.dumps({k: [r.to_dict() for r in v] for k, v in data.items()}, sort_keys=True)
print(hashlib.sha256(blob.encode("utf-8")).hexdigest())
"""


def _digest(data: dict[str, list[QARecord]]) -> str:
    blob = json.dumps({k: [r.to_dict() for r in v] for k, v in data.items()}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _all(data: dict[str, list[QARecord]]) -> list[QARecord]:
    return [record for split in SPLITS for record in data[split]]


def _swap(paraphrased: str, perturbed: str) -> tuple[str, str]:
    """The differing middles of two strings after stripping their common prefix and suffix."""
    start = 0
    while start < min(len(paraphrased), len(perturbed)) and paraphrased[start] == perturbed[start]:
        start += 1
    end = 0
    limit = min(len(paraphrased), len(perturbed)) - start
    while end < limit and paraphrased[-1 - end] == perturbed[-1 - end]:
        end += 1
    return paraphrased[start : len(paraphrased) - end], perturbed[start : len(perturbed) - end]


@pytest.fixture(scope="module")
def big() -> dict[str, list[QARecord]]:
    config = SyntheticFactsConfig(
        num_people=60, facts_per_person=len(FACT_KINDS), forget_people=6, holdout_people=10,
        num_perturbed=5, seed=3,
    )  # fmt: skip
    return generate_synthetic_facts(config)


def test_default_config_and_kinds() -> None:
    config = SyntheticFactsConfig()
    assert (config.num_people, config.facts_per_person, config.forget_people) == (20, 5, 2)
    assert (config.holdout_people, config.num_perturbed, config.seed) == (2, 3, 0)
    assert len(FACT_KINDS) >= 10 and len(set(FACT_KINDS)) == len(FACT_KINDS)
    data = generate_synthetic_facts()
    assert list(data) == ["forget", "retain", "holdout"]
    assert data == generate_synthetic_facts(config)


def test_same_seed_equal_different_seed_different() -> None:
    first = generate_synthetic_facts(SyntheticFactsConfig(seed=11))
    second = generate_synthetic_facts(SyntheticFactsConfig(seed=11))
    other = generate_synthetic_facts(SyntheticFactsConfig(seed=12))
    assert first == second and _digest(first) == _digest(second)
    assert first != other
    names = {r.entity for r in _all(first)}
    assert names != {r.entity for r in _all(other)}


def test_does_not_touch_global_rng() -> None:
    import random

    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate_synthetic_facts(SyntheticFactsConfig(num_people=10))
    assert random.random() == expected


@pytest.mark.parametrize("hash_seed", ["1", "4242"])
def test_identical_across_processes(hash_seed: str) -> None:
    config = SyntheticFactsConfig(num_people=30, facts_per_person=12, seed=7)
    expected = _digest(generate_synthetic_facts(config))
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    result = subprocess.run(
        [sys.executable, "-c", _DIGEST_CODE], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == expected


def test_split_sizes() -> None:
    config = SyntheticFactsConfig(
        num_people=9, facts_per_person=4, forget_people=3, holdout_people=2
    )
    data = generate_synthetic_facts(config)
    assert len(data["forget"]) == 3 * 4
    assert len(data["retain"]) == (9 - 3) * 4
    assert len(data["holdout"]) == 2 * 4
    empty = generate_synthetic_facts(SyntheticFactsConfig(holdout_people=0))
    assert empty["holdout"] == []


def test_schema_and_perturbed_answers(big: dict[str, list[QARecord]]) -> None:
    for record in _all(big):
        assert isinstance(record, QARecord)
        assert record.question.endswith("?") and record.answer.endswith(".")
        assert record.paraphrased_question and record.paraphrased_question.endswith("?")
        assert record.paraphrased_answer and record.paraphrased_answer.endswith(".")
        assert record.paraphrased_question != record.question
        assert record.paraphrased_answer != record.answer
        assert record.entity and record.entity in record.question
        assert record.entity in record.answer and record.entity in record.paraphrased_answer
        assert len(record.perturbed_answers) == 5
        assert len(set(record.perturbed_answers)) == 5
        for wrong in record.perturbed_answers:
            assert wrong != record.answer and wrong != record.paraphrased_answer
            assert record.entity in wrong
            true_part, wrong_part = _swap(record.paraphrased_answer, wrong)
            assert true_part or wrong_part  # e.g. "harpsichord" vs "harp"
            # The swapped-out text is part of the true value, so the answer contains it too.
            assert true_part in record.answer
        assert set(record.to_dict()) == {
            "question", "answer", "paraphrased_question", "paraphrased_answer",
            "perturbed_answer", "entity",
        }  # fmt: skip


def test_num_perturbed_respected() -> None:
    for count in (1, 5):
        data = generate_synthetic_facts(SyntheticFactsConfig(num_perturbed=count))
        assert all(len(r.perturbed_answers) == count for r in _all(data))


def test_order_person_by_person(big: dict[str, list[QARecord]]) -> None:
    for split in SPLITS:
        records = big[split]
        per_person = len(FACT_KINDS)
        assert len(records) % per_person == 0
        for start in range(0, len(records), per_person):
            block = records[start : start + per_person]
            assert len({r.entity for r in block}) == 1
        blocks = [records[i].entity for i in range(0, len(records), per_person)]
        assert len(blocks) == len(set(blocks))


def test_forget_people_are_the_last_people() -> None:
    base = dict(num_people=8, facts_per_person=3, holdout_people=0, seed=5)
    all_retain = generate_synthetic_facts(SyntheticFactsConfig(forget_people=1, **base))
    split = generate_synthetic_facts(SyntheticFactsConfig(forget_people=3, **base))
    people = all_retain["retain"] + all_retain["forget"]
    assert split["retain"] + split["forget"] == people
    assert split["forget"] == people[-3 * 3 :]


def test_holdout_and_sizes_do_not_change_other_facts() -> None:
    small = generate_synthetic_facts(SyntheticFactsConfig(holdout_people=0, facts_per_person=3))
    large = generate_synthetic_facts(SyntheticFactsConfig(holdout_people=4, facts_per_person=3))
    assert small["forget"] == large["forget"] and small["retain"] == large["retain"]
    fewer = generate_synthetic_facts(SyntheticFactsConfig(facts_per_person=2))
    assert [r.question for r in fewer["retain"]] == [
        r.question for i, r in enumerate(small["retain"]) if i % 3 < 2
    ]


def test_no_overlap_between_splits(big: dict[str, list[QARecord]]) -> None:
    questions = {split: {r.question for r in big[split]} for split in SPLITS}
    entities = {split: {r.entity for r in big[split]} for split in SPLITS}
    for a, b in [("forget", "retain"), ("forget", "holdout"), ("retain", "holdout")]:
        assert not questions[a] & questions[b]
        assert not entities[a] & entities[b]
    assert len(entities["forget"]) == 6
    assert len(entities["retain"]) == 54
    assert len(entities["holdout"]) == 10


def test_unique_names_and_questions(big: dict[str, list[QARecord]]) -> None:
    records = _all(big)
    names = [records[i].entity for i in range(0, len(records), len(FACT_KINDS))]
    assert len(names) == 70 == len(set(names))
    assert all(len(name.split()) == 2 for name in names if name)
    questions = [r.question for r in records]
    assert len(questions) == len(set(questions))
    paraphrased = [r.paraphrased_question for r in records]
    assert len(paraphrased) == len(set(paraphrased))


def test_many_people_stay_unique() -> None:
    data = generate_synthetic_facts(
        SyntheticFactsConfig(num_people=1500, facts_per_person=1, holdout_people=100)
    )
    names = [r.entity for r in _all(data)]
    assert len(names) == 1600 == len(set(names))


def test_templates_vary() -> None:
    kinds = len(FACT_KINDS)
    data = generate_synthetic_facts(SyntheticFactsConfig(num_people=40, facts_per_person=kinds))
    records = _all(data)
    for k in range(kinds):
        facts = records[k::kinds]
        questions = {r.question.replace(r.entity or "", "{name}") for r in facts}
        reworded = {(r.paraphrased_question or "").replace(r.entity or "", "{name}") for r in facts}
        assert len(questions) >= 2 and len(reworded) >= 2


@pytest.mark.parametrize(
    "settings",
    [
        {"num_people": 1},
        {"num_people": 3, "forget_people": 3},
        {"num_people": 3, "forget_people": 5},
        {"forget_people": 0},
        {"facts_per_person": 0},
        {"facts_per_person": len(FACT_KINDS) + 1},
        {"holdout_people": -1},
        {"num_perturbed": 0},
        {"num_perturbed": 6},
        {"num_people": 6000},
        {"colour": "teal"},
    ],
)
def test_invalid_configs_raise_config_error(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        SyntheticFactsConfig(**settings)
    message = str(info.value)
    assert "\n" not in message and message.startswith("synthetic facts config:")


def test_config_error_names_the_field() -> None:
    with pytest.raises(ConfigError, match="num_perturbed"):
        SyntheticFactsConfig(num_perturbed=9)
    with pytest.raises(ConfigError, match="forget_people"):
        SyntheticFactsConfig(num_people=2, forget_people=2)
