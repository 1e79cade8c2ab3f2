"""One queryable results table for every finished cell, trial and evaluated model.

Each run directory holds ``results.sqlite`` (SQLite, from the standard library: no server, one
file, safe for several writers on one machine). A sweep cell or a search trial writes its row
the moment it finishes (:func:`obliviate.core.sweep.execute_cell`); a plain run's evaluated
models are added by :func:`ingest_run`. Rows are keyed by ``(run_dir, kind, name)``, so writing
a row again replaces it and re-ingesting a run is idempotent.

Several run directories are read together with :func:`open_many`, which copies their rows into
one in-memory table; :meth:`ResultsStore.query` then answers SQL across all of them::

    store = open_many(["runs/a", "runs/b"])
    store.query("SELECT method, AVG(json_extract(metrics, '$.\"tofu/forget/prob\"')) "
                "FROM results GROUP BY method")
    store.to_pandas().to_parquet("all.parquet")

The ``done`` files of the cells stay the source of truth: a store lost or written on another
filesystem is rebuilt from them by :func:`ingest_run`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from obliviate.core.errors import ConfigError, DataError
from obliviate.core.io import read_json

STORE_NAME = "results.sqlite"
KINDS = ("cell", "trial", "model")
COLUMNS = ("run_dir", "kind", "name", "method", "seed", "config_id", "params", "metrics",
           "cost", "hashes", "seconds", "finished", "source")
JSON_COLUMNS = ("params", "metrics", "cost", "hashes")
EVAL_STAGE = "eval_"  # run.json stage of one model's evaluation: eval_<model name>
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS results (
    run_dir TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    method TEXT, seed INTEGER, config_id TEXT,
    params TEXT, metrics TEXT, cost TEXT, hashes TEXT,
    seconds REAL, finished TEXT, source TEXT,
    PRIMARY KEY (run_dir, kind, name),
    CHECK (kind IN ({", ".join(repr(k) for k in KINDS)}))
)"""


class ResultsStore:
    """A results table in one SQLite file (or in memory with ``path=None``)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path) if self.path else ":memory:", timeout=60)
            if self.path is not None:
                self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(SCHEMA)
            self.db.commit()
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: not a readable results store ({exc}); delete it "
                            "and it is rebuilt from the run's records") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------
    def write(self, row: Mapping[str, Any]) -> None:
        """Insert or replace one row (keys outside :data:`COLUMNS` are refused)."""
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ConfigError(f"results store: unknown column(s) {sorted(unknown)}")
        values = [json.dumps(row.get(c), sort_keys=True) if c in JSON_COLUMNS
                  else row.get(c) for c in COLUMNS]
        with self.db:  # one transaction per row: a crash never leaves half a row
            self.db.execute(f"INSERT OR REPLACE INTO results ({', '.join(COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(COLUMNS))})", values)

    def write_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    # -- reading ------------------------------------------------------------------------------
    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Run SQL against the ``results`` table; JSON columns come back decoded."""
        try:
            cursor = self.db.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise ConfigError(f"results query failed: {exc}") from None
        names = [d[0] for d in cursor.description or ()]
        return [{n: (json.loads(v) if n in JSON_COLUMNS and isinstance(v, str) else v)
                 for n, v in zip(names, values, strict=True)} for values in cursor.fetchall()]

    def rows(self, kind: str | None = None) -> list[dict[str, Any]]:
        if kind is None:
            return self.query("SELECT * FROM results ORDER BY run_dir, kind, name")
        return self.query("SELECT * FROM results WHERE kind = ? ORDER BY run_dir, name", [kind])

    def to_pandas(self, kind: str | None = None):
        """One row per result; metrics flattened into ``metric:<key>`` columns."""
        import pandas as pd

        flat = []
        for row in self.rows(kind):
            metrics = row.pop("metrics") or {}
            flat.append({**row, **{f"metric:{k}": v for k, v in metrics.items()}})
        return pd.DataFrame(flat)

    def export(self, path: str | Path, kind: str | None = None) -> Path:
        """Write the table as ``.csv`` or ``.parquet`` (by the file's suffix)."""
        path = Path(path)
        frame = self.to_pandas(kind)
        for column in ("params", "cost", "hashes"):  # nested values as JSON text
            if column in frame:
                frame[column] = frame[column].map(lambda v: json.dumps(v, sort_keys=True))
        if path.suffix == ".csv":
            frame.to_csv(path, index=False)
        elif path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            raise ConfigError(f"{path}: export as .csv or .parquet")
        return path


def store_path(root: str | Path) -> Path:
    return Path(root) / STORE_NAME


def cell_row(result: Mapping[str, Any], root: str | Path, kind: str = "cell") -> dict[str, Any]:
    """The store row of a finished sweep cell or search trial (its ``done`` record)."""
    return {"run_dir": str(Path(root).resolve()), "kind": kind, "name": result["cell_id"],
            "method": result.get("method"), "seed": result.get("seed"),
            "config_id": result.get("config_id"), "params": result.get("params", {}),
            "metrics": result.get("metrics", {}), "cost": result.get("cost"),
            "hashes": result.get("hashes"), "seconds": result.get("seconds"),
            "finished": result.get("finished"), "source": result.get("source", kind)}


def record_cell(result: Mapping[str, Any], root: str | Path, kind: str = "cell") -> None:
    """Write a finished cell's row into ``<root>/results.sqlite``."""
    with ResultsStore(store_path(root)) as store:
        store.write(cell_row(result, root, kind))


def _model_rows(root: Path) -> list[dict[str, Any]]:
    """Rows for the models a run evaluated (from its ``run.json`` evaluation stages)."""
    record_path = root / "run.json"
    if not record_path.is_file():
        return []
    record = read_json(record_path)
    if not isinstance(record, dict):
        raise DataError(f"{record_path}: not a run record (expected a JSON object)")
    rows = []
    for key, stage in (record.get("stages") or {}).items():
        if not (isinstance(stage, dict) and key.startswith(EVAL_STAGE)
                and stage.get("status") == "done"):
            continue
        model = key[len(EVAL_STAGE):]
        metrics = {k: v for k, v in (stage.get("summary") or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        method = model.split("/", 1)[1] if model.startswith("unlearned/") else model
        rows.append({"run_dir": str(root.resolve()), "kind": "model", "name": model,
                     "method": method, "seed": record.get("seed"), "metrics": metrics,
                     "hashes": {k: v for k, v in stage.items() if k.endswith("sha256")} or None,
                     "seconds": stage.get("seconds"), "finished": stage.get("finished"),
                     "source": "evaluation"})
    return rows


def ingest_run(root: str | Path, store: ResultsStore | None = None) -> ResultsStore:
    """Add a run directory's evaluated models and finished cells/trials to ``store``
    (default: the run's own ``results.sqlite``); idempotent."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such run directory")
    store = store or ResultsStore(store_path(root))
    store.write_many(_model_rows(root))
    for marker in sorted(root.glob("sweep/*/done")):
        result = read_json(marker)
        store.write(cell_row(result, root, result.get("kind", "cell")))
    return store


def open_many(roots: Iterable[str | Path]) -> ResultsStore:
    """One in-memory store holding the rows of every run directory in ``roots``."""
    merged = ResultsStore(None)
    for root in roots:
        root = Path(root)
        ingest_run(root, merged)
        if store_path(root).is_file():  # rows written by cells of another machine, too
            with ResultsStore(store_path(root)) as own:
                merged.write_many(own.rows())
    return merged
