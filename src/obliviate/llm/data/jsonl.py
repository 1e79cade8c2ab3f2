"""A user's own forget/retain sets as JSON Lines: ``{"question", "answer"}`` or ``{"text"}``.

Optional TOFU fields (``paraphrased_answer``, ``perturbed_answer`` …) are kept when present.
A ``.json`` file holding a list of such objects is accepted too.
"""

from __future__ import annotations

from pathlib import Path

from obliviate.core.errors import DataError
from obliviate.core.io import iter_jsonl, read_json
from obliviate.llm.data.records import QARecord, records_from_dicts


def load_jsonl(path: str | Path) -> list[QARecord]:
    """Load and validate records; errors name the file, line and field."""
    path = Path(path)
    if path.suffix == ".json":
        data = read_json(path)
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
        records = records_from_dicts(data, source=str(path))
    else:
        records = [QARecord.from_dict(obj, where=f"{path}:{lineno}")
                   for lineno, obj in iter_jsonl(path)]
    if not records:
        raise DataError(f"{path}: no records (the file is empty)")
    return records
