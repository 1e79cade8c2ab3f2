"""The synthetic MUSE-like corpus and the muse / muse_synthetic benchmarks."""

from __future__ import annotations

import json

import pytest

from obliviate.core.errors import ConfigError
from obliviate.core.recipe import validate
from obliviate.llm.data.synthetic import SyntheticFactsConfig, generate_people
from obliviate.llm.data.synthetic_news import SyntheticNewsConfig, generate_synthetic_news
from obliviate.llm.task import TaskConfig, build_task


def test_corpus_is_deterministic_split_and_derived_from_the_facts():
    cfg = SyntheticNewsConfig(num_people=10, forget_people=4, holdout_people=3, requests=2,
                              seed=5)
    a, b = generate_synthetic_news(cfg), generate_synthetic_news(cfg)
    assert {k: v.sha256 for k, v in a.items()} == {k: v.sha256 for k, v in b.items()}
    assert [len(a[k]) for k in ("raw_forget", "raw_retain1", "raw_holdout")] == [4, 6, 3]
    forget = {r.entity for r in a["raw_forget"]}
    assert forget.isdisjoint(r.entity for r in a["raw_retain1"])
    assert forget.isdisjoint(r.entity for r in a["raw_holdout"])
    assert all(r.is_text for r in a["raw_forget"])
    # every fact of a forget person is stated in their article, and asked with its value
    people = dict(generate_people(SyntheticFactsConfig(
        num_people=10, forget_people=4, holdout_people=4, facts_per_person=8, seed=5)))
    doc = a["raw_forget"].records[0]
    assert all(f.record.answer[1:] in doc.answer for f in people[doc.entity])
    qa = [r for r in a["knowmem_forget_qa"] if r.entity == doc.entity]
    assert len(qa) == 3 and all(r.answer in doc.answer for r in qa)
    assert {r.entity for r in a["knowmem_retain_qa"]} == {r.entity for r in a["raw_retain1"]}
    # ICL pairs are about someone outside every split
    icl = {r.entity for r in a["knowmem_forget_qa_icl"]}
    assert len(a["knowmem_forget_qa_icl"]) == 3 and icl.isdisjoint(
        {r.entity for k in ("raw_forget", "raw_retain1", "raw_holdout") for r in a[k]})
    # verbatim excerpts: prompt + gt is the article
    v = a["verbmem_forget"].records[0]
    assert v.question + v.answer == doc.answer and len(v.question.split()) == 16
    # sustainability parts are disjoint, scalability parts cumulative
    assert [len(a[f"sust_forget_{i}"]) for i in (1, 2)] == [2, 2]
    assert list(a["scal_forget_2"].records) == list(a["raw_forget"].records)


def test_corpus_any_size_and_growth_keeps_articles():
    small = generate_synthetic_news(SyntheticNewsConfig(num_people=6, forget_people=2,
                                                        requests=2))
    big = generate_synthetic_news(SyntheticNewsConfig(num_people=300, forget_people=50))
    assert len(big["raw_retain1"]) == 250 and len(big["knowmem_forget_qa"]) == 150
    # the first retain person's article is the same in both corpora
    assert small["raw_retain1"].records[0] == big["raw_retain1"].records[0]
    with pytest.raises(ValueError, match="requests"):
        SyntheticNewsConfig(num_people=6, forget_people=2, requests=3)


def test_benchmarks_build_the_same_task_shape(tmp_path):
    task = build_task(validate(TaskConfig, {"benchmark": "muse_synthetic",
                                            "news": {"num_people": 8, "forget_people": 4}}))
    assert task.name == "muse_synthetic" and task.forget.name == "raw_forget"
    assert {"holdout", "verbmem_forget", "knowmem_retain_qa", "privleak_holdout",
            "sust_forget_4", "scal_forget_4"} <= set(task.eval_splits)
    # the published layout: write the synthetic corpus as muse_bench JSON and load it as MUSE
    for name, split in generate_synthetic_news(SyntheticNewsConfig(
            num_people=8, forget_people=4)).items():
        config, _, part = name.partition("_")
        folder = tmp_path / "data" / "news" / config
        folder.mkdir(parents=True, exist_ok=True)
        if config == "verbmem":
            rows = [{"prompt": r.question, "gt": r.answer} for r in split]
        elif config == "knowmem":
            rows = [{"question": r.question, "answer": r.answer} for r in split]
        else:
            rows = [r.answer for r in split]
        (folder / f"{part}.json").write_text(json.dumps(rows))
    (tmp_path / "data" / "news" / "raw" / "retain2.json").write_text('["not generated"]')
    muse = build_task(validate(TaskConfig, {"benchmark": "muse", "muse_path": str(tmp_path)}))
    assert muse.name == "muse_news"
    assert [r.answer for r in muse.forget] == [r.answer for r in task.forget]
    assert [r.answer for r in muse.eval_splits["knowmem_forget_qa"]] == [
        r.answer for r in task.eval_splits["knowmem_forget_qa"]]
    with pytest.raises(ConfigError, match="corpus"):
        validate(TaskConfig, {"benchmark": "muse", "corpus": "poems"})
