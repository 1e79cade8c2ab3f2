"""LLM evaluation: a shared answer scorer, batched greedy generation and registered suites.

Importing this package registers the ``tofu``, ``mia``, ``memorization`` and ``muse`` suites in
:data:`obliviate.core.registry.SUITES` (modality ``llm``).
"""

from obliviate.llm.evaluation import (  # noqa: F401  (register the mcq, lm_eval, muse suites)
    lm_eval_suite,
    mcq,
    muse,
)
from obliviate.llm.evaluation.generation import greedy_generate
from obliviate.llm.evaluation.scorer import AnswerScore, AnswerScorer, RecordScores
from obliviate.llm.evaluation.suites import (
    EngineOptions,
    EvalSession,
    MemorizationOptions,
    MiaOptions,
    SuiteOutput,
    TofuOptions,
    evaluate,
    get_suite,
    task_splits,
)

__all__ = [
    "AnswerScore",
    "AnswerScorer",
    "EngineOptions",
    "EvalSession",
    "MemorizationOptions",
    "MiaOptions",
    "RecordScores",
    "SuiteOutput",
    "TofuOptions",
    "evaluate",
    "get_suite",
    "greedy_generate",
    "task_splits",
]
