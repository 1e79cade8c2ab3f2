"""The ``tofu`` suite (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs"):
Prob., ROUGE-L recall, Truth Ratio, answer NLL and fluency per split, Model Utility and, given
the oracle's recorded TOFU result, Forget Quality; plus TOFU's legacy per-question log.

Each number is a registered metric (``suite = "tofu"``). Per question: the mean answer NLL of
the answer, of the paraphrased answer and of each perturbed answer, all after the original
question (TOFU ``evaluate_util.py``), and ROUGE-L recall (``rouge_score``, stemmer on) of the
greedy answer; aggregated by :mod:`obliviate.llm.evaluation.tofu_aggregate`. The truth-ratio
base is the paraphrased answer on forget/retain and the answer on real authors/world facts.
A metric's ``compute(inputs, split)`` takes the split's name; its TOFU role (forget, retain,
real_authors, world_facts) follows from the suite's ``roles`` option.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from obliviate.core.errors import ConfigError, DataError
from obliviate.core.metric import Metric, Need, as_results
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import METRICS, SUITES
from obliviate.core.result import EvalResult, MetricResult
from obliviate.llm.data.formatting import prompt_text
from obliviate.llm.data.records import QARecord
from obliviate.llm.evaluation import memorization as mem
from obliviate.llm.evaluation import tofu_aggregate as agg
from obliviate.llm.evaluation.scorer import AnswerScore, RecordScores
from obliviate.llm.evaluation.session import (
    MODALITY,
    EvalSession,
    LLMInputs,
    LLMSuite,
    SplitLike,
    SuiteOutput,
)

SUITE = "tofu"
TOFU_ROLES: tuple[str, ...] = agg.SPLITS
"""The TOFU evaluation roles: forget, retain, real_authors, world_facts."""


class TofuOptions(StrictModel):
    """TOFU evaluation (Maini et al. 2024); defaults follow OpenUnlearning (all questions)."""

    ds_size: int | None = Field(default=None, ge=1,
                                description="first N questions per split (TOFU's logs: 300)")
    max_new_tokens: int = Field(default=200, ge=1, description="greedy tokens for ROUGE")
    ks_method: Literal["auto", "exact", "asymp"] = "auto"
    """the KS test of Forget Quality: auto, exact or asymptotic (scipy's method)"""
    generate: bool = Field(default=True, description="false skips generation and ROUGE")
    roles: dict[str, str] = Field(
        default_factory=dict,
        description="TOFU role -> split name; default forget, retain_eval (else retain), "
                    "real_authors, world_facts")


def tofu_roles(options: TofuOptions, splits: Mapping[str, Any]) -> dict[str, str]:
    """TOFU role -> split name, for the roles present in ``splits``."""
    unknown = set(options.roles) - set(TOFU_ROLES)
    if unknown:
        raise ConfigError(f"tofu.roles: unknown role(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(TOFU_ROLES)}")
    defaults = {"forget": "forget",
                "retain": "retain_eval" if "retain_eval" in splits else "retain",
                "real_authors": "real_authors", "world_facts": "world_facts"}
    mapping = {**defaults, **options.roles}
    missing = [mapping[r] for r in options.roles if mapping[r] not in splits]
    if missing:
        raise DataError(f"tofu.roles names split(s) not given: {', '.join(missing)}")
    return {role: mapping[role] for role in TOFU_ROLES if mapping[role] in splits}


@dataclass
class RoleData:
    """What the TOFU metrics of one split derive from its needs (computed once per split)."""

    role: str
    records: list[QARecord]
    scores: list[RecordScores]
    texts: list[str] | None
    rouge1: list[float] | None
    rouge_l: list[float] | None
    truth_ratio_gap: str | None
    items: agg.TofuSplitItems


def split_needs(options: TofuOptions, split: str) -> list[Need]:
    needs = [Need.answer_scores(split, limit=options.ds_size)]
    if options.generate:
        needs.append(Need.generations(split, options.max_new_tokens, limit=options.ds_size))
    return needs


def role_data(inputs: Any, options: TofuOptions, split: str) -> RoleData | None:
    """The split's :class:`RoleData` (``None`` for an empty split), memoised on ``inputs``."""
    memo = getattr(inputs, "memo", {})
    key = (SUITE, split, options.ds_size, options.generate, options.max_new_tokens,
           tuple(sorted(options.roles.items())))
    if key in memo:
        return memo[key]
    roles = tofu_roles(options, inputs.splits)
    role = next((r for r, s in roles.items() if s == split), None)
    if role is None:
        raise DataError(f"tofu: split {split!r} has no TOFU role; set tofu.roles")
    records = inputs.records(split, options.ds_size)
    data = None
    if records:
        scores = inputs.get(Need.answer_scores(split, limit=options.ds_size))
        texts = (inputs.get(Need.generations(split, options.max_new_tokens,
                                             limit=options.ds_size))
                 if options.generate else None)
        rouge1, rouge_l = _rouge_recall(records, texts) if texts is not None else (None, None)
        reason = _truth_ratio_gap(role, records)
        data = RoleData(role, records, scores, texts, rouge1, rouge_l, reason,
                        _split_items(role, records, scores, rouge_l, reason is None))
    memo[key] = data
    return data


class TofuMetric(Metric):
    """Base of the per-split TOFU metrics."""

    suite = SUITE
    options: TofuOptions

    def __init__(self, options: TofuOptions | None = None) -> None:
        super().__init__(options or TofuOptions())

    def needs(self, split: str) -> list[Need]:
        return split_needs(self.options, split)

    def compute(self, inputs: Any, split: str) -> MetricResult | None:
        data = role_data(inputs, self.options, split)
        return None if data is None else self.from_data(data)

    def from_data(self, data: RoleData) -> MetricResult | None:
        raise NotImplementedError


_DETAILS = {"aggregation": "tofu_legacy"}


def _higher(role: str) -> bool | None:
    return None if role == "forget" else True


@METRICS.register("prob", modality=MODALITY)
class Prob(TofuMetric):
    """TOFU Prob. (Maini et al. 2024): exp(-mean answer NLL), normalised over the answer and
    its perturbed answers on real authors and world facts."""

    def from_data(self, data: RoleData) -> MetricResult:
        role, gap = data.role, data.truth_ratio_gap
        if role in ("real_authors", "world_facts") and gap is not None:
            prob = agg.probabilities(data.items, "forget")  # exp(-L_gt): nothing to normalise
            details = {**_DETAILS, "normalised": False, "reason": gap}
        else:
            prob, details = agg.probabilities(data.items, role), _DETAILS
        return MetricResult.from_items("prob", prob.tolist(), split=role,
                                       higher_is_better=_higher(role), details=details)


@METRICS.register("rouge", modality=MODALITY)
class Rouge(TofuMetric):
    """TOFU ROUGE (Maini et al. 2024): ROUGE-L recall of the greedy answer (stemmer on)."""

    def from_data(self, data: RoleData) -> MetricResult | None:
        rouge = [float(x) for x in data.items.rouge_l_recall]
        if all(math.isnan(x) for x in rouge):
            return None
        return MetricResult.from_items("rouge", rouge, split=data.role,
                                       higher_is_better=_higher(data.role),
                                       details={**_DETAILS, "rouge": "rougeL_recall"})


@METRICS.register("truth_ratio", modality=MODALITY)
class TruthRatio(TofuMetric):
    """TOFU Truth Ratio (Maini et al. 2024): perturbed vs. paraphrased answer likelihood,
    min(R, 1/R) on forget and max(0, 1 - 1/R) elsewhere."""

    def from_data(self, data: RoleData) -> MetricResult | None:
        if data.truth_ratio_gap is not None:
            return None
        role = data.role
        ratios = agg.truth_ratios(data.items)
        stat = agg.truth_ratio_stat(ratios, role)
        return MetricResult.from_items(
            "truth_ratio", stat.tolist(), split=role, higher_is_better=_higher(role),
            details={**_DETAILS, "raw_truth_ratio": ratios.tolist(),
                     "statistic": "min(R,1/R)" if role == "forget" else "max(0,1-1/R)"})


@METRICS.register("gt_loss", modality=MODALITY)
class GtLoss(TofuMetric):
    """The answer's mean NLL after its question (TOFU's ``avg_gt_loss``)."""

    def from_data(self, data: RoleData) -> MetricResult:
        return MetricResult.from_items(
            "gt_loss", [s.gt.mean_nll for s in data.scores], split=data.role,
            higher_is_better=None if data.role == "forget" else False)


@METRICS.register("fluency", modality=MODALITY)
class Fluency(TofuMetric):
    """Fluency of the greedy answers (distinct n-grams and repetition; over-unlearning often
    shows as gibberish), on the same generations as ROUGE."""

    def from_data(self, data: RoleData) -> MetricResult | None:
        return None if data.texts is None else mem.fluency(data.texts, split=data.role)


def _oracle_items(inputs: Any, options: TofuOptions) -> agg.TofuSplitItems | None:
    oracle = inputs.get(Need.oracle(SUITE))
    if oracle is None:
        return None
    return _oracle_forget(oracle).head(options.ds_size)


def _complete(inputs: Any, options: TofuOptions) -> dict[str, agg.TofuSplitItems]:
    """Items of each role whose truth ratio could be computed."""
    out = {}
    for role, split in tofu_roles(options, inputs.splits).items():
        data = role_data(inputs, options, split)
        if data is not None and data.truth_ratio_gap is None:
            out[role] = data.items
    return out


def tofu_score(inputs: Any, options: TofuOptions) -> agg.TofuScore | None:
    """TOFU's aggregate (``score_tofu``) when every role is complete and generated."""
    memo = getattr(inputs, "memo", {})
    key = (SUITE, "score", options.ds_size, options.ks_method, options.generate)
    if key not in memo:
        items = _complete(inputs, options)
        score = None
        if all(role in items for role in TOFU_ROLES) and options.generate:
            oracle = _oracle_items(inputs, options)
            score = agg.score_tofu({role: items[role] for role in TOFU_ROLES},
                                   {"forget": oracle} if oracle is not None else None,
                                   ds_size=None, ks_method=options.ks_method)
        memo[key] = score
    return memo[key]


class TofuAggregate(TofuMetric):
    """Base of the TOFU metrics over every split (``split`` is ignored)."""

    def needs(self, split: str) -> list[Need]:
        return [Need.oracle(SUITE)]


@METRICS.register("model_utility", modality=MODALITY)
class ModelUtility(TofuAggregate):
    """TOFU Model Utility (Maini et al. 2024): the harmonic mean of Prob., ROUGE and Truth Ratio
    on retain, real authors and world facts."""

    def compute(self, inputs: Any, split: str | None = None) -> MetricResult | None:
        score = tofu_score(inputs, self.options)
        if score is None:
            return None
        return MetricResult("model_utility", score.model_utility, higher_is_better=True,
                            details=dict(_DETAILS))


@METRICS.register("forget_quality", modality=MODALITY)
class ForgetQuality(TofuAggregate):
    """TOFU Forget Quality (Maini et al. 2024): the KS-test p-value between the forget split's
    truth ratios and the oracle's."""

    reads_oracle = True

    def compute(self, inputs: Any, split: str | None = None) -> MetricResult | None:
        forget = _complete(inputs, self.options).get("forget")
        if forget is None:  # no truth ratio (no perturbed answers): skipped, see _skipped
            return None
        oracle = _oracle_items(inputs, self.options)
        if oracle is None:
            return None
        ratios = agg.truth_ratios(forget)
        fq, ks = agg.forget_quality(ratios, agg.truth_ratios(oracle), self.options.ks_method)
        return MetricResult("forget_quality", fq, higher_is_better=True, details={
            "ks_statistic": ks, "ks_method": self.options.ks_method,
            "n": len(ratios), "oracle_n": len(oracle)})


PER_SPLIT = ("prob", "rouge", "truth_ratio", "gt_loss", "fluency")
AGGREGATE = ("model_utility", "forget_quality")


@SUITES.register(SUITE, modality=MODALITY)
class TofuSuite(LLMSuite):
    """TOFU (Maini et al. 2024): Prob., ROUGE, Truth Ratio, Model Utility, Forget Quality.

    Splits whose records lack perturbed (or, on forget/retain, paraphrased) answers skip the
    truth ratio; the reason is kept in ``result.provenance["skipped"]``. Every metric
    registered with ``suite = "tofu"`` beyond the built-in ones runs on each split.

    ``run(..., oracle=...)`` takes the oracle model's TOFU output (a :class:`SuiteOutput`, its
    ``tofu_log``, an :class:`EvalResult` of this suite, ``{role: TofuSplitItems}`` or a log
    path) and adds Forget Quality; :func:`~obliviate.llm.evaluation.suites.evaluate` hands in
    the oracle's recorded result as ``oracle_results["tofu"]``.
    """

    name = SUITE
    options_class = TofuOptions
    options: TofuOptions

    def roles(self, splits: Mapping[str, SplitLike]) -> dict[str, str]:
        """TOFU role -> split name, for the roles present in ``splits``."""
        return tofu_roles(self.options, splits)

    def metrics(self) -> tuple[list[Metric], list[Metric]]:
        """(per-split metrics, aggregate metrics), registration order within each."""
        from obliviate.core.metric import metrics_of

        every = {cls.name: cls for cls in metrics_of(SUITE, MODALITY)}
        per = [*PER_SPLIT, *(n for n in every if n not in PER_SPLIT + AGGREGATE)]
        return ([every[n](self.options) for n in per if n in every],
                [every[n](self.options) for n in AGGREGATE if n in every])

    def needs(self, splits: Mapping[str, SplitLike], **inputs: Any) -> list[Need]:
        per, total = self.metrics()
        return [n for name in self.roles(splits).values() for m in per for n in m.needs(name)] \
            + [n for m in total for n in m.needs("")]

    def run(self, session: EvalSession, splits: Mapping[str, SplitLike],
            oracle: Any = None, resolved: LLMInputs | None = None,
            **inputs: Any) -> SuiteOutput:
        start = time.perf_counter()
        roles = self.roles(splits)
        if not roles:
            raise DataError(f"tofu: none of the splits {', '.join(splits) or '(none)'} has a "
                            f"TOFU role ({', '.join(TOFU_ROLES)}); set tofu.roles")
        resolved = resolved or LLMInputs(session, splits)
        if oracle is not None:
            resolved.oracle = {**resolved.oracle, SUITE: oracle}
        result = self._result(session, splits, list(roles.values()))
        result.options["roles"] = roles
        skipped: dict[str, str] = {}
        log: dict[str, Any] = {}
        per, total = self.metrics()
        for role, split_name in roles.items():
            data = role_data(resolved, self.options, split_name)
            if data is None:
                skipped[role] = f"split {split_name!r} is empty"
                continue
            log[agg.LEGACY_FILES[role]] = _legacy_split_log(
                role, data.records, data.scores, data.texts, data.rouge1, data.rouge_l,
                [prompt_text(session.tokenizer, session.fmt, r.question) for r in data.records])
            for metric in per:
                for value in as_results(metric.compute(resolved, split_name)):
                    result.add(value)
            if data.truth_ratio_gap is not None:
                skipped[f"{role}/truth_ratio"] = data.truth_ratio_gap
            if data.texts is None:
                skipped[f"{role}/rouge"] = "generation disabled (tofu.generate=false)"
        for metric in total:
            for value in as_results(metric.compute(resolved, "")):
                result.add(value)
        self._skipped(resolved, skipped)
        result.provenance["skipped"] = skipped
        result.provenance["session"] = session.provenance()
        result.seconds = time.perf_counter() - start
        return SuiteOutput(result, {"tofu_log": log,
                                    "tofu_score": tofu_score(resolved, self.options)},
                           files={agg.LEGACY_COMBINED_FILE: log})

    def _skipped(self, resolved: LLMInputs, skipped: dict[str, str]) -> None:
        """Why Model Utility or Forget Quality is missing, if it is."""
        items = _complete(resolved, self.options)
        if tofu_score(resolved, self.options) is None:
            lacking = [r for r in TOFU_ROLES if r not in items]
            skipped["model_utility"] = (
                "needs Prob., ROUGE and Truth Ratio on retain, real_authors and world_facts"
                + (f"; lacking: {', '.join(lacking)}" if lacking else "; generation disabled"))
        if resolved.get(Need.oracle(SUITE)) is None:
            skipped["forget_quality"] = "no oracle TOFU log given"
        elif "forget" not in items:
            skipped["forget_quality"] = "the forget split has no truth ratio"


def _truth_ratio_gap(role: str, records: Sequence[QARecord]) -> str | None:
    """Why the truth ratio cannot be computed on this split, or None."""
    no_pert = sum(not r.perturbed_answers for r in records)
    if no_pert:
        return f"{no_pert} of {len(records)} questions have no perturbed answers"
    if role in ("forget", "retain"):
        no_para = sum(r.paraphrased_answer is None for r in records)
        if no_para:
            return f"{no_para} of {len(records)} questions have no paraphrased answer"
    return None


def _base(role: str, score: RecordScores) -> AnswerScore:
    """The truth ratio's base answer: paraphrased on forget/retain, the answer elsewhere."""
    if role in ("forget", "retain") and score.paraphrased is not None:
        return score.paraphrased
    return score.gt


def _split_items(role: str, records: Sequence[QARecord], scores: Sequence[RecordScores],
                 rouge_l: Sequence[float] | None, complete: bool) -> agg.TofuSplitItems:
    gt = [s.gt.mean_nll for s in scores]
    base = [_base(role, s).mean_nll for s in scores]
    pert = [[p.mean_nll for p in s.perturbed] if complete else [math.nan] for s in scores]
    rouge = list(rouge_l) if rouge_l is not None else [math.nan] * len(records)
    return agg.TofuSplitItems(gt, base, pert, rouge)


def _rouge_recall(records: Sequence[QARecord], texts: Sequence[str]
                  ) -> tuple[list[float], list[float]]:
    """ROUGE-1 and ROUGE-L recall of each generation against its answer (TOFU's settings)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    r1, rl = [], []
    for record, text in zip(records, texts, strict=True):
        s = scorer.score(record.answer, text)
        r1.append(float(s["rouge1"].recall))
        rl.append(float(s["rougeL"].recall))
    return r1, rl


def _legacy_split_log(role: str, records: Sequence[QARecord], scores: Sequence[RecordScores],
                      texts: Sequence[str] | None, rouge1: Sequence[float] | None,
                      rouge_l: Sequence[float] | None, prompts: Sequence[str]) -> dict[str, Any]:
    """One split in TOFU's ``evaluate_util.py`` log format, keyed by question index."""
    idx = [str(i) for i in range(len(records))]
    log: dict[str, Any] = {
        "avg_gt_loss": {i: s.gt.mean_nll for i, s in zip(idx, scores, strict=True)},
        "gt_loss": {i: s.gt.nll_sum for i, s in zip(idx, scores, strict=True)},
        "num_token_gt": {i: s.gt.num_tokens for i, s in zip(idx, scores, strict=True)},
    }
    if texts is not None and rouge1 is not None and rouge_l is not None:
        log["generated_text"] = {i: [p, t, r.answer]
                                 for i, p, t, r in zip(idx, prompts, texts, records, strict=True)}
        log["rouge1_recall"] = dict(zip(idx, rouge1, strict=True))
        log["rougeL_recall"] = dict(zip(idx, rouge_l, strict=True))
    if _truth_ratio_gap(role, records) is None:
        base = [_base(role, s) for s in scores]
        pert_mean = [[p.mean_nll for p in s.perturbed] for s in scores]
        log.update({
            "average_perturb_loss": dict(zip(idx, pert_mean, strict=True)),
            "avg_paraphrased_loss": {i: b.mean_nll for i, b in zip(idx, base, strict=True)},
            # TOFU's logged "truth_ratio" is exp(L_base - mean_j L_pert) = 1 / R
            "truth_ratio": {i: math.exp(b.mean_nll - float(np.mean(p)))
                            for i, b, p in zip(idx, base, pert_mean, strict=True)},
            "paraphrased_loss": {i: b.nll_sum for i, b in zip(idx, base, strict=True)},
            "perturb_loss": {i: [p.nll_sum for p in s.perturbed]
                             for i, s in zip(idx, scores, strict=True)},
            "num_token_paraphrased": {i: b.num_tokens for i, b in zip(idx, base, strict=True)},
            "num_token_perturb": {i: [p.num_tokens for p in s.perturbed]
                                  for i, s in zip(idx, scores, strict=True)},
        })
        if role in ("real_authors", "world_facts"):
            normalized = {}
            for i, s in zip(idx, scores, strict=True):
                probs = np.exp(-np.array([s.gt.mean_nll, *(p.mean_nll for p in s.perturbed)]))
                normalized[i] = float(-np.log(probs[0] / probs.sum()))
            log["normalized_gt_loss"] = normalized
    return log


def _oracle_forget(oracle: Any) -> agg.TofuSplitItems:
    """The oracle's forget-split items from any of the accepted oracle forms."""
    if isinstance(oracle, SuiteOutput):
        oracle = oracle.artifacts.get("tofu_log", oracle.result)
    if isinstance(oracle, EvalResult):
        metric = oracle.metrics.get("forget/truth_ratio")
        raw = metric.details.get("raw_truth_ratio") if metric is not None else None
        if raw is None:
            raise DataError("the oracle EvalResult has no forget/truth_ratio with raw ratios")
        # rebuild items whose truth_ratios() returns the raw ratios: L_base = 0, L_pert = log R
        return agg.TofuSplitItems([0.0] * len(raw), [0.0] * len(raw),
                                  [[math.log(r)] for r in raw], [0.0] * len(raw))
    if isinstance(oracle, (str, Path)):
        return agg.load_eval_log(oracle, splits=("forget",))["forget"]
    if isinstance(oracle, Mapping):
        if isinstance(oracle.get("forget"), agg.TofuSplitItems):
            return oracle["forget"]
        return agg.parse_legacy_log(oracle, "oracle log", splits=("forget",))["forget"]
    raise ConfigError(f"tofu: cannot read an oracle from a {type(oracle).__name__}")


# ------------------------------------------------------------------------------------------------
# MIA
# ------------------------------------------------------------------------------------------------
