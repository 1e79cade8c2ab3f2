"""LLM evaluation suites: TOFU, membership inference and memorisation, sharing one scorer.

Every suite is a class registered in :data:`obliviate.core.registry.SUITES` (modality ``llm``)
with a typed options model. Suites do not run the model themselves: they ask an
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

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from obliviate.core.errors import ConfigError, DataError
from obliviate.core.io import atomic_write_json
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import SUITES
from obliviate.core.result import EvalResult, MetricResult
from obliviate.core.task import DataSplit
from obliviate.llm.data.formatting import PromptFormat, answer_nll, prompt_text
from obliviate.llm.data.records import QARecord
from obliviate.llm.evaluation import memorization as mem
from obliviate.llm.evaluation import mia
from obliviate.llm.evaluation import tofu_aggregate as agg
from obliviate.llm.evaluation.generation import greedy_generate
from obliviate.llm.evaluation.scorer import AnswerScore, AnswerScorer, RecordScores, ScoreMode

MODALITY = "llm"
SplitLike = DataSplit | Sequence[QARecord]

TOFU_ROLES: tuple[str, ...] = agg.SPLITS
"""The TOFU evaluation roles: forget, retain, real_authors, world_facts."""


# ------------------------------------------------------------------------------------------------
# Options
# ------------------------------------------------------------------------------------------------
class EngineOptions(StrictModel):
    """How the model is run (shared by every suite of one :func:`evaluate` call)."""

    batch_size: int = Field(default=16, ge=1, description="rows per scoring forward pass")
    batch_tokens: int = Field(default=4096, ge=1, description="tokens per scoring forward pass")
    max_length: int = Field(default=512, ge=8, description="prompt + answer tokens, truncated")
    generation_batch_size: int = Field(default=16, ge=1)
    scorer_mode: ScoreMode = "prefix"
    progress: bool = False


class TofuOptions(StrictModel):
    """TOFU evaluation (Maini et al. 2024); defaults follow OpenUnlearning (all questions)."""

    ds_size: int | None = Field(default=None, ge=1,
                                description="first N questions per split (TOFU's logs: 300)")
    max_new_tokens: int = Field(default=200, ge=1, description="greedy tokens for ROUGE")
    ks_method: Literal["auto", "exact", "asymp"] = "auto"
    generate: bool = Field(default=True, description="false skips generation and ROUGE")
    roles: dict[str, str] = Field(
        default_factory=dict,
        description="TOFU role -> split name; default forget, retain_eval (else retain), "
                    "real_authors, world_facts")


class MiaOptions(StrictModel):
    """Membership inference on forget (members) vs. holdout (non-members)."""

    attacks: list[str] = Field(
        default_factory=lambda: ["loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm"],
        description="reference is added when a reference model is given")
    k: float = Field(default=mia.DEFAULT_K, gt=0.0, le=1.0)
    forget_split: str = "forget"
    holdout_split: str = "holdout"
    ds_size: int | None = Field(default=None, ge=1)
    privleak_convention: Literal["muse", "relative_auc"] = Field(
        default="muse", description="muse: MUSE's published PrivLeak; relative_auc: pre-0.2")


class MemorizationOptions(StrictModel):
    """Exact memorisation and extraction strength on answers (teacher-forced argmax)."""

    splits: list[str] = Field(default_factory=lambda: ["forget"])
    ds_size: int | None = Field(default=None, ge=1)
    openunlearning_compat: bool = False


# ------------------------------------------------------------------------------------------------
# Session: one model, cached scores and generations
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Need:
    """What a suite needs from a session for some records."""

    records: Sequence[QARecord]
    all_answers: bool = False
    """Score the paraphrased and perturbed answers too (else the answer only)."""
    token_stats: bool = False
    max_new_tokens: int | None = None
    """Generate greedily with this budget (None: no generation)."""


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
        self._generations: dict[tuple[str, int], str] = {}
        self.generation_seconds = 0.0

    def clear(self) -> None:
        self.scorer.clear_cache()
        self._generations.clear()

    def prefetch(self, needs: Sequence[Need]) -> None:
        """Compute, in one scorer pass and one generation pass per budget, all ``needs``."""
        records: list[QARecord] = []
        answers: list[list[str]] = []
        for need in needs:
            for r in need.records:
                records.append(r)
                answers.append(_answers(r) if need.all_answers else [r.answer])
        if records:
            self.scorer.score(records, answers, token_stats=any(n.token_stats for n in needs),
                              desc=f"scoring {self.name}")
        budgets = sorted({n.max_new_tokens for n in needs if n.max_new_tokens is not None})
        for budget in budgets:
            questions = [r.question for n in needs if n.max_new_tokens == budget
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
            texts = greedy_generate(self.model, self.tokenizer, self.fmt, todo, max_new_tokens,
                                    batch_size=self.engine.generation_batch_size,
                                    progress=self.engine.progress)
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


# ------------------------------------------------------------------------------------------------
# Suite base
# ------------------------------------------------------------------------------------------------
@dataclass
class SuiteOutput:
    """A suite's :class:`EvalResult` plus extra outputs (e.g. TOFU's legacy log)."""

    result: EvalResult
    artifacts: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | Path) -> Path:
        """Write ``{suite}.json`` and, for TOFU, ``eval_log_aggregated.json`` (TOFU's combined
        log, readable by :func:`~obliviate.llm.evaluation.tofu_aggregate.load_eval_log`)."""
        directory = Path(directory)
        self.result.save(directory / f"{self.result.suite}.json")
        if "tofu_log" in self.artifacts:
            atomic_write_json(directory / agg.LEGACY_COMBINED_FILE, self.artifacts["tofu_log"])
        return directory


class LLMSuite:
    """Base of the LLM suites: ``Suite(options).run(session, splits, **inputs)``."""

    name: ClassVar[str] = ""
    options_class: ClassVar[type[StrictModel]] = StrictModel

    def __init__(self, options: StrictModel | Mapping[str, Any] | None = None,
                 **overrides: Any) -> None:
        base = options.model_dump() if isinstance(options, StrictModel) else dict(options or {})
        self.options = _validated(self.options_class, {**base, **overrides})

    def needs(self, splits: Mapping[str, SplitLike], **inputs: Any) -> list[Need]:
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
        session.prefetch(self.needs(splits, **inputs))
        return self.run(session, splits, **inputs)

    def _result(self, session: EvalSession, splits: Mapping[str, SplitLike],
                used: Sequence[str]) -> EvalResult:
        return EvalResult(
            suite=self.name, model=session.name,
            options={**self.options.model_dump(mode="json"),
                     "engine": session.engine.model_dump(mode="json")},
            provenance={"splits": {name: _provenance(splits[name], name) for name in used}})


# ------------------------------------------------------------------------------------------------
# TOFU
# ------------------------------------------------------------------------------------------------
@SUITES.register("tofu", modality=MODALITY)
class TofuSuite(LLMSuite):
    """TOFU (Maini et al. 2024): Prob., ROUGE, Truth Ratio, Model Utility, Forget Quality.

    Per question: the mean answer NLL of the answer, of the paraphrased answer and of each
    perturbed answer, all after the original question (TOFU ``evaluate_util.py``), and ROUGE-L
    recall (``rouge_score``, stemmer on) of the greedy answer. The truth-ratio base is the
    paraphrased answer on forget/retain and the answer on real authors/world facts. Splits whose
    records lack perturbed (or, on forget/retain, paraphrased) answers skip the truth ratio; the
    reason is kept in ``result.provenance["skipped"]``.

    ``run(..., oracle=...)`` takes the oracle model's TOFU output (a :class:`SuiteOutput`, its
    ``tofu_log``, an :class:`EvalResult` of this suite, ``{role: TofuSplitItems}`` or a log
    path) and adds Forget Quality.
    """

    name = "tofu"
    options_class = TofuOptions
    options: TofuOptions

    def roles(self, splits: Mapping[str, SplitLike]) -> dict[str, str]:
        """TOFU role -> split name, for the roles present in ``splits``."""
        unknown = set(self.options.roles) - set(TOFU_ROLES)
        if unknown:
            raise ConfigError(f"tofu.roles: unknown role(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(TOFU_ROLES)}")
        defaults = {"forget": "forget",
                    "retain": "retain_eval" if "retain_eval" in splits else "retain",
                    "real_authors": "real_authors", "world_facts": "world_facts"}
        mapping = {**defaults, **self.options.roles}
        missing = [mapping[r] for r in self.options.roles if mapping[r] not in splits]
        if missing:
            raise DataError(f"tofu.roles names split(s) not given: {', '.join(missing)}")
        return {role: mapping[role] for role in TOFU_ROLES if mapping[role] in splits}

    def _records(self, split: SplitLike) -> list[QARecord]:
        return _head(split, self.options.ds_size)

    def needs(self, splits: Mapping[str, SplitLike], **inputs: Any) -> list[Need]:
        budget = self.options.max_new_tokens if self.options.generate else None
        return [Need(self._records(splits[name]), all_answers=True, max_new_tokens=budget)
                for name in self.roles(splits).values()]

    def run(self, session: EvalSession, splits: Mapping[str, SplitLike],
            oracle: Any = None, **inputs: Any) -> SuiteOutput:
        start = time.perf_counter()
        roles = self.roles(splits)
        if not roles:
            raise DataError(f"tofu: none of the splits {', '.join(splits) or '(none)'} has a "
                            f"TOFU role ({', '.join(TOFU_ROLES)}); set tofu.roles")
        result = self._result(session, splits, list(roles.values()))
        result.options["roles"] = roles
        skipped: dict[str, str] = {}
        log: dict[str, Any] = {}
        items: dict[str, agg.TofuSplitItems] = {}
        for role, split_name in roles.items():
            records = self._records(splits[split_name])
            if not records:
                skipped[role] = f"split {split_name!r} is empty"
                continue
            scores = session.record_scores(records)
            texts = (session.generations([r.question for r in records],
                                         self.options.max_new_tokens)
                     if self.options.generate else None)
            rouge1, rouge_l = _rouge_recall(records, texts) if texts is not None else (None, None)
            log[agg.LEGACY_FILES[role]] = _legacy_split_log(
                role, records, scores, texts, rouge1, rouge_l,
                [prompt_text(session.tokenizer, session.fmt, r.question) for r in records])
            reason = _truth_ratio_gap(role, records)
            split_items = _split_items(role, records, scores, rouge_l, reason is None)
            for metric in _split_metrics(role, split_items, scores, reason):
                result.add(metric)
            if reason is not None:
                skipped[f"{role}/truth_ratio"] = reason
            else:
                items[role] = split_items
            if texts is None:
                skipped[f"{role}/rouge"] = "generation disabled (tofu.generate=false)"
            else:  # over-unlearning often shows as gibberish: score the same generations
                result.add(mem.fluency(texts, split=role))
        score = self._aggregate(result, items, oracle, skipped)
        result.provenance["skipped"] = skipped
        result.provenance["session"] = session.provenance()
        result.seconds = time.perf_counter() - start
        return SuiteOutput(result, {"tofu_log": log, "tofu_score": score})

    def _aggregate(self, result: EvalResult, items: dict[str, agg.TofuSplitItems], oracle: Any,
                   skipped: dict[str, str]) -> agg.TofuScore | None:
        complete = all(role in items for role in TOFU_ROLES) and self.options.generate
        oracle_items = _oracle_forget(oracle) if oracle is not None else None
        if oracle_items is not None:
            oracle_items = oracle_items.head(self.options.ds_size)
        score = None
        if complete:
            log = {role: items[role] for role in TOFU_ROLES}
            oracle_log = {"forget": oracle_items} if oracle_items is not None else None
            score = agg.score_tofu(log, oracle_log, ds_size=None, ks_method=self.options.ks_method)
            result.add(MetricResult("model_utility", score.model_utility, higher_is_better=True,
                                    details={"aggregation": "tofu_legacy"}))
        else:
            lacking = [r for r in TOFU_ROLES if r not in items]
            skipped["model_utility"] = (
                "needs Prob., ROUGE and Truth Ratio on retain, real_authors and world_facts"
                + (f"; lacking: {', '.join(lacking)}" if lacking else "; generation disabled"))
        if oracle_items is None:
            skipped["forget_quality"] = "no oracle TOFU log given"
        elif "forget" not in items:
            skipped["forget_quality"] = "the forget split has no truth ratio"
        else:
            ratios = agg.truth_ratios(items["forget"])
            fq, ks = agg.forget_quality(ratios, agg.truth_ratios(oracle_items),
                                        self.options.ks_method)
            result.add(MetricResult("forget_quality", fq, higher_is_better=True, details={
                "ks_statistic": ks, "ks_method": self.options.ks_method,
                "n": len(ratios), "oracle_n": len(oracle_items)}))
        return score


def _answers(record: QARecord) -> list[str]:
    return [record.answer, *([record.paraphrased_answer] if record.paraphrased_answer is not None
                             else []), *record.perturbed_answers]


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


def _split_metrics(role: str, items: agg.TofuSplitItems, scores: Sequence[RecordScores],
                   truth_ratio_gap: str | None) -> list[MetricResult]:
    """Prob., ROUGE and (when possible) Truth Ratio of one split, per item, TOFU's formulas."""
    higher = None if role == "forget" else True
    details = {"aggregation": "tofu_legacy"}
    out = []
    if role in ("real_authors", "world_facts") and truth_ratio_gap is not None:
        prob = agg.probabilities(items, "forget")  # exp(-L_gt): no perturbed answers to normalise
        prob_details = {**details, "normalised": False, "reason": truth_ratio_gap}
    else:
        prob = agg.probabilities(items, role)
        prob_details = details
    out.append(MetricResult.from_items("prob", prob.tolist(), split=role, higher_is_better=higher,
                                       details=prob_details))
    rouge = [float(x) for x in items.rouge_l_recall]
    if not all(math.isnan(x) for x in rouge):
        out.append(MetricResult.from_items("rouge", rouge, split=role, higher_is_better=higher,
                                           details={**details, "rouge": "rougeL_recall"}))
    if truth_ratio_gap is None:
        ratios = agg.truth_ratios(items)
        stat = agg.truth_ratio_stat(ratios, role)
        out.append(MetricResult.from_items(
            "truth_ratio", stat.tolist(), split=role, higher_is_better=higher,
            details={**details, "raw_truth_ratio": ratios.tolist(),
                     "statistic": "min(R,1/R)" if role == "forget" else "max(0,1-1/R)"}))
    out.append(MetricResult.from_items("gt_loss", [s.gt.mean_nll for s in scores], split=role,
                                       higher_is_better=None if role == "forget" else False))
    return out


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
@SUITES.register("mia", modality=MODALITY)
class MiaSuite(LLMSuite):
    """Membership inference: forget (members) vs. holdout (non-members), AUC per attack.

    Attacks from :mod:`obliviate.llm.evaluation.mia` on the answer given the question: LOSS,
    ZLib, Min-K% and Min-K%++ (k = 0.4), GradNorm, and Reference when ``run`` gets
    ``reference_model`` (the original model, same tokenizer; or ``reference_session``). With
    ``oracle_mia`` (the oracle's MIA :class:`EvalResult`/:class:`SuiteOutput`, or ``{attack:
    AUC}``) it adds PrivLeak (MUSE, Shi et al. 2024) per attack.
    """

    name = "mia"
    options_class = MiaOptions
    options: MiaOptions

    def _split(self, splits: Mapping[str, SplitLike], key: str) -> list[QARecord]:
        name = getattr(self.options, key)
        if name not in splits:
            raise DataError(f"mia: no split {name!r} (mia.{key}); given: {', '.join(splits)}")
        return _head(splits[name], self.options.ds_size)

    def needs(self, splits: Mapping[str, SplitLike], **inputs: Any) -> list[Need]:
        return [Need(self._split(splits, key), token_stats=True)
                for key in ("forget_split", "holdout_split")]

    def run(self, session: EvalSession, splits: Mapping[str, SplitLike],
            reference_model: Any = None, reference_session: EvalSession | None = None,
            oracle_mia: Any = None, **inputs: Any) -> SuiteOutput:
        start = time.perf_counter()
        opts = self.options
        unknown = set(opts.attacks) - {*mia.TOKEN_ATTACKS, "gradnorm"}
        if unknown:
            raise ConfigError(f"mia.attacks: unknown attack(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join([*mia.TOKEN_ATTACKS, 'gradnorm'])}")
        forget = self._split(splits, "forget_split")
        holdout = self._split(splits, "holdout_split")
        result = self._result(session, splits, [opts.forget_split, opts.holdout_split])
        skipped: dict[str, str] = {}
        f_stats = [s.token_stats for s in session.answer_scores(forget, token_stats=True)]
        h_stats = [s.token_stats for s in session.answer_scores(holdout, token_stats=True)]
        attacks = [a for a in opts.attacks if a in mia.TOKEN_ATTACKS and a != "reference"]
        ref_f = ref_h = None
        if reference_session is None and reference_model is not None:
            reference_session = EvalSession(reference_model, session.tokenizer, session.fmt,
                                            session.engine, name="reference")
        if reference_session is not None:
            ref_f = [s.token_stats for s in reference_session.answer_scores(forget, True)]
            ref_h = [s.token_stats for s in reference_session.answer_scores(holdout, True)]
            attacks.append("reference")
        elif "reference" in opts.attacks:
            skipped["reference"] = "no reference model given"
        precomputed = {}
        if "gradnorm" in opts.attacks:
            if any(p.requires_grad for p in session.model.parameters()):
                precomputed["gradnorm"] = (_gradnorm(session, forget), _gradnorm(session, holdout))
            else:
                skipped["gradnorm"] = "no parameter of the model requires grad"
        results = mia.run_mia(attacks, f_stats, h_stats, k=opts.k, forget_reference_stats=ref_f,
                              holdout_reference_stats=ref_h, precomputed=precomputed,
                              split=opts.forget_split)
        for metric in results.values():
            result.add(metric)
        oracle_auc = _oracle_aucs(oracle_mia) if oracle_mia is not None else None
        if oracle_auc is None:
            skipped["privleak"] = "no oracle MIA result given"
        else:
            for attack, metric in results.items():
                if attack not in oracle_auc:
                    skipped[f"privleak_{attack}"] = f"the oracle result has no {attack} AUC"
                    continue
                value = mia.privleak(metric.value, oracle_auc[attack],
                                     convention=opts.privleak_convention)
                result.add(MetricResult(f"privleak_{attack}", value, split=opts.forget_split,
                                        details={"auc": metric.value,
                                                 "oracle_auc": oracle_auc[attack],
                                                 "convention": opts.privleak_convention}))
        result.provenance["skipped"] = skipped
        result.provenance["session"] = session.provenance()
        result.seconds = time.perf_counter() - start
        return SuiteOutput(result)


def _gradnorm(session: EvalSession, records: Sequence[QARecord]) -> np.ndarray:
    """GradNorm scores: the gradient of each answer's mean NLL (after its question)."""
    model = session.model
    items = [session.scorer.encode(r.question, r.answer) for r in records]
    device = next(model.parameters()).device

    def loss_fn(m: Any, item: tuple[tuple[int, ...], tuple[int, ...]]) -> torch.Tensor:
        prompt, answer = item
        ids = torch.tensor([list(prompt + answer)], device=device)
        labels = torch.tensor([[-100] * len(prompt) + list(answer)], device=device)
        return answer_nll(m(input_ids=ids).logits, labels)[0]

    was_training = model.training
    model.eval()
    try:
        return mia.gradnorm_scores(model, items, loss_fn)
    finally:
        model.train(was_training)


def _oracle_aucs(oracle: Any) -> dict[str, float]:
    if isinstance(oracle, SuiteOutput):
        oracle = oracle.result
    if isinstance(oracle, EvalResult):
        return {m.details["attack"]: m.value for m in oracle.metrics.values()
                if m.name.startswith("mia_") and "attack" in m.details}
    if isinstance(oracle, Mapping):
        return {str(k).removeprefix("mia_"): float(v) for k, v in oracle.items()}
    raise ConfigError(f"mia: cannot read oracle AUCs from a {type(oracle).__name__}")


# ------------------------------------------------------------------------------------------------
# Memorisation
# ------------------------------------------------------------------------------------------------
@SUITES.register("memorization", modality=MODALITY)
class MemorizationSuite(LLMSuite):
    """Exact memorisation (Tirumala et al. 2022) and extraction strength (Carlini et al. 2021).

    Both read the teacher-forced argmax of each answer token, from the same scorer pass as the
    other suites (extraction strength needs no generation: greedy decoding from a prefix
    reproduces the rest exactly when every later token is the teacher-forced argmax).
    """

    name = "memorization"
    options_class = MemorizationOptions
    options: MemorizationOptions

    def _present(self, splits: Mapping[str, SplitLike]) -> list[str]:
        return [s for s in self.options.splits if s in splits]

    def needs(self, splits: Mapping[str, SplitLike], **inputs: Any) -> list[Need]:
        return [Need(_head(splits[s], self.options.ds_size), token_stats=True)
                for s in self._present(splits)]

    def run(self, session: EvalSession, splits: Mapping[str, SplitLike],
            **inputs: Any) -> SuiteOutput:
        start = time.perf_counter()
        present = self._present(splits)
        if not present:
            raise DataError(f"memorization: none of the splits {', '.join(self.options.splits)} "
                            f"is given; given: {', '.join(splits) or '(none)'}")
        result = self._result(session, splits, present)
        for name in present:
            stats = [s.token_stats for s in
                     session.answer_scores(_head(splits[name], self.options.ds_size), True)]
            result.add(mem.exact_memorization(stats, split=name))
            result.add(mem.extraction_strength(
                stats, split=name, openunlearning_compat=self.options.openunlearning_compat))
        missing = [s for s in self.options.splits if s not in splits]
        result.provenance["skipped"] = {s: "split not given" for s in missing}
        result.provenance["session"] = session.provenance()
        result.seconds = time.perf_counter() - start
        return SuiteOutput(result)


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
             **inputs: Any) -> dict[str, SuiteOutput]:
    """Run ``suites`` on one model, computing everything they need in one shared pass.

    ``options`` maps a suite name to its options (and may hold ``engine`` for
    :class:`EngineOptions`). ``inputs`` go to every suite's ``run`` (``oracle``,
    ``reference_model``, ``oracle_mia``, ...); a suite ignores those it does not use.
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
    needs = [need for suite in objs for need in suite.needs(splits, **inputs)]
    session.prefetch(needs)
    reference_model = inputs.pop("reference_model", None)
    if reference_model is not None and any(isinstance(s, MiaSuite) for s in objs):
        ref = EvalSession(reference_model, tokenizer, fmt, session.engine, name="reference")
        ref.prefetch([Need(n.records, token_stats=True) for s in objs if isinstance(s, MiaSuite)
                      for n in s.needs(splits)])
        inputs["reference_session"] = ref
    return {suite.name: suite.run(session, splits, **inputs) for suite in objs}


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
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


__all__ = [
    "EngineOptions",
    "EvalSession",
    "LLMSuite",
    "MemorizationOptions",
    "MemorizationSuite",
    "MiaOptions",
    "MiaSuite",
    "Need",
    "SuiteOutput",
    "TofuOptions",
    "TofuSuite",
    "evaluate",
    "get_suite",
    "task_splits",
]
