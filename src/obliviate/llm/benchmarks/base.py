"""What the question-answer benchmarks (TOFU, synthetic facts, a user's JSONL) share: the
headline numbers and report axes of the TOFU-style suites, and the refusals a method may use."""

from __future__ import annotations

from typing import Any, ClassVar

from obliviate.core.benchmark import Benchmark, Headline
from obliviate.core.task import DataSplit

QA_SUITES = ("tofu", "mia", "memorization")
QA_HEADLINE = (
    Headline("forget Prob", "tofu/forget/prob"), Headline("forget ROUGE", "tofu/forget/rouge"),
    Headline("retain Prob", "tofu/retain/prob"), Headline("retain ROUGE", "tofu/retain/rouge"),
    Headline("Utility", "tofu/model_utility"), Headline("Forget Q.", "tofu/forget_quality"),
    Headline("MIA AUC", "mia/forget/mia_min_k"), Headline("PrivLeak", "mia/forget/privleak_min_k"),
    Headline("Extraction", "memorization/forget/extraction_strength"),
)
QA_AXES = {
    "forgetting": ("1-tofu/forget/prob", "1-tofu/forget/rouge"),
    "utility": ("tofu/model_utility", "hmean(tofu/retain/prob, tofu/retain/rouge)"),
    "robustness": ("1-max(attack/*/rouge/attacked)", "1-max(attack/*/prob/attacked)"),
}


class LLMBenchmark(Benchmark):
    """An LLM benchmark of question-answer records (:class:`~obliviate.llm.data.QARecord`)."""

    suites: ClassVar[tuple[str, ...]] = QA_SUITES
    headline: ClassVar[tuple[Headline, ...]] = QA_HEADLINE
    axes: ClassVar[dict[str, tuple[str, ...]]] = QA_AXES

    def refusals(self, config: Any) -> tuple[str, ...]:
        """The refusal answers of the refusal-training methods (IdkNLL, IdkDPO)."""
        from obliviate.llm.methods.base import DEFAULT_REFUSALS

        return DEFAULT_REFUSALS


def limit_split(split: DataSplit, n: int | None) -> DataSplit:
    """The first ``n`` records of ``split`` (all of them for ``None``)."""
    if n is None or len(split) <= n:
        return split
    return DataSplit(split.name, list(split.records)[:n], source=f"{split.source}[:{n}]")
