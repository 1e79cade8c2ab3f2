"""MUSE loaders on fixtures written in the published layouts (schemas.md §1)."""

from __future__ import annotations

import json

import pytest

from obliviate.core.errors import DataError
from obliviate.llm.data.muse import CONFIGS, load_muse, load_muse_rows

ROWS = {
    "raw": {"forget": ["Lowmere council approved the tram loop on Tuesday.",
                       "The ferry strike ended after nine days."],
            "retain1": ["Harl pass reopened."], "retain2": ["A new bridge at Quill."],
            "holdout": ["Storms closed the coast road."]},
    "verbmem": {"forget": [{"prompt": "The ferry left Quill Bay at dawn and",
                            "gt": " reached the outer reef by noon."}]},
    "knowmem": {s: [{"question": f"Which town approved the tram loop? ({s})",
                     "answer": "Lowmere"}]
                for s in ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl")},
    "privleak": {s: [f"A storm closed the Harl pass ({s})."]
                 for s in ("forget", "retain", "holdout")},
    "scal": {f"forget_{i}": ["doc"] * i for i in range(1, 5)},
    "sust": {f"forget_{i}": [f"sust doc {i}"] for i in range(1, 5)},
}


def _row(config, value):
    return {"text": value} if isinstance(value, str) else value


def write_parquet(root, extra_column=False):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    for config, splits in ROWS.items():
        (root / config).mkdir(parents=True, exist_ok=True)
        for split, values in splits.items():
            rows = [_row(config, v) for v in values]
            if extra_column and config == "verbmem":  # older revisions' float column
                rows = [{**r, "rougeL_target": 0.5} for r in rows]
            pq.write_table(pa.Table.from_pylist(rows),
                           root / config / f"{split}-00000-of-00001.parquet")


def write_muse_bench_json(root, corpus="news"):
    """``load_data.py``'s output: text configs as lists of strings, QA as lists of objects."""
    for config, splits in ROWS.items():
        folder = root / "data" / corpus / config
        folder.mkdir(parents=True, exist_ok=True)
        for split, values in splits.items():
            (folder / f"{split}.json").write_text(json.dumps(values))


@pytest.mark.parametrize("layout", ["parquet", "json"])
def test_every_split_loads_in_both_layouts(tmp_path, layout):
    (write_parquet if layout == "parquet" else write_muse_bench_json)(tmp_path)
    data = load_muse(tmp_path, "news")
    assert set(data.splits) == {f"{c}_{s}" for c, splits in CONFIGS.items() for s in splits}
    forget = data["raw_forget"]
    assert [r.answer for r in forget] == ROWS["raw"]["forget"]
    assert all(r.is_text for r in forget)
    verb = data["verbmem_forget"].records[0]
    assert (verb.question, verb.answer) == ("The ferry left Quill Bay at dawn and",
                                            " reached the outer reef by noon.")
    qa = data["knowmem_retain_qa_icl"].records[0]
    assert qa.answer == "Lowmere" and qa.question.endswith("(retain_qa_icl)")
    assert len(data["scal_forget_3"]) == 3
    assert data["privleak_holdout"].records[0].answer == "A storm closed the Harl pass (holdout)."
    # the hash depends on the content only, not on the layout it was read from
    assert data["raw_forget"].sha256 == load_muse(tmp_path).splits["raw_forget"].sha256


def test_same_content_same_hash_across_layouts(tmp_path):
    write_parquet(tmp_path / "hf")
    write_muse_bench_json(tmp_path / "mb")
    a, b = load_muse(tmp_path / "hf"), load_muse(tmp_path / "mb")
    assert {k: s.sha256 for k, s in a.splits.items()} == {k: s.sha256 for k, s in b.splits.items()}


def test_extra_columns_ignored_and_books_has_no_scal(tmp_path):
    write_parquet(tmp_path, extra_column=True)
    rows, where = load_muse_rows(tmp_path, "verbmem", "forget")
    assert rows == [ROWS["verbmem"]["forget"][0]] and where.endswith(".parquet")
    books = load_muse(tmp_path, "books")
    assert not any(k.startswith(("scal", "sust")) for k in books.splits)


def test_older_split_names_are_read(tmp_path):
    write_muse_bench_json(tmp_path)
    folder = tmp_path / "data" / "news" / "knowmem"
    (folder / "retain_qa.json").rename(folder / "retain2_qa.json")
    rows, where = load_muse_rows(tmp_path, "knowmem", "retain_qa")
    assert rows[0]["answer"] == "Lowmere" and where.endswith("retain2_qa.json")


def test_bad_data_is_a_one_line_error(tmp_path):
    write_muse_bench_json(tmp_path)
    path = tmp_path / "data" / "news" / "verbmem" / "forget.json"
    path.write_text(json.dumps([{"prompt": "a", "gt": 3}]))
    with pytest.raises(DataError, match=r"forget.json\[0\]: field 'gt' must be a string"):
        load_muse_rows(tmp_path, "verbmem", "forget")
    with pytest.raises(DataError, match="no MUSE raw/retain3"):
        load_muse_rows(tmp_path, "raw", "retain3")
    with pytest.raises(DataError, match="unknown MUSE config"):
        load_muse_rows(tmp_path, "rawz", "forget")
    with pytest.raises(DataError, match="not a folder and not a MUSE hub id"):
        load_muse(tmp_path / "missing")


def test_hub_id_reads_through_datasets(monkeypatch):
    import sys
    import types

    calls = []

    def load_dataset(hub_id, config, split):
        calls.append((hub_id, config, split))
        return [{"prompt": "p", "gt": " g", "rougeL_target": 0.1}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    rows, where = load_muse_rows("muse-bench/MUSE-Books", "verbmem", "forget", "books")
    assert rows == [{"prompt": "p", "gt": " g"}] and where == "muse-bench/MUSE-Books:verbmem/forget"
    assert calls == [("muse-bench/MUSE-Books", "verbmem", "forget")]

    def offline(*args, **kwargs):
        raise ConnectionError("no network\nmore")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(DataError, match="cannot load muse-bench/MUSE-News raw/forget from the "
                                        "hub: ConnectionError: no network$"):
        load_muse_rows("muse-bench/MUSE-News", "raw", "forget")
