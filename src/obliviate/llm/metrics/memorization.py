"""The ``memorization`` suite: exact memorisation (Tirumala et al. 2022) and extraction
strength (Carlini et al. 2021) of each answer, from the teacher-forced argmax of the shared
scorer pass (extraction strength needs no generation: greedy decoding from a prefix reproduces
the rest exactly when every later token is the teacher-forced argmax)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from obliviate.core.errors import DataError
from obliviate.core.metric import Metric, Need, as_results, metrics_of
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import METRICS, SUITES
from obliviate.core.result import MetricResult
from obliviate.llm.evaluation import memorization as mem
from obliviate.llm.evaluation.session import (
    MODALITY,
    EvalSession,
    LLMInputs,
    LLMSuite,
    SplitLike,
    SuiteOutput,
)

SUITE = "memorization"


class MemorizationOptions(StrictModel):
    """Exact memorisation and extraction strength on answers (teacher-forced argmax)."""

    splits: list[str] = Field(default_factory=lambda: ["forget"])
    """the splits memorisation is measured on"""
    ds_size: int | None = Field(default=None, ge=1)
    """examples scored (None: all)"""
    openunlearning_compat: bool = False
    """compute as OpenUnlearning does (for comparison with its tables)"""


class _TokenMetric(Metric):
    suite = SUITE
    options: MemorizationOptions

    def __init__(self, options: MemorizationOptions | None = None) -> None:
        super().__init__(options or MemorizationOptions())

    def needs(self, split: str) -> list[Need]:
        return [Need.token_stats(split, limit=self.options.ds_size)]

    def stats(self, inputs: Any, split: str) -> list[Any]:
        return inputs.get(Need.token_stats(split, limit=self.options.ds_size))


@METRICS.register("exact_memorization", modality=MODALITY)
class ExactMemorization(_TokenMetric):
    """Exact memorisation (Tirumala et al. 2022): the fraction of answer tokens that are the
    teacher-forced argmax, per answer."""

    def compute(self, inputs: Any, split: str) -> MetricResult:
        return mem.exact_memorization(self.stats(inputs, split), split=split)


@METRICS.register("extraction_strength", modality=MODALITY)
class ExtractionStrength(_TokenMetric):
    """Extraction strength (Carlini et al. 2021): one minus the shortest answer prefix from
    which every later token is the teacher-forced argmax, as a fraction of the answer."""

    def compute(self, inputs: Any, split: str) -> MetricResult:
        return mem.extraction_strength(
            self.stats(inputs, split), split=split,
            openunlearning_compat=self.options.openunlearning_compat)


@SUITES.register(SUITE, modality=MODALITY)
class MemorizationSuite(LLMSuite):
    """Exact memorisation (Tirumala et al. 2022) and extraction strength (Carlini et al. 2021):
    every metric registered with ``suite = "memorization"``, on each of ``splits``."""

    name = SUITE
    options_class = MemorizationOptions
    options: MemorizationOptions

    def metrics(self) -> list[Metric]:
        return [cls(self.options) for cls in metrics_of(SUITE, MODALITY)]

    def _present(self, splits: Mapping[str, SplitLike]) -> list[str]:
        return [s for s in self.options.splits if s in splits]

    def needs(self, splits: Mapping[str, SplitLike], **inputs: Any) -> list[Need]:
        return [n for s in self._present(splits) for m in self.metrics() for n in m.needs(s)]

    def run(self, session: EvalSession, splits: Mapping[str, SplitLike],
            resolved: LLMInputs | None = None, **inputs: Any) -> SuiteOutput:
        start = time.perf_counter()
        present = self._present(splits)
        if not present:
            raise DataError(f"memorization: none of the splits {', '.join(self.options.splits)} "
                            f"is given; given: {', '.join(splits) or '(none)'}")
        resolved = resolved or LLMInputs(session, splits)
        result = self._result(session, splits, present)
        for name in present:
            for metric in self.metrics():
                for value in as_results(metric.compute(resolved, name)):
                    result.add(value)
        missing = [s for s in self.options.splits if s not in splits]
        result.provenance["skipped"] = {s: "split not given" for s in missing}
        result.provenance["session"] = session.provenance()
        result.seconds = time.perf_counter() - start
        return SuiteOutput(result)
