"""MUSE (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models",
arXiv:2407.06460; data ``muse-bench/MUSE-News`` and ``muse-bench/MUSE-Books``, CC BY 4.0).

Three layouts are read, tried in this order:

* the Hugging Face dataset repository cloned or downloaded to a folder:
  ``{root}/{config}/{split}-00000-of-00001.parquet`` (every shard ``{split}-*.parquet``);
* MUSE's own ``load_data.py`` output (``swj0419/muse_bench``):
  ``{root}/data/{corpus}/{config}/{split}.json`` (or ``{root}/{config}/{split}.json``) where
  raw/privleak/scal/sust files hold a list of strings and verbmem/knowmem files a list of
  objects;
* the hub id itself (``muse-bench/MUSE-News``) through ``datasets.load_dataset`` when the
  ``datasets`` package is installed and the machine is online.

Every field is a string; extra columns (older revisions' ``rougeL_target``) are ignored, and
older revisions' names (``retain2_qa``, privleak ``retain2``) are read where the current ones are
missing. Records are :class:`QARecord`: raw text as plain-text records (empty question), verbmem
as ``question=prompt, answer=gt`` and knowmem as question/answer pairs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from obliviate.core.errors import DataError
from obliviate.core.io import read_json
from obliviate.core.task import DataSplit
from obliviate.llm.data.hub import hub_rows, parquet_rows
from obliviate.llm.data.records import QARecord

Corpus = Literal["news", "books"]
HUB_IDS: dict[str, str] = {"news": "muse-bench/MUSE-News", "books": "muse-bench/MUSE-Books"}

CONFIGS: dict[str, tuple[str, ...]] = {
    "raw": ("forget", "retain1", "retain2", "holdout"),
    "verbmem": ("forget",),
    "knowmem": ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl"),
    "privleak": ("forget", "retain", "holdout"),
    "scal": ("forget_1", "forget_2", "forget_3", "forget_4"),
    "sust": ("forget_1", "forget_2", "forget_3", "forget_4"),
}
"""MUSE's configs and their splits (``scal``/``sust`` exist for News only)."""

FIELDS: dict[str, tuple[str, ...]] = {
    "raw": ("text",), "verbmem": ("prompt", "gt"), "knowmem": ("question", "answer"),
    "privleak": ("text",), "scal": ("text",), "sust": ("text",),
}
"""The fields each config's rows carry (all strings)."""

ALIASES: dict[tuple[str, str], tuple[str, ...]] = {
    ("knowmem", "retain_qa"): ("retain2_qa",),
    ("knowmem", "retain_qa_icl"): ("retain2_qa_icl",),
    ("privleak", "retain"): ("retain2",),
}
"""Older revisions' split names, tried when the current name is missing."""


@dataclass
class MuseData:
    """The MUSE splits loaded, as named :class:`DataSplit` objects (``{config}_{split}``)."""

    source: str
    corpus: str
    splits: dict[str, DataSplit] = field(default_factory=dict)

    def __getitem__(self, name: str) -> DataSplit:
        if name not in self.splits:
            raise DataError(f"MUSE {self.corpus} ({self.source}): no split {name!r}; "
                            f"loaded: {', '.join(self.splits) or 'none'}")
        return self.splits[name]


def _rows_from_json(path: Path, config: str) -> list[dict[str, Any]]:
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list, got {type(data).__name__}")
    (first, *_) = FIELDS[config]
    # raw/privleak/scal/sust: MUSE's load_data.py writes a list of strings
    return [{first: row} if isinstance(row, str) else row for row in data]


def _local_rows(root: Path, corpus: str, config: str, split: str
                ) -> tuple[list[dict[str, Any]], str] | None:
    shards = sorted((root / config).glob(f"{split}-*.parquet"))
    if shards:
        return parquet_rows(shards), str(shards[0])
    for path in (root / "data" / corpus / config / f"{split}.json",
                 root / config / f"{split}.json"):
        if path.is_file():
            return _rows_from_json(path, config), str(path)
    return None


def load_muse_rows(source: str | Path, config: str, split: str, corpus: Corpus = "news"
                   ) -> tuple[list[dict[str, str]], str]:
    """The rows of one MUSE ``config``/``split`` with only the config's fields, and where
    they were read from. ``source`` is a local folder (either layout) or a hub id."""
    if config not in CONFIGS:
        raise DataError(f"unknown MUSE config {config!r}; known: {', '.join(CONFIGS)}")
    names = (split, *ALIASES.get((config, split), ()))
    root = Path(source)
    found = None
    if root.is_dir():
        for name in names:
            found = _local_rows(root, corpus, config, name)
            if found is not None:
                break
        if found is None:
            raise DataError(f"{root}: no MUSE {config}/{split} (looked for "
                            f"{config}/{split}-00000-of-00001.parquet and "
                            f"data/{corpus}/{config}/{split}.json)")
    elif str(source) in HUB_IDS.values():
        found = (hub_rows(str(source), config, split, f"MUSE {config}/{split}"),
                 f"{source}:{config}/{split}")
    else:
        raise DataError(f"{source}: not a folder and not a MUSE hub id "
                        f"({', '.join(HUB_IDS.values())})")
    rows, where = found
    fields = FIELDS[config]
    out: list[dict[str, str]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(f"{where}[{i}]: expected an object, got {type(row).__name__}")
        item = {}
        for name in fields:
            value = row.get(name)
            if not isinstance(value, str):
                got = "missing" if name not in row else type(value).__name__
                raise DataError(f"{where}[{i}]: field {name!r} must be a string ({got})")
            item[name] = value
        out.append(item)
    if not out:
        raise DataError(f"{where}: MUSE {config}/{split} has no rows")
    return out, where


def rows_to_records(config: str, rows: list[dict[str, str]]) -> list[QARecord]:
    """MUSE rows as records: text as plain-text records, verbmem as (prompt, gt) pairs."""
    if config == "verbmem":
        return [QARecord(question=r["prompt"], answer=r["gt"]) for r in rows]
    if config == "knowmem":
        return [QARecord(question=r["question"], answer=r["answer"]) for r in rows]
    return [QARecord(question="", answer=r["text"]) for r in rows]


def load_muse(source: str | Path | None = None, corpus: Corpus = "news",
              configs: Mapping[str, tuple[str, ...]] | None = None) -> MuseData:
    """Load MUSE splits into :class:`MuseData` (``raw_forget``, ``verbmem_forget``,
    ``knowmem_forget_qa``, ``privleak_holdout``, ``sust_forget_2`` ...).

    ``source`` defaults to the corpus's hub id. ``configs`` maps a config to the splits wanted
    (default: every split of :data:`CONFIGS`; ``scal``/``sust`` only for News, as MUSE's
    ``load_data.py`` does).
    """
    if corpus not in HUB_IDS:
        raise DataError(f"unknown MUSE corpus {corpus!r}; known: {', '.join(HUB_IDS)}")
    source = source if source is not None else HUB_IDS[corpus]
    wanted = dict(configs) if configs is not None else {
        c: s for c, s in CONFIGS.items() if corpus == "news" or c not in ("scal", "sust")}
    data = MuseData(source=str(source), corpus=corpus)
    for config, splits in wanted.items():
        for split in splits:
            rows, where = load_muse_rows(source, config, split, corpus)
            name = f"{config}_{split}"
            data.splits[name] = DataSplit(name, rows_to_records(config, rows), source=where)
    return data


__all__ = ["ALIASES", "CONFIGS", "FIELDS", "HUB_IDS", "MuseData", "load_muse", "load_muse_rows",
           "rows_to_records"]
