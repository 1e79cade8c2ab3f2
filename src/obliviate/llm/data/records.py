"""The question–answer record shared by every LLM data source (TOFU schema).

A record with an empty ``question`` is plain text: the whole ``answer`` is trained on and scored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from obliviate.core.errors import DataError


@dataclass(frozen=True)
class QARecord:
    """One fact: a question, its answer and optional TOFU evaluation fields.

    ``perturbed_answers`` are plausible wrong answers (TOFU's ``perturbed_answer``);
    ``entity`` names who or what the fact is about (used to split by person or author).
    """

    question: str
    answer: str
    paraphrased_question: str | None = None
    paraphrased_answer: str | None = None
    perturbed_answers: tuple[str, ...] = ()
    entity: str | None = None

    @property
    def is_text(self) -> bool:
        return not self.question

    def key(self) -> tuple[str, str]:
        return (" ".join(self.question.split()), " ".join(self.answer.split()))

    def to_dict(self) -> dict[str, Any]:
        """The record in TOFU's field names (``perturbed_answer`` is a list)."""
        out: dict[str, Any] = {"question": self.question, "answer": self.answer}
        if self.paraphrased_question is not None:
            out["paraphrased_question"] = self.paraphrased_question
        if self.paraphrased_answer is not None:
            out["paraphrased_answer"] = self.paraphrased_answer
        if self.perturbed_answers:
            out["perturbed_answer"] = list(self.perturbed_answers)
        if self.entity is not None:
            out["entity"] = self.entity
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "record") -> QARecord:
        """Build from TOFU-style or ``{"text"}`` dicts; errors name ``where`` and the field."""
        if not isinstance(data, Mapping):
            raise DataError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if "question" not in data and "text" in data:
            return cls(question="", answer=_string(data, "text", where, allow_empty=False))
        for name in ("question", "answer"):
            if name not in data:
                raise DataError(f"{where}: missing field {name!r}")
        perturbed = data.get("perturbed_answer", data.get("perturbed_answers", ()))
        if isinstance(perturbed, str):
            perturbed = (perturbed,)
        if not isinstance(perturbed, (list, tuple)) or not all(
                isinstance(p, str) for p in perturbed):
            raise DataError(f"{where}: field 'perturbed_answer' must be a list of strings")
        record = cls(
            question=_string(data, "question", where),
            answer=_string(data, "answer", where, allow_empty=False),
            paraphrased_question=_optional(data, "paraphrased_question", where),
            paraphrased_answer=_optional(data, "paraphrased_answer", where),
            perturbed_answers=tuple(perturbed),
            entity=_optional(data, "entity", where),
        )
        if not record.question.strip():
            raise DataError(f"{where}: field 'question' is empty")
        return record


def _string(data: Mapping[str, Any], name: str, where: str, allow_empty: bool = True) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise DataError(f"{where}: field {name!r} is empty")
    return value


def _optional(data: Mapping[str, Any], name: str, where: str) -> str | None:
    return _string(data, name, where) if data.get(name) is not None else None


def records_from_dicts(items: Iterable[Any], source: str) -> list[QARecord]:
    """Validate a list of dicts; each error names ``source`` and the item's index."""
    return [QARecord.from_dict(item, where=f"{source}[{i}]") for i, item in enumerate(items)]
