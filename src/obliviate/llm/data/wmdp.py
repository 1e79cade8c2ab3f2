"""WMDP (Li et al. 2024, "The WMDP Benchmark: Measuring and Reducing Malicious Use With
Unlearning", arXiv:2403.03218): its multiple-choice questions and its forget/retain corpora.

Questions, ``cais/wmdp``: configs ``wmdp-bio``, ``wmdp-chem``, ``wmdp-cyber``, each one ``test``
split stored as ``{config}/test-00000-of-00001.parquet`` with fields ``question`` (string),
``choices`` (4 strings) and ``answer`` (int64 index). Read as
:class:`~obliviate.llm.evaluation.mcq.MCQItem`.

Corpora, ``cais/wmdp-corpora``: configs ``bio-retain-corpus``, ``cyber-forget-corpus``,
``cyber-retain-corpus``, split ``train`` with field ``text``, stored as
``{config}/train-0000k-of-0000N.parquet``. The bio *forget* corpus is gated (requested through a
form) and is not in that repository. The password-protected zip mirror holds
``{config}.jsonl`` files instead; the reference code (``centerforaisafety/wmdp``,
``rmu/utils.py get_data``) reads ``json.loads(line)['text']`` for ``bio-forget-corpus`` and the
raw line for every other corpus, so a jsonl line here may be a JSON object with ``text`` or plain
text (a line that parses as a JSON string is that string). As the reference, documents of
``min_chars`` = 50 characters or fewer are dropped. Corpora become plain-text
:class:`~obliviate.llm.data.records.QARecord` (empty question).

Where each is looked for, in order: ``{root}/{config}/{split}-*.parquet``, ``{root}/{config}.jsonl``
(corpora) or ``{root}/{config}.jsonl`` of question rows (questions), then the hub id through
``datasets.load_dataset`` when ``source`` is a hub id and the machine is online.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obliviate.core.errors import DataError
from obliviate.core.task import DataSplit
from obliviate.llm.data.hub import hub_rows, parquet_rows
from obliviate.llm.data.records import QARecord

QUESTIONS_HUB = "cais/wmdp"
CORPORA_HUB = "cais/wmdp-corpora"
QUESTION_CONFIGS = ("wmdp-bio", "wmdp-chem", "wmdp-cyber")
CORPUS_CONFIGS = ("bio-forget-corpus", "bio-retain-corpus", "cyber-forget-corpus",
                  "cyber-retain-corpus")
DESCRIPTIONS = {
    "wmdp-bio": "The following are multiple choice questions (with answers) about biology.\n\n",
    "wmdp-chem": "The following are multiple choice questions (with answers) about "
                 "chemistry.\n\n",
    "wmdp-cyber": "The following are multiple choice questions (with answers) about "
                  "cybersecurity.\n\n",
}
"""lm-eval's task descriptions (``lm_eval/tasks/wmdp/wmdp_*.yaml``), shown before each question."""
MIN_CHARS = 50
LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class MCQItem:
    """One multiple-choice question in WMDP's schema (``question``, ``choices``, ``answer``
    index); ``subject`` optionally names its domain."""

    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"question": self.question, "choices": list(self.choices),
                               "answer": self.answer}
        if self.subject is not None:
            out["subject"] = self.subject
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "item") -> MCQItem:
        """From a WMDP/MMLU row; one-line :class:`DataError` naming ``where`` and the field."""
        if not isinstance(data, Mapping):
            raise DataError(f"{where}: expected an object with question/choices/answer, got "
                            f"{type(data).__name__}")
        for name in ("question", "choices", "answer"):
            if name not in data:
                raise DataError(f"{where}: missing field {name!r}")
        question, choices, answer = data["question"], data["choices"], data["answer"]
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: field 'question' must be a non-empty string")
        if hasattr(choices, "tolist"):  # a numpy array from parquet
            choices = choices.tolist()
        if not isinstance(choices, (list, tuple)) or not all(isinstance(c, str)
                                                               for c in choices):
            raise DataError(f"{where}: field 'choices' must be a list of strings")
        if not 2 <= len(choices) <= len(LETTERS):
            raise DataError(f"{where}: field 'choices' has {len(choices)} entries; "
                            f"2..{len(LETTERS)} are supported")
        try:
            if isinstance(answer, bool):
                raise TypeError
            answer = operator.index(answer)  # int or a numpy integer
        except TypeError:
            raise DataError(f"{where}: field 'answer' must be an integer index") from None
        if not 0 <= answer < len(choices):
            raise DataError(f"{where}: field 'answer' = {answer} is not an index into the "
                            f"{len(choices)} choices")
        subject = data.get("subject")
        return cls(question, tuple(choices), answer,
                   subject if isinstance(subject, str) else None)


def mcq_prompt(item: MCQItem, description: str = "") -> str:
    """lm-eval's WMDP/MMLU ``doc_to_text`` (after the task ``description``), ending in
    ``Answer:``; the ``mcq`` suite scores `` A``...`` D`` after it."""
    lines = [item.question.strip()]
    lines += [f"{LETTERS[i]}. {choice}" for i, choice in enumerate(item.choices)]
    return description + "\n".join(lines) + "\nAnswer:"


def _jsonl_lines(path: Path) -> list[tuple[int, str]]:
    with open(path, encoding="utf-8") as handle:
        return [(n, line.rstrip("\n")) for n, line in enumerate(handle, 1) if line.strip()]


def _rows(source: str | Path, config: str, split: str, hub_id: str
          ) -> tuple[list[dict[str, Any]] | None, list[tuple[int, str]] | None, str]:
    """Parquet/hub rows, or jsonl lines, and where they came from."""
    root = Path(source)
    if root.is_dir():
        shards = sorted((root / config).glob(f"{split}-*.parquet"))
        if shards:
            return parquet_rows(shards), None, str(shards[0].parent)
        jsonl = root / f"{config}.jsonl"
        if jsonl.is_file():
            return None, _jsonl_lines(jsonl), str(jsonl)
        raise DataError(f"{root}: no {config}/{split}-*.parquet and no {config}.jsonl")
    if root.exists() or str(source).startswith(("/", ".", "~")):
        raise DataError(f"{source}: not a folder")
    return (hub_rows(str(source), config, split, f"WMDP {config}"), None,
            f"{source}:{config}/{split}")


def load_wmdp_questions(source: str | Path = QUESTIONS_HUB, config: str = "wmdp-bio",
                        limit: int | None = None) -> DataSplit:
    """One WMDP question set as a split of :class:`MCQItem` (``subject`` = the config)."""
    if config not in QUESTION_CONFIGS:
        raise DataError(f"unknown WMDP question config {config!r}; use one of "
                        f"{', '.join(QUESTION_CONFIGS)}")
    rows, lines, where = _rows(source, config, "test", QUESTIONS_HUB)
    if lines is not None:
        rows = []
        for n, line in lines:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}:{n}: not JSON ({exc.msg})") from None
    assert rows is not None
    items = [MCQItem.from_dict({**row, "subject": config}, where=f"{where} row {i}")
             for i, row in enumerate(rows[:limit] if limit else rows)]
    if not items:
        raise DataError(f"{where}: no questions")
    return DataSplit(config, items, source=where)


def _corpus_text(line: str) -> str:
    """A jsonl line: a JSON object's ``text``, a JSON string, or the raw line."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return line
    if isinstance(value, dict):
        text = value.get("text")
        return text if isinstance(text, str) else line
    return value if isinstance(value, str) else line


def load_wmdp_corpus(source: str | Path = CORPORA_HUB, config: str = "cyber-forget-corpus",
                     min_chars: int = MIN_CHARS, limit: int | None = None) -> DataSplit:
    """One WMDP corpus as a split of plain-text records (documents of > ``min_chars``)."""
    if config not in CORPUS_CONFIGS:
        raise DataError(f"unknown WMDP corpus {config!r}; use one of "
                        f"{', '.join(CORPUS_CONFIGS)}")
    rows, lines, where = _rows(source, config, "train", CORPORA_HUB)
    texts: list[str] = []
    if lines is not None:
        for n, line in lines:
            if config == "bio-forget-corpus":  # the reference reads json.loads(line)['text']
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{where}:{n}: not JSON ({exc.msg})") from None
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    raise DataError(f"{where}:{n}: expected an object with a string 'text'")
                texts.append(obj["text"])
            else:
                texts.append(_corpus_text(line))
    else:
        assert rows is not None
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise DataError(f"{where} row {i}: missing string field 'text'")
            texts.append(row["text"])
    kept = [t for t in texts if len(t) > min_chars]
    if limit:
        kept = kept[:limit]
    if not kept:
        raise DataError(f"{where}: no document longer than {min_chars} characters")
    return DataSplit(config, [QARecord(question="", answer=t) for t in kept], source=where)


__all__ = ["CORPORA_HUB", "CORPUS_CONFIGS", "DESCRIPTIONS", "LETTERS", "QUESTIONS_HUB",
           "QUESTION_CONFIGS", "MCQItem", "load_wmdp_corpus", "load_wmdp_questions",
           "mcq_prompt"]
