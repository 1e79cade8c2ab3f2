"""Rows of a Hugging Face hub dataset, for the loaders that read a published layout locally
(the hub's parquet shards) and fall back to the hub when online (MUSE, WMDP)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from obliviate.core.errors import DataError


def hub_rows(hub_id: str, config: str, split: str, what: str) -> list[dict[str, Any]]:
    """``datasets.load_dataset(hub_id, config, split=split)`` as a list of dicts; a missing
    ``datasets`` package or a hub error is one :class:`DataError` line naming ``what``."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise DataError(f"{what}: no local folder given and the `datasets` package is not "
                        f"installed to read {hub_id} from the hub") from None
    try:
        return list(load_dataset(hub_id, config, split=split))
    except Exception as exc:  # network and hub errors vary by version
        raise DataError(f"cannot load {hub_id} {config}/{split} from the hub: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None


def parquet_rows(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The rows of parquet shards (a hub dataset's local layout), in order, as dicts; an
    unreadable file is one :class:`DataError` line naming it."""
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is in the muse extra
        raise DataError(f"{paths[0]}: reading parquet needs pyarrow "
                        "(pip install 'obliviate[muse]')") from None
    rows: list[dict[str, Any]] = []
    for path in paths:
        try:
            rows += pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow's errors vary; one line naming the file
            raise DataError(f"{path}: not a readable parquet file ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:160]})") from None
    return rows
