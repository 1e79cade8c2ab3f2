"""Building tasks from the synthetic generator and from JSONL, and rejecting bad input."""

from __future__ import annotations

import json

import pytest

from obliviate.core.errors import ConfigError, DataError
from obliviate.llm.data.synthetic import SyntheticFactsConfig
from obliviate.llm.task import TaskConfig, build_task


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_synthetic_task_provenance_is_deterministic():
    config = TaskConfig(synthetic=SyntheticFactsConfig(num_people=5, facts_per_person=2,
                                                       forget_people=1, holdout_people=1))
    a, b = build_task(config), build_task(config)
    assert (len(a.forget), len(a.retain), len(a.eval_splits["holdout"])) == (2, 8, 2)
    assert a.provenance() == b.provenance()
    other = build_task(TaskConfig(synthetic=SyntheticFactsConfig(
        num_people=5, facts_per_person=2, forget_people=1, holdout_people=1, seed=1)))
    assert other.forget.sha256 != a.forget.sha256


def test_jsonl_task(tmp_path):
    forget = write_jsonl(tmp_path / "f.jsonl", [{"question": "Q1?", "answer": "A1"},
                                                {"text": "some private text"}])
    retain = write_jsonl(tmp_path / "r.jsonl", [{"question": "Q2?", "answer": "A2"}])
    task = build_task(TaskConfig(source="jsonl", forget_path=forget, retain_path=retain))
    assert len(task.forget) == 2 and task.forget.records[1].is_text


@pytest.mark.parametrize("rows, message", [
    ([{"question": "Q?"}], r"f.jsonl:1: missing field 'answer'"),
    ([{"question": "Q?", "answer": 3}], r"f.jsonl:1: field 'answer' must be a string"),
    ([["not", "an", "object"]], r"f.jsonl:1: expected a JSON object"),
    ([], r"f.jsonl: no records"),
])
def test_bad_jsonl_is_named(tmp_path, rows, message):
    forget = write_jsonl(tmp_path / "f.jsonl", rows)
    retain = write_jsonl(tmp_path / "r.jsonl", [{"question": "Q2?", "answer": "A2"}])
    with pytest.raises(DataError, match=message):
        build_task(TaskConfig(source="jsonl", forget_path=forget, retain_path=retain))


def test_invalid_json_line(tmp_path):
    forget = tmp_path / "f.jsonl"
    forget.write_text('{"question": "Q?", "answer": "A"}\n{"question": \n')
    retain = write_jsonl(tmp_path / "r.jsonl", [{"question": "Q2?", "answer": "A2"}])
    with pytest.raises(DataError, match=r"f.jsonl:2: invalid JSON"):
        build_task(TaskConfig(source="jsonl", forget_path=str(forget), retain_path=retain))


def test_overlap_between_forget_and_retain(tmp_path):
    row = {"question": "Q?", "answer": "A"}
    forget = write_jsonl(tmp_path / "f.jsonl", [row])
    retain = write_jsonl(tmp_path / "r.jsonl", [row, {"question": "Q2?", "answer": "B"}])
    with pytest.raises(DataError, match="1 record\\(s\\) appear in both"):
        build_task(TaskConfig(source="jsonl", forget_path=forget, retain_path=retain))


def test_missing_file(tmp_path):
    retain = write_jsonl(tmp_path / "r.jsonl", [{"question": "Q2?", "answer": "A2"}])
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        build_task(TaskConfig(source="jsonl", forget_path=str(tmp_path / "nope.jsonl"),
                              retain_path=retain))


def test_jsonl_source_needs_paths():
    from obliviate.core.recipe import validate

    with pytest.raises(ConfigError, match="needs task.forget_path"):
        validate(TaskConfig, {"source": "jsonl"})


def test_benchmark_is_chosen_by_name_and_source_is_its_alias(tmp_path):
    from obliviate.core.recipe import validate

    forget = write_jsonl(tmp_path / "f.jsonl", [{"question": "Q1?", "answer": "A1"}])
    retain = write_jsonl(tmp_path / "r.jsonl", [{"question": "Q2?", "answer": "A2"}])
    by_name = validate(TaskConfig, {"benchmark": "jsonl", "forget_path": forget,
                                    "retain_path": retain})
    by_alias = validate(TaskConfig, {"source": "jsonl", "forget_path": forget,
                                     "retain_path": retain})
    assert by_name == by_alias and by_name.settings.forget_path == forget
    dumped = by_name.model_dump(mode="json")  # flat again, so a dumped recipe reloads as it was
    assert dumped["benchmark"] == "jsonl" and dumped["retain_path"] == retain
    assert validate(TaskConfig, dumped) == by_name
    assert build_task(by_name).metadata == {"benchmark": "jsonl"}


def test_unknown_benchmark_lists_the_registered_ones():
    from obliviate.core.recipe import validate

    with pytest.raises(ConfigError) as err:
        validate(TaskConfig, {"benchmark": "mmlu"}, source="r.yaml")
    message = str(err.value)
    assert "\n" not in message and "unknown benchmark 'mmlu'" in message
    assert "jsonl" in message and "synthetic" in message and "tofu" in message


def test_a_key_of_another_benchmark_is_set_aside_and_an_unknown_key_is_named():
    """`obliviate finetune demo task.source=jsonl task.forget_path=...` switches the demo's
    benchmark by an override: the synthetic benchmark's own keys still in the recipe must not
    stop it, while a key that no benchmark knows stays an error naming it."""
    from obliviate.core.recipe import validate

    task = validate(TaskConfig, {"benchmark": "synthetic", "forget_split": "forget01"})
    assert task.benchmark == "synthetic" and "forget_split" not in task.model_dump()
    with pytest.raises(ConfigError, match="forget_splt: Extra inputs are not permitted"):
        validate(TaskConfig, {"benchmark": "synthetic", "forget_splt": "forget01"})
    with pytest.raises(ConfigError, match="forget_path"):
        validate(TaskConfig, {"benchmark": "jsonl", "synthetic": {"num_people": 3}})


def test_a_benchmarks_own_source_key_is_not_the_benchmark_alias():
    """wmdp's config has a `source` key (its data folder): with `benchmark: wmdp` named, the key
    is wmdp's; without a benchmark, `source` still names one."""
    from obliviate.core.recipe import validate

    task = validate(TaskConfig, {"benchmark": "wmdp", "source": "/data/wmdp"})
    assert task.benchmark == "wmdp" and task.settings.source == "/data/wmdp"
    assert validate(TaskConfig, {"source": "wmdp"}).settings.source == "synthetic"
