"""What the question-answer benchmarks (TOFU, synthetic facts, a user's JSONL) share: the
headline numbers and report axes of the TOFU-style suites (closeness to the oracle, see
:mod:`obliviate.core.axes`; a user's plain-text JSONL adds MUSE's), and the refusals a method
may use."""

from __future__ import annotations

from typing import Any, ClassVar

from obliviate.core.benchmark import Benchmark, Headline
from obliviate.core.task import DataSplit, UnlearningTask

QA_SUITES = ("tofu", "mia", "memorization")
QA_HEADLINE = (
    Headline("forget Prob", "tofu/forget/prob"), Headline("forget ROUGE", "tofu/forget/rouge"),
    Headline("forget TR", "tofu/forget/truth_ratio"),
    Headline("retain Prob", "tofu/retain/prob"), Headline("retain ROUGE", "tofu/retain/rouge"),
    Headline("Utility", "tofu/model_utility"), Headline("Forget Q.", "tofu/forget_quality"),
    Headline("MIA AUC", "mia/forget/mia_min_k"),
    Headline("PrivLeak", "mia/forget/privleak_min_k", 1),
    Headline("Extraction", "memorization/forget/extraction_strength"),
)
"""The columns every table of a TOFU-style run shows first (the CLI's, ``benchmarks/tofu``'s)."""
TEXT_HEADLINE = (
    Headline("VerbMem f ↓", "muse/verbmem_forget/verbmem", 1),
    Headline("Min-40% AUC", "muse/privleak_forget/mia_min_k"),
    Headline("PrivLeak (→0)", "muse/privleak_forget/privleak", 1),
    Headline("retain exact mem.", "memorization/retain/exact_memorization"),
)
"""MUSE's numbers on a plain-text forget set, and the retain documents' memorisation."""
_QA_FORGET = ("tofu/forget/prob", "tofu/forget/rouge", "tofu/forget/truth_ratio",
              "mia/forget/mia_min_k", "memorization/forget/extraction_strength")
QA_AXES = {
    # closeness to the oracle of answer likelihood, greedy answers, the truth ratio, the Min-K%
    # MIA AUC (the AUC MUSE's PrivLeak reads) and extraction strength, then shorter lists;
    # Forget Quality and PrivLeak derive from the truth ratio and the AUC: shown, not counted twice
    "forgetting": (f"close({', '.join(_QA_FORGET)})", f"close({', '.join(_QA_FORGET[:3])})",
                   "close(tofu/forget/prob, tofu/forget/rouge)", "close(tofu/forget/prob)",
                   "close(tofu/forget/rouge)"),
    "utility": ("kept(tofu/model_utility)",
                "kept(tofu/retain/prob, tofu/retain/rouge, tofu/retain/truth_ratio)",
                "kept(tofu/retain/prob, tofu/retain/rouge)"),
    # the forget probe under relearning, quantization and rephrasing; white-box probes report
    # other metrics and are left out (on the demo the linear probe lifts the target only 0.06
    # above the oracle, too small a lead to normalise by): the attack table still shows them
    "robustness": ("1-recovered(attack/*/rouge/recovery)", "1-recovered(attack/*/prob/recovery)"),
    "raw_forgetting": ("1-tofu/forget/prob", "1-tofu/forget/rouge"),
    "raw_utility": ("tofu/model_utility", "hmean(tofu/retain/prob, tofu/retain/rouge)"),
    "raw_robustness": ("1-max(attack/*/rouge/attacked)", "1-max(attack/*/prob/attacked)"),
}
"""The report's axes of the TOFU-style suites (see :mod:`obliviate.core.axes`)."""
TEXT_AXES = {
    "forgetting": ("close(muse/verbmem_forget/verbmem, muse/knowmem_forget_qa/knowmem, "
                   "muse/privleak_forget/mia_min_k)",
                   "close(muse/verbmem_forget/verbmem, muse/*/mia_min_k)",
                   "close(muse/verbmem_forget/verbmem)"),
    "utility": ("kept(muse/knowmem_retain_qa/knowmem)",
                "kept(memorization/retain/exact_memorization)"),
    "raw_forgetting": ("-muse/verbmem_forget/verbmem",),
    "raw_utility": ("muse/knowmem_retain_qa/knowmem", "memorization/retain/exact_memorization"),
}
"""What a plain-text forget set is read by instead (:func:`suites_for_data`): MUSE's VerbMem and
Min-K% AUC, and the retain documents' exact memorisation as utility."""


def chain(*declared: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Axes tried in the order given: each axis's expressions of the first, then the next's."""
    out: dict[str, tuple[str, ...]] = {}
    for axes in declared:
        for axis, exprs in axes.items():
            out[axis] = out.get(axis, ()) + exprs
    return out

class LLMBenchmark(Benchmark):
    """An LLM benchmark of question-answer records (:class:`~obliviate.llm.data.QARecord`)."""

    suites: ClassVar[tuple[str, ...]] = QA_SUITES
    headline: ClassVar[tuple[Headline, ...]] = QA_HEADLINE
    axes: ClassVar[dict[str, tuple[str, ...]]] = QA_AXES

    def default_evaluation(self, task: UnlearningTask
                           ) -> tuple[list[str], dict[str, Any], dict[str, str]]:
        """What a recipe that names no ``evaluation.suites`` runs on ``task``: ``(suites,
        their default options, suites left out -> why)``; the declared :attr:`suites`."""
        return list(self.suites), {}, {}

    def refusals(self, config: Any) -> tuple[str, ...]:
        """The refusal answers of the refusal-training methods (IdkNLL, IdkDPO)."""
        from obliviate.llm.methods.base import DEFAULT_REFUSALS

        return DEFAULT_REFUSALS


def suites_for_data(task: UnlearningTask
                    ) -> tuple[list[str], dict[str, Any], dict[str, str]]:
    """The suites that apply to a user's own data (``(suites, options, left out -> why)``):

    * a plain-text forget set (``{"text"}`` documents, no questions): MUSE's VerbMem on excerpts
      of the documents and PrivLeak (the ``muse`` suite), MIA and memorisation; memorisation
      also reads the retain documents, the retain-side utility a text task has;
    * question-answer data: TOFU's suite (metrics that need TOFU's paraphrased or perturbed
      answers are skipped by it, with the reason), MIA and memorisation.

    MIA needs non-member records: without a ``holdout`` split it is left out, with the reason.
    """
    text = all(r.is_text for r in task.forget)
    suites = ["muse", "mia", "memorization"] if text else list(QA_SUITES)
    options: dict[str, Any] = {"memorization": {"splits": ["forget", "retain"]}} if text else {}
    left_out = {}
    if text:
        left_out["tofu"] = ("the forget set is plain text: TOFU's metrics need questions and "
                            "answers (MUSE's VerbMem on the documents runs instead)")
    if "holdout" not in task.eval_splits:
        suites.remove("mia")
        left_out["mia"] = ("no holdout split: membership inference needs non-member records "
                           "(task.holdout_path)")
    return suites, options, left_out


def limit_split(split: DataSplit, n: int | None) -> DataSplit:
    """The first ``n`` records of ``split`` (all of them for ``None``)."""
    if n is None or len(split) <= n:
        return split
    return DataSplit(split.name, list(split.records)[:n], source=f"{split.source}[:{n}]")
