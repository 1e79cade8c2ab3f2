"""TOFU (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs"), MIT licence.

Reads a local folder laid out like the dataset repository ``locuslab/TOFU`` (``full.json``,
``forget{01,05,10}_perturbed.json``, ``holdout{01,05,10}.json``, ``retain_perturbed.json``,
``real_authors_perturbed.json``, ``world_facts_perturbed.json``, ``idontknow.jsonl``) or, when
online, downloads those files from the Hugging Face hub.

Splits follow TOFU: 200 fictitious authors × 20 questions in ``full`` (4,000); ``forgetXX`` is
the last XX% of authors; ``retainYY`` is ``full`` minus ``forgetXX`` with order kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from obliviate.core.errors import DataError
from obliviate.core.io import read_json
from obliviate.core.task import DataSplit
from obliviate.llm.data.records import QARecord, records_from_dicts

HUB_ID = "locuslab/TOFU"
QUESTIONS_PER_AUTHOR = 20
FORGET_SPLITS = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
EVAL_FILES = {
    "retain_eval": "retain_perturbed.json",
    "real_authors": "real_authors_perturbed.json",
    "world_facts": "world_facts_perturbed.json",
}


@dataclass
class TofuData:
    """Every TOFU split a task or evaluation needs, as validated records."""

    root: str
    full: list[QARecord]
    forget: dict[str, list[QARecord]] = field(default_factory=dict)
    holdout: dict[str, list[QARecord]] = field(default_factory=dict)
    evaluation: dict[str, list[QARecord]] = field(default_factory=dict)
    idontknow: list[str] = field(default_factory=list)

    def retain(self, forget_split: str) -> list[QARecord]:
        """``full`` minus the forget split, order kept (TOFU's retain90/95/99)."""
        forget_keys = {r.key() for r in self._forget(forget_split)}
        return [r for r in self.full if r.key() not in forget_keys]

    def _forget(self, name: str) -> list[QARecord]:
        if name not in self.forget:
            raise DataError(f"unknown TOFU forget split {name!r}; "
                            f"known: {', '.join(FORGET_SPLITS)}")
        return self.forget[name]

    def splits(self, forget_split: str = "forget10") -> dict[str, DataSplit]:
        """Named :class:`DataSplit` objects for a forget split and its companions."""
        forget = self._forget(forget_split)
        suffix = forget_split.removeprefix("forget")
        out = {
            "forget": DataSplit(forget_split, forget, source=f"{self.root}:{forget_split}"),
            "retain": DataSplit(FORGET_SPLITS[forget_split], self.retain(forget_split),
                                source=f"{self.root}:full-{forget_split}"),
        }
        if f"holdout{suffix}" in self.holdout:
            out["holdout"] = DataSplit(f"holdout{suffix}", self.holdout[f"holdout{suffix}"],
                                       source=f"{self.root}:holdout{suffix}")
        for name, records in self.evaluation.items():
            out[name] = DataSplit(name, records, source=f"{self.root}:{EVAL_FILES[name]}")
        return out


def _fetch(root: str | Path, filename: str) -> Path:
    path = Path(root) / filename
    if path.is_file():
        return path
    if Path(root).is_dir() or str(root) != HUB_ID:
        raise DataError(f"{path}: file not found (expected a folder laid out like {HUB_ID})")
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(HUB_ID, filename, repo_type="dataset"))
    except Exception as exc:  # network errors vary by version; report them in one line
        raise DataError(f"cannot download {filename} from the hub dataset {HUB_ID}: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None


def _records(root: str | Path, filename: str) -> list[QARecord]:
    path = _fetch(root, filename)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return records_from_dicts(data, source=str(path))


def _with_authors(records: list[QARecord], offset: int) -> list[QARecord]:
    """Tag each record with its TOFU author index (20 questions per author)."""
    from dataclasses import replace

    return [replace(r, entity=f"tofu_author_{(offset + i) // QUESTIONS_PER_AUTHOR:03d}")
            for i, r in enumerate(records)]


def load_tofu(root: str | Path = HUB_ID, forget_splits: tuple[str, ...] = tuple(FORGET_SPLITS),
              evaluation: bool = True) -> TofuData:
    """Load TOFU from a local folder (or ``locuslab/TOFU`` on the hub when online)."""
    full = _with_authors(_records(root, "full.json"), 0)
    data = TofuData(root=str(root), full=full)
    for name in forget_splits:
        if name not in FORGET_SPLITS:
            raise DataError(f"unknown TOFU forget split {name!r}; "
                            f"known: {', '.join(FORGET_SPLITS)}")
        forget = _records(root, f"{name}_perturbed.json")
        data.forget[name] = _with_authors(forget, len(full) - len(forget))
        suffix = name.removeprefix("forget")
        data.holdout[f"holdout{suffix}"] = _records(root, f"holdout{suffix}.json")
    if evaluation:
        for name, filename in EVAL_FILES.items():
            records = _records(root, filename)
            data.evaluation[name] = _with_authors(records, 0) if name == "retain_eval" else records
        data.idontknow = load_idontknow(_fetch(root, "idontknow.jsonl"))
    return data


def load_idontknow(path: str | Path) -> list[str]:
    """TOFU's refusal answers: one per line (plain text, or JSON strings)."""
    import contextlib
    import json

    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    out = []
    for line in filter(None, lines):
        if line.startswith('"'):
            with contextlib.suppress(json.JSONDecodeError):
                line = json.loads(line)
        out.append(line)
    if not out:
        raise DataError(f"{path}: no refusal answers found")
    return out


def default_tofu_root() -> Path | None:
    """The TOFU folder in a checkout's ``../shared/data/tofu``, if present."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data" / "tofu"
        if (candidate / "full.json").is_file():
            return candidate
    return None
