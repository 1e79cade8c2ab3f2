"""TOFU loading: split sizes, fields, retain = full minus forget."""

from __future__ import annotations

import json

import pytest

from obliviate.core.errors import DataError
from obliviate.llm.data.tofu import load_tofu
from obliviate.llm.task import TaskConfig, build_task


def test_split_sizes_and_fields(tofu_root):
    data = load_tofu(tofu_root)
    assert len(data.full) == 4000
    sizes = {name: len(records) for name, records in data.forget.items()}
    assert sizes == {"forget01": 40, "forget05": 200, "forget10": 400}
    assert {k: len(v) for k, v in data.holdout.items()} == {
        "holdout01": 40, "holdout05": 200, "holdout10": 400}
    retain90 = data.retain("forget10")
    assert len(retain90) == 3600 and len(data.retain("forget01")) == 3960
    assert not {r.key() for r in retain90} & {r.key() for r in data.forget["forget10"]}
    assert [r.key() for r in retain90] == [r.key() for r in data.full[:3600]]  # order kept
    for record in data.forget["forget10"]:
        assert record.paraphrased_answer and len(record.perturbed_answers) == 5
    assert all(len(r.perturbed_answers) == 3 for r in data.evaluation["real_authors"])
    assert len(data.evaluation["world_facts"]) == 117
    assert len(data.evaluation["retain_eval"]) == 400
    assert data.idontknow and all(isinstance(x, str) and x for x in data.idontknow)
    # forget10 is the last 20 authors
    assert data.forget["forget10"][0].entity == "tofu_author_180"


def test_tofu_task_has_eval_splits(tofu_root):
    task = build_task(TaskConfig(source="tofu", tofu_path=str(tofu_root), forget_split="forget01",
                                 retain_limit=200))
    assert (len(task.forget), len(task.retain)) == (40, 200)
    assert set(task.eval_splits) == {"holdout", "retain_eval", "real_authors", "world_facts"}
    assert task.provenance()["splits"]["forget01"]["sha256"] == task.forget.sha256


def test_missing_tofu_file_names_it(tmp_path):
    with pytest.raises(DataError, match="full.json: file not found"):
        load_tofu(tmp_path)


def test_malformed_tofu_record_names_file_index_and_field(tmp_path):
    (tmp_path / "full.json").write_text(json.dumps([{"question": "q?", "answer": "a"},
                                                    {"question": "q2?"}]))
    with pytest.raises(DataError, match=r"full.json\[1\]: missing field 'answer'"):
        load_tofu(tmp_path)
