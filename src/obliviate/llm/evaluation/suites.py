"""LLM evaluation suites: TOFU, membership inference and memorisation, sharing one scorer.

Every suite is a class registered in :data:`obliviate.core.registry.SUITES` (modality ``llm``)
with a typed options model; it reports the metrics registered in
:data:`obliviate.core.registry.METRICS` with its name as their ``suite`` (one file each under
:mod:`obliviate.llm.metrics`). Suites do not run the model themselves: they ask an
:class:`EvalSession` (one per model) for answer scores and greedy generations, which it computes
once and caches. :func:`evaluate` runs several suites on one model and first gathers what they
all need, so each answer of each split is scored in a single prefix-sharing pass
(:class:`~obliviate.llm.evaluation.scorer.AnswerScorer`) and each question is generated once::

    outputs = evaluate(model, tokenizer, fmt, task_splits(task), suites=["tofu", "mia"],
                       options={"tofu": {"ds_size": 300}}, reference_model=target)
    outputs["tofu"].result.summary()      # EvalResult: per-item metrics + aggregates
    outputs["tofu"].artifacts["tofu_log"]  # TOFU's own per-question log format

* ``tofu`` — TOFU (Maini et al. 2024): Prob., ROUGE-L recall and Truth Ratio per split, Model
  Utility and, given an oracle log, Forget Quality, aggregated by
  :mod:`obliviate.llm.evaluation.tofu_aggregate`; also TOFU's legacy log.
* ``mia`` — forget (members) vs. holdout (non-members): LOSS, ZLib, Min-K%, Min-K%++, GradNorm
  and, with a reference model, Reference; PrivLeak (MUSE, Shi et al. 2024) given the oracle's
  MIA result.
* ``memorization`` — exact memorisation (Tirumala et al. 2022) and extraction strength
  (Carlini et al. 2021) on the forget split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from obliviate.core.errors import ConfigError
from obliviate.core.metric import Need as MetricNeed
from obliviate.core.metric import collect_needs
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import SUITES
from obliviate.core.task import DataSplit
from obliviate.llm.data.formatting import PromptFormat
from obliviate.llm.evaluation.session import (  # noqa: F401  (older import paths)
    MODALITY,
    EngineOptions,
    EvalSession,
    LLMInputs,
    LLMSuite,
    RecordsNeed,
    SplitLike,
    SuiteOutput,
    _head,
    _provenance,
    _validated,
)
from obliviate.llm.metrics.memorization import MemorizationOptions, MemorizationSuite
from obliviate.llm.metrics.mia import MiaOptions, MiaSuite, _oracle_aucs  # noqa: F401
from obliviate.llm.metrics.tofu import TOFU_ROLES, TofuOptions, TofuSuite  # noqa: F401

Need = RecordsNeed
"""The older, records-based need (:class:`RecordsNeed`); new metrics declare
:class:`obliviate.core.metric.Need` instead."""


# ------------------------------------------------------------------------------------------------
# Running several suites
# ------------------------------------------------------------------------------------------------
def get_suite(name: str, options: StrictModel | Mapping[str, Any] | None = None) -> LLMSuite:
    """The registered LLM suite ``name`` with ``options``."""
    return SUITES.get(name, MODALITY)(options)


def task_splits(task: Any) -> dict[str, DataSplit]:
    """``forget``, ``retain`` and the evaluation splits of an :class:`UnlearningTask`."""
    return {"forget": task.forget, "retain": task.retain, **task.eval_splits}


def evaluate(model: Any, tokenizer: Any, fmt: PromptFormat, splits: Mapping[str, SplitLike],
             suites: Sequence[str | LLMSuite] = ("tofu", "mia", "memorization"),
             options: Mapping[str, Any] | None = None,
             engine: EngineOptions | Mapping[str, Any] | None = None,
             session: EvalSession | None = None, model_name: str = "model",
             oracle_results: Mapping[str, Any] | None = None,
             **inputs: Any) -> dict[str, SuiteOutput]:
    """Run ``suites`` on one model, computing everything their metrics need in one shared pass.

    ``options`` maps a suite name to its options (and may hold ``engine`` for
    :class:`EngineOptions`). ``oracle_results`` maps a suite to the oracle's recorded result of
    it (:func:`obliviate.core.metric.load_oracle_results`); metrics that declare
    ``Need.oracle(suite)`` read it. ``reference_model`` is the model reference statistics come
    from; other ``inputs`` go to every suite's ``run``.
    """
    options = dict(options or {})
    if engine is None:
        engine = options.pop("engine", None)
    else:
        options.pop("engine", None)
    objs = [s if isinstance(s, LLMSuite) else get_suite(s, options.get(s)) for s in suites]
    unknown = set(options) - {s.name for s in objs}
    if unknown:
        raise ConfigError(f"evaluation options for suite(s) not run: {', '.join(sorted(unknown))}")
    session = session or EvalSession(model, tokenizer, fmt, engine, name=model_name)
    needs = collect_needs(suite.needs(splits, **inputs) for suite in objs)
    session.prefetch(needs, splits)
    resolved = LLMInputs(session, splits, oracle=dict(oracle_results or {}))
    reference_model = inputs.pop("reference_model", None)
    wanted = [n for n in needs if isinstance(n, MetricNeed) and n.kind == "reference_stats"]
    if reference_model is not None and wanted:
        ref = EvalSession(reference_model, tokenizer, fmt, session.engine, name="reference")
        ref.prefetch([MetricNeed.token_stats(n.split or "", limit=n.limit) for n in wanted],
                     splits)
        resolved.reference = ref
        inputs["reference_session"] = ref
    return {suite.name: suite.run(session, splits, resolved=resolved, **inputs)
            for suite in objs}


__all__ = [
    "EngineOptions",
    "EvalSession",
    "LLMInputs",
    "LLMSuite",
    "MemorizationOptions",
    "MemorizationSuite",
    "MiaOptions",
    "MiaSuite",
    "RecordsNeed",
    "SuiteOutput",
    "TofuOptions",
    "TofuSuite",
    "evaluate",
    "get_suite",
    "task_splits",
]
