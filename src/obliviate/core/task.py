"""The unlearning task: what to forget, what to keep, and where it came from.

A task is modality-neutral. Its splits hold records of any type (question–answer pairs for
LLMs, labelled images for diffusion); each record type supplies ``key()`` (identity used for the
forget/retain overlap check) and ``to_dict()`` (canonical content used for hashing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from obliviate.core.errors import DataError
from obliviate.core.io import sha256_records

Role = Literal["target", "oracle"]
"""The models a run fine-tunes before unlearning: the target and the oracle (the yardstick)."""
TRAINING_SPLIT = {"target": "full", "oracle": "retain"}
"""The split each role trains on: the target on forget and retain, the oracle on retain only."""


class Record(Protocol):
    def key(self) -> Any: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DataSplit:
    """A named, hashed, ordered collection of records."""

    name: str
    records: Sequence[Any]
    source: str = ""
    sha256: str = field(default="")

    def __post_init__(self) -> None:
        if not self.sha256:
            object.__setattr__(self, "sha256", sha256_records(self.records))

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def provenance(self) -> dict[str, Any]:
        return {"name": self.name, "n": len(self.records), "sha256": self.sha256,
                "source": self.source}


@dataclass
class UnlearningTask:
    """Forget set + retain set (+ evaluation splits): the data of an unlearning problem.

    A task holds data only; the models it is applied to are passed to the methods, suites and
    attacks (and each run records which weights it used). ``eval_splits`` holds extra named
    splits (holdout, paraphrases, real-world knowledge) used by evaluation suites.
    """

    name: str
    modality: str
    forget: DataSplit
    retain: DataSplit
    eval_splits: dict[str, DataSplit] = field(default_factory=dict)
    seed: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> UnlearningTask:
        """Raise :class:`DataError` for an empty forget set or forget/retain overlap."""
        if len(self.forget) == 0:
            raise DataError(f"task {self.name!r}: the forget set {self.forget.source or ''} "
                            "is empty".replace("  ", " "))
        if len(self.retain) == 0:
            raise DataError(f"task {self.name!r}: the retain set is empty")
        forget_keys = {r.key() for r in self.forget.records}
        overlap = [r for r in self.retain.records if r.key() in forget_keys]
        if overlap:
            raise DataError(
                f"task {self.name!r}: {len(overlap)} record(s) appear in both the forget and the "
                f"retain set, e.g. {str(overlap[0].key())[:80]!r}")
        return self

    @property
    def full(self) -> DataSplit:
        """Forget + retain: the data the target model is trained on."""
        return DataSplit("full", list(self.retain.records) + list(self.forget.records),
                         source=f"{self.retain.name}+{self.forget.name}")

    def split(self, name: str) -> DataSplit:
        if name == "forget":
            return self.forget
        if name == "retain":
            return self.retain
        if name == "full":
            return self.full
        if name not in self.eval_splits:
            known = ", ".join(["forget", "retain", "full", *self.eval_splits])
            raise DataError(f"task {self.name!r} has no split {name!r}; known: {known}")
        return self.eval_splits[name]

    def provenance(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "modality": self.modality,
            "seed": self.seed,
            "splits": {s.name: s.provenance() for s in
                       [self.forget, self.retain, *self.eval_splits.values()]},
            "roles": {"forget": self.forget.name, "retain": self.retain.name},
            **({"metadata": self.metadata} if self.metadata else {}),
        }
