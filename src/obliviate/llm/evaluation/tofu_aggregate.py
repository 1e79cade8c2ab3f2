"""TOFU's legacy aggregation, reproduced exactly from per-question values.

TOFU (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs") publishes its numbers
through ``aggregate_eval_stat.py`` (functions ``get_model_utility`` and ``get_forget_quality``)
applied to per-question evaluation logs. This module recomputes the same twelve components,
Model Utility and Forget Quality from per-question values; the formulas are in the field guide,
``GUIDE.md`` §3 ("TOFU metrics, exactly"):

- losses are length-normalised (mean NLL over answer tokens) and ``p = exp(-loss)``;
- Prob.: forget and retain ``mean_i exp(-L_gt,i)``; real authors and world facts
  ``mean_i p_true / (p_true + sum_j p_pert,j)``;
- ROUGE: mean ROUGE-L recall of the greedy generation;
- truth ratio per question ``R_i = exp(mean_j L_pert,ij - L_base,i)`` (the arithmetic mean of the
  *losses*, i.e. the geometric mean of the perturbed probabilities), with the base answer the
  paraphrased answer on forget/retain and the original answer elsewhere; forget aggregates
  ``mean_i min(R_i, 1/R_i)``, the other splits ``mean_i max(0, 1 - 1/R_i)``;
- Model Utility: harmonic mean of the nine retain / real-authors / world-facts numbers;
- Forget Quality: p-value of ``scipy.stats.ks_2samp`` between the raw forget-split ``R_i`` of
  the evaluated model and of the oracle (the model trained on the retain set only).

Two readers turn evaluation logs into :class:`TofuSplitItems`: TOFU's own logs (one combined
JSON or TOFU's output folder) and OpenUnlearning's ``TOFU_EVAL.json``; see
:func:`load_eval_log`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import hmean, ks_2samp

from obliviate.core.errors import ConfigError, DataError
from obliviate.core.io import read_json
from obliviate.core.result import MetricResult

SPLITS: tuple[str, ...] = ("forget", "retain", "real_authors", "world_facts")
"""The four TOFU evaluation splits, in report order."""

UTILITY_SPLITS: tuple[str, ...] = ("retain", "real_authors", "world_facts")
"""The splits whose nine numbers enter Model Utility."""

METRICS: tuple[str, ...] = ("prob", "rouge", "truth_ratio")

KS_METHODS: tuple[str, ...] = ("auto", "exact", "asymp")

LEGACY_FILES: dict[str, str] = {
    "forget": "eval_log_forget.json",
    "retain": "eval_log.json",
    "real_authors": "eval_real_author_wo_options.json",
    "world_facts": "eval_real_world_wo_options.json",
}
"""TOFU's log file per split (``evaluate_util.py`` writes one per evaluation task)."""

LEGACY_COMBINED_FILE = "eval_log_aggregated.json"
"""Name of TOFU's combined log (the four files above merged into one JSON object)."""

OPEN_UNLEARNING_FILE = "TOFU_EVAL.json"

OPEN_UNLEARNING_KEYS: dict[str, dict[str, str]] = {
    "forget": {
        "gt": "forget_Q_A_Prob",
        "base": "forget_Q_A_PARA_Prob",
        "perturbed": "forget_Q_A_PERT_Prob",
        "rouge": "forget_Q_A_ROUGE",
    },
    "retain": {
        "gt": "retain_Q_A_Prob",
        "base": "retain_Q_A_PARA_Prob",
        "perturbed": "retain_Q_A_PERT_Prob",
        "rouge": "retain_Q_A_ROUGE",
    },
    "real_authors": {
        "gt": "ra_Q_A_Prob",
        "base": "ra_Q_A_Prob",
        "perturbed": "ra_Q_A_PERT_Prob",
        "rouge": "ra_Q_A_ROUGE",
    },
    "world_facts": {
        "gt": "wf_Q_A_Prob",
        "base": "wf_Q_A_Prob",
        "perturbed": "wf_Q_A_PERT_Prob",
        "rouge": "wf_Q_A_ROUGE",
    },
}
"""OpenUnlearning metric keys (in ``TOFU_EVAL.json``) that hold each per-question quantity."""

# --------------------------------------------------------------------------------------------
# Per-question inputs
# --------------------------------------------------------------------------------------------


@dataclass
class TofuSplitItems:
    """Per-question values of one TOFU split, aligned by position.

    Attributes:
        gt_loss: TOFU's ``avg_gt_loss``: mean NLL over the tokens of the original answer.
        paraphrased_loss: TOFU's ``avg_paraphrased_loss``: length-normalised loss of the base
            answer of the truth ratio (the paraphrased answer on forget/retain, the original
            answer on real authors / world facts).
        perturbed_loss: TOFU's ``average_perturb_loss``: per question, the length-normalised
            loss of each perturbed (wrong) answer.
        rouge_l_recall: ROUGE-L recall of the greedy generation against the answer.
        generated_text: optional greedy generations.
        index: question ids as in the source log; defaults to ``"0" .. "n-1"``.
    """

    gt_loss: Sequence[float]
    paraphrased_loss: Sequence[float]
    perturbed_loss: Sequence[Sequence[float]]
    rouge_l_recall: Sequence[float]
    generated_text: Sequence[str] | None = None
    index: Sequence[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.gt_loss)
        lengths = {
            "paraphrased_loss": len(self.paraphrased_loss),
            "perturbed_loss": len(self.perturbed_loss),
            "rouge_l_recall": len(self.rouge_l_recall),
        }
        if self.generated_text is not None:
            lengths["generated_text"] = len(self.generated_text)
        if self.index is not None:
            lengths["index"] = len(self.index)
        for name, length in lengths.items():
            if length != n:
                raise DataError(f"TofuSplitItems: {name} has {length} items, gt_loss has {n}")
        for i, row in enumerate(self.perturbed_loss):
            if len(row) == 0:
                raise DataError(f"TofuSplitItems: perturbed_loss[{i}] is empty")
        if self.index is None:
            self.index = [str(i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.gt_loss)

    def head(self, n: int | None) -> TofuSplitItems:
        """The first ``n`` questions (all of them when ``n`` is None or exceeds the size)."""
        if n is None or n >= len(self):
            return self
        return TofuSplitItems(
            gt_loss=list(self.gt_loss[:n]),
            paraphrased_loss=list(self.paraphrased_loss[:n]),
            perturbed_loss=[list(row) for row in self.perturbed_loss[:n]],
            rouge_l_recall=list(self.rouge_l_recall[:n]),
            generated_text=None if self.generated_text is None else list(self.generated_text[:n]),
            index=list(self.index[:n]) if self.index is not None else None,
        )


# --------------------------------------------------------------------------------------------
# Per-question metrics and aggregates (GUIDE.md §3)
# --------------------------------------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"unknown TOFU split {split!r}; known: {', '.join(SPLITS)}")


def probabilities(items: TofuSplitItems, split: str) -> np.ndarray:
    """Per-question Prob. as TOFU's ``get_model_utility`` computes it.

    Forget and retain: ``exp(-L_gt)``. Real authors and world facts: the true answer's
    probability normalised over the true and perturbed answers,
    ``p_true / (p_true + sum_j p_pert,j)`` with ``p = exp(-length-normalised loss)``.
    """
    _check_split(split)
    true_prob = np.exp(-np.asarray(items.gt_loss, dtype=np.float64))
    if split in ("forget", "retain"):
        return true_prob
    totals = np.array(
        [
            np.concatenate(([pt], np.exp(-np.asarray(row, dtype=np.float64)))).sum()
            for pt, row in zip(true_prob, items.perturbed_loss, strict=True)
        ],
        dtype=np.float64,
    )
    return true_prob / totals


def truth_ratios(items: TofuSplitItems) -> np.ndarray:
    """Per-question truth ratio ``R_i = exp(mean_j L_pert,ij - L_base,i)``.

    This is TOFU's ``curr_stat_1`` (``aggregate_eval_stat.py``): the base answer's probability
    over the *geometric* mean of the perturbed answers' probabilities, all length-normalised.
    ``R_i > 1`` means the model prefers the base (true or paraphrased) answer to the wrong ones.
    OpenUnlearning's per-item ``truth_ratio`` score is the reciprocal, ``1 / R_i``.
    """
    mean_perturbed = np.array(
        [np.asarray(row, dtype=np.float64).mean() for row in items.perturbed_loss],
        dtype=np.float64,
    )
    return np.exp(mean_perturbed - np.asarray(items.paraphrased_loss, dtype=np.float64))


def truth_ratio_stat(ratios: Sequence[float] | np.ndarray, split: str) -> np.ndarray:
    """Per-question truth-ratio statistic whose mean is TOFU's reported Truth Ratio.

    Forget: ``min(R, 1/R)`` (1 when the model cannot tell true from wrong answers, as an
    oracle that never saw them). Other splits: ``max(0, 1 - 1/R)`` (higher when the model
    prefers the true answer).
    """
    _check_split(split)
    r = np.asarray(ratios, dtype=np.float64)
    if split == "forget":
        return np.minimum(r, 1 / r)
    return np.maximum(0, 1 - 1 / r)


def model_utility(values: Iterable[float]) -> float:
    """Harmonic mean, as ``scipy.stats.hmean`` (a zero component gives 0, NaN propagates)."""
    vals = np.asarray(list(values), dtype=np.float64)
    if vals.size == 0:
        raise DataError("model utility needs at least one component")
    with np.errstate(divide="ignore"):
        return float(hmean(vals))


def forget_quality(
    ratios: Sequence[float] | np.ndarray,
    oracle_ratios: Sequence[float] | np.ndarray,
    ks_method: str = "auto",
) -> tuple[float, float]:
    """Forget Quality: ``(p-value, KS statistic)`` of ``scipy.stats.ks_2samp``.

    The inputs are the raw forget-split truth ratios ``R_i`` of the evaluated model and of the
    oracle (TOFU's ``get_forget_quality``), not the ``min(R, 1/R)`` statistic. The test is
    invariant to a monotone transform of both samples, so ``1/R`` (OpenUnlearning's score)
    gives the same value up to its epsilon.
    """
    if ks_method not in KS_METHODS:
        raise ConfigError(f"ks_method must be one of {', '.join(KS_METHODS)}; got {ks_method!r}")
    a = np.asarray(ratios, dtype=np.float64)
    b = np.asarray(oracle_ratios, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise DataError("forget quality needs at least one forget question in both logs")
    res = ks_2samp(a, b, method=ks_method)
    return float(res.pvalue), float(res.statistic)


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


@dataclass
class TofuSplitScore:
    """Per-question values and their means on one split."""

    split: str
    index: list[str]
    prob: list[float]
    rouge: list[float]
    truth_ratio: list[float]
    """Raw ``R_i``."""
    truth_ratio_stat: list[float]
    """``min(R,1/R)`` on forget, ``max(0,1-1/R)`` elsewhere; its mean is the Truth Ratio."""
    means: dict[str, float] = field(default_factory=dict)

    @classmethod
    def compute(cls, items: TofuSplitItems, split: str) -> TofuSplitScore:
        prob = probabilities(items, split)
        rouge = np.asarray(items.rouge_l_recall, dtype=np.float64)
        ratios = truth_ratios(items)
        stat = truth_ratio_stat(ratios, split)
        means = {
            "prob": float(np.mean(prob)),
            "rouge": float(np.mean(rouge)),
            "truth_ratio": float(np.mean(stat)),
        }
        return cls(
            split=split,
            index=[str(i) for i in (items.index or [])],
            prob=prob.tolist(),
            rouge=rouge.tolist(),
            truth_ratio=ratios.tolist(),
            truth_ratio_stat=stat.tolist(),
            means=means,
        )

    def __len__(self) -> int:
        return len(self.prob)


@dataclass
class TofuScore:
    """TOFU's twelve components, Model Utility and Forget Quality, with per-question values."""

    splits: dict[str, TofuSplitScore]
    model_utility: float
    forget_quality: float | None
    ks_statistic: float | None
    oracle_forget_truth_ratio: list[float] | None
    ds_size: int | None
    ks_method: str

    def components(self) -> dict[str, float]:
        """The twelve ``{split}_{metric}`` means, splits in :data:`SPLITS` order."""
        return {
            f"{split}_{metric}": self.splits[split].means[metric]
            for split in SPLITS
            for metric in METRICS
        }

    def options(self) -> dict[str, Any]:
        return {
            "aggregation": "tofu_legacy",
            "ds_size": self.ds_size,
            "ks_method": self.ks_method,
            "n": {split: len(self.splits[split]) for split in SPLITS},
            "oracle_n_forget": (
                None
                if self.oracle_forget_truth_ratio is None
                else len(self.oracle_forget_truth_ratio)
            ),
        }

    def to_flat_dict(self) -> dict[str, Any]:
        """``model_utility``, ``forget_quality`` (None without an oracle), the twelve
        components and an ``options`` sub-dict (ds_size, ks_method, n per split)."""
        return {
            "model_utility": self.model_utility,
            "forget_quality": self.forget_quality,
            **self.components(),
            "options": self.options(),
        }

    def per_item(self) -> dict[str, dict[str, list[Any]]]:
        """Per split: question ``index``, ``prob``, ``rouge``, raw ``truth_ratio`` (R_i) and
        ``truth_ratio_stat`` as lists."""
        return {
            split: {
                "index": list(s.index),
                "prob": list(s.prob),
                "rouge": list(s.rouge),
                "truth_ratio": list(s.truth_ratio),
                "truth_ratio_stat": list(s.truth_ratio_stat),
            }
            for split, s in self.splits.items()
        }

    def to_dict(self) -> dict[str, Any]:
        """Aggregates, KS statistic, options and every per-question value (JSON-ready)."""
        return {
            **self.to_flat_dict(),
            "ks_statistic": self.ks_statistic,
            "per_item": self.per_item(),
            "oracle_forget_truth_ratio": self.oracle_forget_truth_ratio,
        }

    def metric_results(self) -> list[MetricResult]:
        """The twelve components as :class:`MetricResult` (per-item values kept), then Model
        Utility and, with an oracle, Forget Quality."""
        per_item_key = {"prob": "prob", "rouge": "rouge", "truth_ratio": "truth_ratio_stat"}
        out = [
            MetricResult(
                name=metric,
                value=s.means[metric],
                per_item=list(getattr(s, per_item_key[metric])),
                split=split,
                higher_is_better=None if split == "forget" else True,
                details={"aggregation": "tofu_legacy"},
            )
            for split, s in ((sp, self.splits[sp]) for sp in SPLITS)
            for metric in METRICS
        ]
        out.append(MetricResult("model_utility", self.model_utility, higher_is_better=True))
        if self.forget_quality is not None:
            out.append(
                MetricResult(
                    "forget_quality",
                    self.forget_quality,
                    higher_is_better=True,
                    details={"ks_statistic": self.ks_statistic, "ks_method": self.ks_method},
                )
            )
        return out

    def format_table(self) -> str:
        """A plain-text table of the components, Model Utility and Forget Quality."""
        ds = "all" if self.ds_size is None else str(self.ds_size)
        lines = [
            f"TOFU (legacy aggregation)  ds_size={ds}  ks_method={self.ks_method}",
            f"{'split':<14}{'n':>5}{'Prob.':>10}{'ROUGE':>10}{'Truth Ratio':>13}",
        ]
        for split in SPLITS:
            s = self.splits[split]
            lines.append(
                f"{split:<14}{len(s):>5}{s.means['prob']:>10.4f}{s.means['rouge']:>10.4f}"
                f"{s.means['truth_ratio']:>13.4f}"
            )
        lines.append(f"{'Model Utility':<19}{self.model_utility:.4f}")
        if self.forget_quality is None:
            lines.append(f"{'Forget Quality':<19}n/a (no oracle log)")
        else:
            n_oracle = len(self.oracle_forget_truth_ratio or [])
            lines.append(
                f"{'Forget Quality':<19}{self.forget_quality:.4g}"
                f"  (KS statistic {self.ks_statistic:.4f}; oracle n={n_oracle})"
            )
        return "\n".join(lines)


def score_tofu(
    log: Mapping[str, TofuSplitItems],
    oracle: Mapping[str, TofuSplitItems] | None,
    ds_size: int | None = None,
    ks_method: str = "auto",
) -> TofuScore:
    """Score an evaluation log with TOFU's legacy aggregation (GUIDE.md §3).

    Args:
        log: per-split items of the evaluated model; needs all four :data:`SPLITS`.
        oracle: items of the oracle (retain-only) model; only its ``forget`` split is used.
            None gives ``forget_quality = None``.
        ds_size: keep the first ``ds_size`` questions of every split (the oracle's too), as
            TOFU's ``ds_size`` option; the published logs hold 300 on forget/retain. None keeps
            all questions (OpenUnlearning's choice).
        ks_method: ``method`` of ``scipy.stats.ks_2samp`` (``auto``, ``exact`` or ``asymp``).
    """
    if ds_size is not None and (isinstance(ds_size, bool) or not isinstance(ds_size, int)):
        raise ConfigError(f"ds_size must be a positive integer or None; got {ds_size!r}")
    if ds_size is not None and ds_size < 1:
        raise ConfigError(f"ds_size must be a positive integer or None; got {ds_size}")
    if ks_method not in KS_METHODS:
        raise ConfigError(f"ks_method must be one of {', '.join(KS_METHODS)}; got {ks_method!r}")
    missing = [s for s in SPLITS if s not in log]
    if missing:
        raise DataError(f"TOFU log lacks split(s): {', '.join(missing)}")
    splits = {split: TofuSplitScore.compute(log[split].head(ds_size), split) for split in SPLITS}
    utility = model_utility(splits[s].means[m] for s in UTILITY_SPLITS for m in METRICS)
    fq = ks = oracle_ratios = None
    if oracle is not None:
        if "forget" not in oracle:
            raise DataError("oracle TOFU log lacks the forget split")
        oracle_ratios = truth_ratios(oracle["forget"].head(ds_size))
        fq, ks = forget_quality(splits["forget"].truth_ratio, oracle_ratios, ks_method)
        oracle_ratios = oracle_ratios.tolist()
    return TofuScore(
        splits=splits,
        model_utility=utility,
        forget_quality=fq,
        ks_statistic=ks,
        oracle_forget_truth_ratio=oracle_ratios,
        ds_size=ds_size,
        ks_method=ks_method,
    )


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _ordered_keys(keys: Iterable[str]) -> list[str]:
    """Question ids in numeric order when they are all integers, else in file order."""
    keys = [str(k) for k in keys]
    if all(k.lstrip("-").isdigit() for k in keys):
        return sorted(keys, key=int)
    return keys


def _mapping(obj: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _aligned(values: Mapping[str, Any], index: list[str], where: str) -> list[Any]:
    if set(map(str, values)) != set(index):
        extra = sorted(set(map(str, values)) - set(index))
        lacking = sorted(set(index) - set(map(str, values)))
        detail = f"lacks question {lacking[0]!r}" if lacking else f"has extra question {extra[0]!r}"
        raise DataError(f"{where}: {detail} (question ids differ from the other fields)")
    by_key = {str(k): v for k, v in values.items()}
    return [by_key[k] for k in index]


def _float(x: Any, where: str) -> float:
    if not _is_number(x):
        raise DataError(f"{where}: expected a number, got {x!r}")
    return float(x)


def _float_row(x: Any, where: str) -> list[float]:
    if _is_number(x):
        return [float(x)]
    if not isinstance(x, list) or not x:
        raise DataError(f"{where}: expected a non-empty list of numbers, got {x!r}")
    return [_float(v, where) for v in x]


def _legacy_split(task: Mapping[str, Any], where: str) -> TofuSplitItems:
    def field_of(key: str) -> Mapping[str, Any]:
        if key not in task:
            raise DataError(f"{where}: missing key {key!r}")
        return _mapping(task[key], f"{where}: {key}")

    gt = field_of("avg_gt_loss")
    index = _ordered_keys(gt)
    if not index:
        raise DataError(f"{where}: 'avg_gt_loss' holds no questions")

    def col(key: str) -> list[Any]:
        return _aligned(field_of(key), index, f"{where}: {key}")

    gt_loss = [
        _float(v, f"{where}: avg_gt_loss[{k!r}]")
        for k, v in zip(index, col("avg_gt_loss"), strict=True)
    ]
    para = [
        _float(v, f"{where}: avg_paraphrased_loss[{k!r}]")
        for k, v in zip(index, col("avg_paraphrased_loss"), strict=True)
    ]
    pert = [
        _float_row(v, f"{where}: average_perturb_loss[{k!r}]")
        for k, v in zip(index, col("average_perturb_loss"), strict=True)
    ]
    rouge = [
        _float(v, f"{where}: rougeL_recall[{k!r}]")
        for k, v in zip(index, col("rougeL_recall"), strict=True)
    ]
    texts = None
    if "generated_text" in task:
        # TOFU stores (input, generation, ground truth) per question; keep the generation.
        texts = [
            v[1] if isinstance(v, list) and len(v) > 1 else str(v) for v in col("generated_text")
        ]
    return TofuSplitItems(gt_loss, para, pert, rouge, texts, index)


def parse_legacy_log(
    data: Mapping[str, Any], source: str = "<log>", splits: Iterable[str] = SPLITS
) -> dict[str, TofuSplitItems]:
    """Read TOFU's combined log: ``{file name: {field: {question id: value}}}``.

    Per split (file, see :data:`LEGACY_FILES`) the fields used are ``avg_gt_loss``,
    ``avg_paraphrased_loss``, ``average_perturb_loss``, ``rougeL_recall`` and, if present,
    ``generated_text``. Fields are aligned by question id, ordered numerically.
    """
    data = _mapping(data, source)
    out = {}
    for split in splits:
        _check_split(split)
        fname = LEGACY_FILES[split]
        if fname not in data:
            raise DataError(f"{source}: missing key {fname!r} (TOFU {split} log)")
        where = f"{source}: {fname}"
        out[split] = _legacy_split(_mapping(data[fname], where), where)
    return out


def _ou_metric(data: Mapping[str, Any], key: str, source: str) -> tuple[Mapping[str, Any], str]:
    if key not in data:
        raise DataError(f"{source}: missing key {key!r}")
    metric = _mapping(data[key], f"{source}: {key}")
    if "value_by_index" not in metric:
        raise DataError(f"{source}: {key}: missing key 'value_by_index'")
    return _mapping(metric["value_by_index"], f"{source}: {key}.value_by_index"), (
        f"{source}: {key}.value_by_index"
    )


def _ou_column(
    data: Mapping[str, Any], key: str, index: list[str], source: str
) -> tuple[list[Any], str]:
    values, where = _ou_metric(data, key, source)
    return _aligned(values, index, where), where


def _ou_losses(entry: Any, where: str) -> Any:
    """``avg_loss`` of an OpenUnlearning probability entry; else ``-log(prob)``."""
    entry = _mapping(entry, where)
    if "avg_loss" in entry:
        return entry["avg_loss"]
    if "prob" in entry:
        prob = entry["prob"]
        try:
            if isinstance(prob, list):
                return [-math.log(_float(p, f"{where}.prob")) for p in prob]
            return -math.log(_float(prob, f"{where}.prob"))
        except ValueError:
            raise DataError(
                f"{where}: prob must be positive to derive a loss, got {prob!r}"
            ) from None
    raise DataError(f"{where}: missing key 'avg_loss'")


def parse_open_unlearning_log(
    data: Mapping[str, Any], source: str = "<log>", splits: Iterable[str] = SPLITS
) -> dict[str, TofuSplitItems]:
    """Read OpenUnlearning's ``TOFU_EVAL.json`` (``{metric: {"agg_value", "value_by_index"}}``).

    Keys per split are in :data:`OPEN_UNLEARNING_KEYS`. OpenUnlearning's ``probability``
    metric stores ``{"prob": exp(-avg_loss), "avg_loss": ...}`` per question (lists over the
    perturbed answers for ``*_PERT_Prob``) and ``rouge`` stores ``rougeL_recall`` and
    ``generation``. Derivations:

    - ``gt_loss`` = ``avg_loss`` of ``{split}_Q_A_Prob``;
    - ``paraphrased_loss`` = ``avg_loss`` of ``{split}_Q_A_PARA_Prob`` on forget/retain and of
      ``ra_Q_A_Prob`` / ``wf_Q_A_Prob`` on real authors / world facts (the original answer is
      the base there, as in TOFU);
    - ``perturbed_loss`` = ``avg_loss`` lists of ``*_Q_A_PERT_Prob``;
    - where an entry has ``prob`` but no ``avg_loss``, the loss is ``-log(prob)`` (exact up to
      the float32 rounding of the stored probability).

    The aggregates OpenUnlearning stores (``*_Truth_Ratio``, ``*_Prob_normalised``,
    ``model_utility``, ``forget_quality``) are not read: they cannot give back the losses.
    A missing metric key raises :class:`DataError` naming it.
    """
    data = _mapping(data, source)
    out = {}
    for split in splits:
        _check_split(split)
        keys = OPEN_UNLEARNING_KEYS[split]
        gt_map, gt_where = _ou_metric(data, keys["gt"], source)
        index = _ordered_keys(gt_map)
        if not index:
            raise DataError(f"{gt_where}: holds no questions")

        gt_entries = _aligned(gt_map, index, gt_where)
        base_entries, base_where = _ou_column(data, keys["base"], index, source)
        pert_entries, pert_where = _ou_column(data, keys["perturbed"], index, source)
        rouge_entries, rouge_where = _ou_column(data, keys["rouge"], index, source)
        gt_loss = [
            _float(_ou_losses(e, f"{gt_where}[{k!r}]"), f"{gt_where}[{k!r}].avg_loss")
            for k, e in zip(index, gt_entries, strict=True)
        ]
        para = [
            _float(_ou_losses(e, f"{base_where}[{k!r}]"), f"{base_where}[{k!r}].avg_loss")
            for k, e in zip(index, base_entries, strict=True)
        ]
        pert = [
            _float_row(_ou_losses(e, f"{pert_where}[{k!r}]"), f"{pert_where}[{k!r}].avg_loss")
            for k, e in zip(index, pert_entries, strict=True)
        ]
        rouge, texts = [], []
        for k, e in zip(index, rouge_entries, strict=True):
            e = _mapping(e, f"{rouge_where}[{k!r}]")
            if "rougeL_recall" not in e:
                raise DataError(f"{rouge_where}[{k!r}]: missing key 'rougeL_recall'")
            rouge.append(_float(e["rougeL_recall"], f"{rouge_where}[{k!r}].rougeL_recall"))
            texts.append(e.get("generation"))
        generated = texts if all(isinstance(t, str) for t in texts) else None
        out[split] = TofuSplitItems(gt_loss, para, pert, rouge, generated, index)
    return out


def detect_format(data: Any) -> str:
    """``"tofu_legacy"`` or ``"open_unlearning"`` from a log's top-level keys, else ``""``."""
    if not isinstance(data, Mapping):
        return ""
    if any(name in data for name in LEGACY_FILES.values()):
        return "tofu_legacy"
    ou_keys = {k for keys in OPEN_UNLEARNING_KEYS.values() for k in keys.values()}
    if any(k in data for k in ou_keys) or any(
        isinstance(v, Mapping) and "value_by_index" in v for v in data.values()
    ):
        return "open_unlearning"
    return ""


def load_eval_log(path: str | Path, splits: Iterable[str] = SPLITS) -> dict[str, TofuSplitItems]:
    """Load per-question TOFU values from an evaluation log, detecting its format.

    ``path`` is one of:

    - a JSON file of TOFU's combined log (``{"eval_log.json": {...}, "eval_log_forget.json":
      {...}, ...}``, as in TOFU's ``eval_log_aggregated.json`` and the published logs);
    - a folder holding TOFU's per-split files (:data:`LEGACY_FILES`), or
      ``eval_log_aggregated.json``, or OpenUnlearning's ``TOFU_EVAL.json``;
    - OpenUnlearning's ``TOFU_EVAL.json`` itself.

    ``splits`` lists the splits required (an oracle log needs only ``("forget",)``). Malformed
    input raises :class:`DataError` with a one-line message naming the file and the key.
    """
    splits = tuple(splits)
    for split in splits:
        _check_split(split)
    path = Path(path)
    if path.is_dir():
        files = {split: path / LEGACY_FILES[split] for split in splits}
        if all(f.is_file() for f in files.values()):
            return {
                split: _legacy_split(_mapping(read_json(f), str(f)), str(f))
                for split, f in files.items()
            }
        for name in (LEGACY_COMBINED_FILE, OPEN_UNLEARNING_FILE):
            if (path / name).is_file():
                return load_eval_log(path / name, splits)
        lacking = next(f for f in files.values() if not f.is_file())
        raise DataError(
            f"{path}: no TOFU log found (lacks {lacking.name}, {LEGACY_COMBINED_FILE} "
            f"and {OPEN_UNLEARNING_FILE})"
        )
    data = read_json(path)
    fmt = detect_format(data)
    if fmt == "tofu_legacy":
        return parse_legacy_log(data, str(path), splits)
    if fmt == "open_unlearning":
        return parse_open_unlearning_log(data, str(path), splits)
    raise DataError(
        f"{path}: not a TOFU evaluation log (no key {LEGACY_FILES['forget']!r} nor "
        f"OpenUnlearning's {OPEN_UNLEARNING_KEYS['forget']['gt']!r})"
    )


__all__ = [
    "KS_METHODS",
    "LEGACY_FILES",
    "METRICS",
    "OPEN_UNLEARNING_KEYS",
    "SPLITS",
    "UTILITY_SPLITS",
    "TofuScore",
    "TofuSplitItems",
    "TofuSplitScore",
    "detect_format",
    "forget_quality",
    "load_eval_log",
    "model_utility",
    "parse_legacy_log",
    "parse_open_unlearning_log",
    "probabilities",
    "score_tofu",
    "truth_ratio_stat",
    "truth_ratios",
]
