"""General utility through lm-evaluation-harness (Gao et al., EleutherAI, ``lm-eval`` on PyPI):
any task list (MMLU, ARC, HellaSwag, WMDP, ... wherever their data can be reached, or custom
tasks from local YAML files) run on the in-memory model, recorded like every other suite.

The model object is handed to the harness as
``lm_eval.models.huggingface.HFLM(pretrained=model, tokenizer=tokenizer)`` and the tasks run
through ``lm_eval.simple_evaluate``; nothing of the harness is reimplemented. Custom tasks are
found through ``TaskManager(include_path=...)``. Each numeric entry of the harness's results
``{metric},{filter}`` becomes one metric keyed ``lm_eval/<task>/<metric>`` (the filter is
appended when it is not ``none``), with the per-document values from the logged samples where
the harness gives them (``acc`` per document of a multiple-choice task); stderr entries are kept
in ``details``. WMDP and OpenUnlearning read ``acc`` (MMLU: the size-weighted group mean).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from obliviate.core.errors import ConfigError
from obliviate.core.metric import Metric, Need, ResolvedInputs
from obliviate.core.precision import evaluating
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import METRICS, SUITES
from obliviate.core.result import MetricResult
from obliviate.llm.evaluation.suites import (
    MODALITY,
    EvalSession,
    LLMSuite,
    SplitLike,
    SuiteOutput,
)


class LmEvalOptions(StrictModel):
    """What the harness runs (its own option names)."""

    tasks: list[str] = Field(default_factory=lambda: ["mmlu"], min_length=1,
                             description="lm-eval task or group names")
    include_path: str | None = Field(default=None,
                                     description="a folder of custom task YAML files")
    num_fewshot: int | None = Field(default=None, ge=0,
                                    description="None: each task's own default")
    limit: int | float | None = Field(default=None, gt=0,
                                      description="documents per task (a count or a fraction)")
    batch_size: int = Field(default=8, ge=1)
    """requests run at once"""
    apply_chat_template: bool = False
    """format lm-eval's prompts with the tokenizer's chat template"""
    bootstrap_iters: int = Field(default=0, ge=0, description="stderr bootstrap (0: skipped)")
    seed: int = 0
    """lm-eval's seed (few-shot sampling)"""


def _harness() -> tuple[Any, Any, Any]:
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ConfigError("the lm_eval suite needs lm-evaluation-harness: "
                          "pip install 'obliviate[lmeval]'") from None
    return simple_evaluate, HFLM, TaskManager


def run_lm_eval(model: Any, tokenizer: Any, options: LmEvalOptions) -> dict[str, Any]:
    """The harness's result dictionary for ``options.tasks`` on ``model``."""
    simple_evaluate, HFLM, TaskManager = _harness()
    with evaluating(model):  # the harness's forward passes take the measurement precision
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=options.batch_size)
        manager = TaskManager(include_path=options.include_path) if options.include_path \
            else TaskManager()
        results = simple_evaluate(
            model=lm, tasks=list(options.tasks), num_fewshot=options.num_fewshot,
            limit=options.limit, bootstrap_iters=options.bootstrap_iters, log_samples=True,
            task_manager=manager, apply_chat_template=options.apply_chat_template,
            random_seed=options.seed, numpy_random_seed=options.seed,
            torch_random_seed=options.seed, fewshot_random_seed=options.seed)
    if not results:
        raise ConfigError(f"lm_eval returned no results for tasks {options.tasks}")
    return results


def harness_metrics(results: Mapping[str, Any]) -> list[MetricResult]:
    """One :class:`MetricResult` per numeric ``{metric},{filter}`` entry of each task."""
    samples = results.get("samples") or {}
    out = []
    for task, entries in results.get("results", {}).items():
        for key, value in entries.items():
            metric, _, filt = key.partition(",")
            if "_stderr" in metric or not isinstance(value, (int, float)) \
                    or isinstance(value, bool):
                continue
            name = metric if filt in ("", "none") else f"{metric}_{filt}"
            per_item = [float(s[metric]) for s in samples.get(task, [])
                        if isinstance(s.get(metric), (int, float))
                        and s.get("filter", "none") == (filt or "none")] or None
            stderr = entries.get(f"{metric}_stderr,{filt}")
            details = {"harness_key": key, "n": entries.get("samples", None)}
            if isinstance(stderr, (int, float)) and math.isfinite(stderr):
                details["stderr"] = float(stderr)
            out.append(MetricResult(name=name, value=float(value), per_item=per_item,
                                    split=task, higher_is_better=None, details=details))
    return out


@METRICS.register("lm_eval", modality=MODALITY)
class HarnessMetrics(Metric):
    """Every numeric ``{metric},{filter}`` entry of each lm-evaluation-harness task (Gao et al.,
    EleutherAI), split = the task, per document where the harness logs samples
    (:func:`harness_metrics`)."""

    suite = "lm_eval"
    higher_is_better = None

    def needs(self, split: str) -> list[Need]:
        return [Need.harness(self.suite)]

    def compute(self, inputs: Any, split: str) -> list[MetricResult]:
        return harness_metrics(inputs.get(Need.harness(self.suite)))


@SUITES.register("lm_eval", modality=MODALITY)
class LmEvalSuite(LLMSuite):
    """lm-evaluation-harness tasks on the in-memory model; keys ``lm_eval/<task>/<metric>``."""

    name = "lm_eval"
    options_class = LmEvalOptions
    options: LmEvalOptions

    def run(self, session: EvalSession, splits: Mapping[str, SplitLike],
            **inputs: Any) -> SuiteOutput:
        start = time.perf_counter()
        results = run_lm_eval(session.model, session.tokenizer, self.options)
        result = self._result(session, splits, [])
        for metric in HarnessMetrics().compute(ResolvedInputs({Need.harness(self.name): results}),
                                               ""):
            result.add(metric)
        versions = results.get("versions", {})
        result.provenance["lm_eval"] = {
            "tasks": list(self.options.tasks), "versions": dict(versions),
            "n_samples": results.get("n-samples", {}),
            "lm_eval_version": _version()}
        result.seconds = time.perf_counter() - start
        return SuiteOutput(result)


def _version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


__all__ = ["HarnessMetrics", "LmEvalOptions", "LmEvalSuite", "harness_metrics", "run_lm_eval"]
