"""One model under evaluation: the shared scoring and generation caches, the resolved needs
of registered metrics, and the base class of the LLM suites.

A suite (``tofu``, ``mia``, ``memorization``, ...) groups the registered metrics whose
``suite`` is its name (:mod:`obliviate.llm.metrics`), with typed options. Metrics declare
:class:`~obliviate.core.metric.Need` s; :meth:`EvalSession.prefetch` computes every need of every
suite of one evaluation in one scorer pass and one generation pass per budget, and
:class:`LLMInputs` hands each metric what it declared.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from obliviate.core.errors import ConfigError, DataError
from obliviate.core.io import atomic_write_json
from obliviate.core.metric import Need
from obliviate.core.recipe import StrictModel
from obliviate.core.result import EvalResult
from obliviate.core.task import DataSplit
from obliviate.llm.data.formatting import PromptFormat
from obliviate.llm.data.records import QARecord
from obliviate.llm.evaluation.generation import DEFAULT_BATCH_SIZE
from obliviate.llm.evaluation.scorer import AnswerScore, AnswerScorer, RecordScores, ScoreMode

MODALITY = "llm"
SplitLike = DataSplit | Sequence[QARecord]


class EngineOptions(StrictModel):
    """How the model is run (shared by every suite of one :func:`evaluate` call)."""

    batch_size: int = Field(default=16, ge=1, description="rows per scoring forward pass")
    batch_tokens: int = Field(default=4096, ge=1, description="tokens per scoring forward pass")
    max_length: int = Field(default=512, ge=8, description="prompt + answer tokens, truncated")
    generation_batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1,
                                       description="most rows decoded together")
    scorer_mode: ScoreMode = "prefix"
    """how answers are scored: prefix (the question's cache reused for every answer) or full
    sequences"""
    progress: bool = False
    """show progress bars while scoring and generating"""


@dataclass(frozen=True)
class RecordsNeed:
    """A need given as records rather than a split name (older suites; prefer
    :class:`~obliviate.core.metric.Need`)."""

    records: Sequence[QARecord]
    all_answers: bool = False
    """Score the paraphrased and perturbed answers too (else the answer only)."""
    token_stats: bool = False
    max_new_tokens: int | None = None
    """Generate greedily with this budget (None: no generation)."""
    score: bool = True
    """Score the answers (False: generation only)."""


class EvalSession:
    """One model under evaluation: an :class:`AnswerScorer` and a generation cache.

    Everything computed is cached, so suites that ask for the same answer or generation share
    it. Create a new session (or call :meth:`clear`) after the model's weights change.
    """

    def __init__(self, model: Any, tokenizer: Any, fmt: PromptFormat,
                 engine: EngineOptions | Mapping[str, Any] | None = None,
                 name: str = "model") -> None:
        self.engine = _validated(EngineOptions, engine)
        self.model = model
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.name = name
        self.scorer = AnswerScorer(model, tokenizer, fmt, batch_size=self.engine.batch_size,
                                   max_length=self.engine.max_length,
                                   batch_tokens=self.engine.batch_tokens,
                                   mode=self.engine.scorer_mode, progress=self.engine.progress)
        self.scorer.generation_batch_size = self.engine.generation_batch_size
        self._generations: dict[tuple[str, int], str] = {}
        self.generation_seconds = 0.0

    def clear(self) -> None:
        self.scorer.clear_cache()
        self._generations.clear()

    def prefetch(self, needs: Sequence[Need | RecordsNeed],
                 splits: Mapping[str, SplitLike] | None = None) -> None:
        """Compute, in one scorer pass and one generation pass per budget, all ``needs``
        (split names resolve in ``splits``; reference, oracle and judge needs are not this
        model's and are left to their own sessions)."""
        plain = [n if isinstance(n, RecordsNeed) else _as_records_need(n, splits or {})
                 for n in needs]
        plain = [n for n in plain if n is not None]
        records: list[QARecord] = []
        answers: list[list[str]] = []
        stats: list[bool] = []
        for need in plain:
            if need.score:
                for r in need.records:
                    records.append(r)
                    answers.append(_answers(r) if need.all_answers else [r.answer])
                    stats.append(need.token_stats)
        # generation continues from the prompt caches of this scoring pass (one prefill)
        generate = {r.question: n.max_new_tokens for n in plain if n.max_new_tokens is not None
                    for r in n.records}
        if records:
            self.scorer.score(records, answers, token_stats=stats, desc=f"scoring {self.name}",
                              generate=generate)
            self.generation_seconds += self.scorer.generation_stats.seconds
            self.scorer.generation_stats.seconds = 0.0
        budgets = sorted({n.max_new_tokens for n in plain if n.max_new_tokens is not None})
        for budget in budgets:
            questions = [r.question for n in plain if n.max_new_tokens == budget
                         for r in n.records]
            self.generations(questions, budget)

    def record_scores(self, records: Sequence[QARecord], token_stats: bool = False
                      ) -> list[RecordScores]:
        return self.scorer.score_records(records, token_stats=token_stats,
                                         desc=f"scoring {self.name}")

    def answer_scores(self, records: Sequence[QARecord], token_stats: bool = False
                      ) -> list[AnswerScore]:
        rows = self.scorer.score(records, token_stats=token_stats, desc=f"scoring {self.name}")
        return [row[0] for row in rows]

    def generations(self, questions: Sequence[str], max_new_tokens: int) -> list[str]:
        """Greedy answers, each distinct question generated once per budget."""
        todo = list(dict.fromkeys(q for q in questions
                                  if (q, max_new_tokens) not in self._generations))
        if todo:
            start = time.perf_counter()
            texts = self.scorer.generations(todo, max_new_tokens)
            self.generation_seconds += time.perf_counter() - start
            for question, text in zip(todo, texts, strict=True):
                self._generations[(question, max_new_tokens)] = text
        return [self._generations[(q, max_new_tokens)] for q in questions]

    def provenance(self) -> dict[str, Any]:
        s = self.scorer.stats
        return {"scorer_mode": self.scorer.mode, "scoring_seconds": round(s.seconds, 3),
                "generation_seconds": round(self.generation_seconds, 3),
                "forward_tokens": s.forward_tokens, "padding_tokens": s.padding_tokens,
                "answers_scored": s.answers_computed, "cache_hits": s.cache_hits}


def _as_records_need(need: Need, splits: Mapping[str, SplitLike]) -> RecordsNeed | None:
    if need.kind not in ("answer_scores", "token_stats", "generations") or \
            need.split not in splits:
        return None
    records = _head(splits[need.split], need.limit)
    return RecordsNeed(records, all_answers=need.kind == "answer_scores" and need.all_answers,
                       token_stats=need.kind == "token_stats",
                       max_new_tokens=need.max_new_tokens if need.kind == "generations" else None,
                       score=need.kind != "generations")


@dataclass
class LLMInputs:
    """The resolved needs of one model's evaluation (:class:`~obliviate.core.metric.Inputs`):
    what a registered metric reads with ``inputs.get(need)``.

    ``reference`` is the reference model's session (or None), ``oracle`` the oracle's recorded
    result per suite (empty for the oracle itself); ``memo`` lets the metrics of one suite share
    what they derive from the same needs (e.g. TOFU's per-split items).
    """

    session: EvalSession
    splits: Mapping[str, SplitLike]
    reference: EvalSession | None = None
    oracle: Mapping[str, Any] = field(default_factory=dict)
    memo: dict[Any, Any] = field(default_factory=dict)

    def records(self, split: str | None, limit: int | None = None) -> list[QARecord]:
        if split not in self.splits:
            raise DataError(f"no split {split!r}; given: {', '.join(self.splits) or '(none)'}")
        return _head(self.splits[split], limit)

    def get(self, need: Need) -> Any:
        if need.kind == "oracle":
            return self.oracle.get(need.suite or "")
        if need.kind == "judge":
            raise ConfigError("an LLM evaluation has no judge predictions")
        records = self.records(need.split, need.limit)
        if need.kind == "answer_scores":
            return (self.session.record_scores(records) if need.all_answers
                    else self.session.answer_scores(records))
        if need.kind == "token_stats":
            return [s.token_stats for s in self.session.answer_scores(records, True)]
        if need.kind == "reference_stats":
            if self.reference is None:
                return None
            return [s.token_stats for s in self.reference.answer_scores(records, True)]
        texts = self.session.generations([r.question for r in records], need.max_new_tokens or 1)
        for stop in need.stop:
            texts = [t.split(stop)[0] for t in texts]
        return texts


@dataclass
class SuiteOutput:
    """A suite's :class:`EvalResult` plus extra outputs (e.g. TOFU's legacy log)."""

    result: EvalResult
    artifacts: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)
    """Extra JSON files written next to ``{suite}.json`` (e.g. TOFU's legacy log)."""

    def save(self, directory: str | Path) -> Path:
        """Write ``{suite}.json`` and each of :attr:`files`."""
        directory = Path(directory)
        self.result.save(directory / f"{self.result.suite}.json")
        for name, data in self.files.items():
            atomic_write_json(directory / name, data)
        return directory


class LLMSuite:
    """Base of the LLM suites: ``Suite(options).run(session, splits, **inputs)``."""

    name: ClassVar[str] = ""
    options_class: ClassVar[type[StrictModel]] = StrictModel

    def __init__(self, options: StrictModel | Mapping[str, Any] | None = None,
                 **overrides: Any) -> None:
        base = options.model_dump() if isinstance(options, StrictModel) else dict(options or {})
        self.options = _validated(self.options_class, {**base, **overrides})

    def needs(self, splits: Mapping[str, SplitLike], **inputs: Any
              ) -> list[Need] | list[RecordsNeed]:
        """What :meth:`run` will ask the session for (used to share one pass)."""
        return []

    def run(self, session: EvalSession, splits: Mapping[str, SplitLike],
            **inputs: Any) -> SuiteOutput:
        raise NotImplementedError

    def __call__(self, model: Any, tokenizer: Any, fmt: PromptFormat,
                 splits: Mapping[str, SplitLike],
                 engine: EngineOptions | Mapping[str, Any] | None = None,
                 **inputs: Any) -> SuiteOutput:
        """Run on one model with a fresh session."""
        session = EvalSession(model, tokenizer, fmt, engine, name=inputs.pop("model_name",
                                                                           "model"))
        session.prefetch(self.needs(splits, **inputs), splits)
        return self.run(session, splits, **inputs)

    def _result(self, session: EvalSession, splits: Mapping[str, SplitLike],
                used: Sequence[str]) -> EvalResult:
        return EvalResult(
            suite=self.name, model=session.name,
            options={**self.options.model_dump(mode="json"),
                     "engine": session.engine.model_dump(mode="json")},
            provenance={"splits": {name: _provenance(splits[name], name) for name in used}})


def _validated(schema: type[Any], value: Any) -> Any:
    if isinstance(value, schema):
        return value
    from obliviate.core.recipe import validate

    data = value.model_dump() if isinstance(value, StrictModel) else dict(value or {})
    return validate(schema, data, source=schema.__name__)


def _head(split: SplitLike, n: int | None) -> list[QARecord]:
    records = list(split.records if isinstance(split, DataSplit) else split)
    return records if n is None else records[:n]


def _provenance(split: SplitLike, name: str) -> dict[str, Any]:
    if isinstance(split, DataSplit):
        return split.provenance()
    return DataSplit(name, list(split)).provenance()


def _answers(record: QARecord) -> list[str]:
    return [record.answer, *([record.paraphrased_answer] if record.paraphrased_answer is not None
                             else []), *record.perturbed_answers]


