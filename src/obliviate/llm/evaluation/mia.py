"""Membership-inference attacks (MIA) on answers, their AUC, and MUSE's PrivLeak.

Every attack turns the per-token quantities of one scored answer (:class:`TokenStats`) into one
number, oriented so that **higher = more likely a member** (training data). The AUC of an attack
is its power to tell the forget set (members of the original training data, label 1) from a
holdout set (never trained on, label 0); 0.5 means the two are indistinguishable.

Attacks (k = 0.4 by default, as in MUSE's ``Min-40%`` and OpenUnlearning's TOFU configs):

==================  =====================================================================
``loss``            mean log-prob of the answer tokens, i.e. -NLL (Yeom et al. 2018)
``zlib``            -NLL / zlib-compressed length of the answer text in bytes
                    (Carlini et al. 2021)
``min_k``           mean of the lowest ``max(1, floor(k*T))`` token log-probs
                    (Shi et al. 2024)
``min_k_plus_plus`` the same over ``(log p(y_t) - mu_t) / sigma_t`` (Zhang et al. 2024)
``reference``       reference NLL - target NLL (Carlini et al. 2022; "Ref" in MUSE)
``gradnorm``        minus the gradient norm of the answer NLL (see :func:`gradnorm_scores`)
==================  =====================================================================

OpenUnlearning (``src/evals/metrics/mia/``) uses the opposite orientation (scores where higher
means *non*-member: loss, loss/zlib, -mean of min-k, target minus reference loss, +gradnorm) and
labels forget 0 / holdout 1, so its AUC equals the AUC computed here; only the sign of each
per-item score differs.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from obliviate.core.errors import ConfigError, DataError
from obliviate.core.precision import measuring
from obliviate.core.result import MetricResult

DEFAULT_K = 0.4
"""Fraction of tokens kept by Min-K% and Min-K%++ (MUSE ``Min-40%``; OpenUnlearning ``k: 0.4``)."""

SIGMA_FLOOR = 1e-3
"""Smallest standard deviation used by Min-K%++ (OpenUnlearning clamps the variance at 1e-6)."""

TOKEN_ATTACKS: tuple[str, ...] = ("loss", "zlib", "min_k", "min_k_plus_plus", "reference")
"""Attacks computed from :class:`TokenStats` alone (``reference`` also needs reference stats)."""


# --------------------------------------------------------------------------------------------
# Per-token statistics of one scored answer
# --------------------------------------------------------------------------------------------


def _float_array(name: str, value: Any, length: int | None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1:
        raise DataError(f"TokenStats.{name} must be one-dimensional, got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise DataError(f"TokenStats.{name} has {arr.shape[0]} entries, logprobs has {length}")
    return arr


@dataclass(frozen=True, eq=False)
class TokenStats:
    """Per-token quantities of one answer under one model, position t predicting label y_t.

    - ``logprobs``: log p(y_t | y_<t, x), shape [T].
    - ``mu``: E_{z~p}[log p(z)] under the model's next-token distribution p at position t
      (minus its entropy), shape [T]; needed by Min-K%++ only.
    - ``sigma``: standard deviation of log p(z), z ~ p, shape [T]; Min-K%++ only.
    - ``is_argmax``: whether y_t is the argmax of p, shape [T]; memorisation metrics only.
    - ``text``: the scored answer text; ZLib only.

    Arrays are stored as float64 (bool for ``is_argmax``) numpy arrays.
    """

    logprobs: np.ndarray
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    is_argmax: np.ndarray | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        lp = _float_array("logprobs", self.logprobs, None)
        n = lp.shape[0]
        object.__setattr__(self, "logprobs", lp)
        if self.mu is not None:
            object.__setattr__(self, "mu", _float_array("mu", self.mu, n))
        if self.sigma is not None:
            object.__setattr__(self, "sigma", _float_array("sigma", self.sigma, n))
        if self.is_argmax is not None:
            am = np.asarray(self.is_argmax, dtype=bool)
            if am.shape != (n,):
                raise DataError(
                    f"TokenStats.is_argmax has shape {am.shape}, logprobs has {n} entries"
                )
            object.__setattr__(self, "is_argmax", am)

    def __len__(self) -> int:
        return int(self.logprobs.shape[0])

    @property
    def nll(self) -> float:
        """Mean negative log-likelihood over the answer tokens (NaN for an empty answer)."""
        return float(-self.logprobs.mean()) if len(self) else math.nan


def token_stats_from_logits(
    logits: torch.Tensor,
    labels: torch.Tensor,
    text: str | None = None,
    *,
    chunk_size: int = 256,
) -> TokenStats:
    """Exact :class:`TokenStats` from aligned logits [T, V] and labels [T] (logits[t] predicts
    labels[t]).

    With p = softmax(logits[t]): ``mu_t = sum_z p(z) log p(z)`` and
    ``sigma_t = sqrt(sum_z p(z) (log p(z) - mu_t)^2)``, which equals
    ``sqrt(sum_z p(z) log p(z)^2 - mu_t^2)`` without its cancellation error. Terms with
    p(z) = 0 (e.g. logits of -inf) contribute 0. Computed in at least float32, vectorised over
    the vocabulary and over ``chunk_size`` positions at a time (bounding the [chunk, V]
    temporaries on long texts); no gradient is kept.
    """
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise DataError(
            f"expected logits [T, V] and labels [T], got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be at least 1, got {chunk_size}")
    vocab = logits.shape[1]
    labels = labels.to(device=logits.device, dtype=torch.long)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= vocab):
        raise DataError(f"labels must lie in [0, {vocab}); slice off ignored positions first")
    parts: list[tuple[torch.Tensor, ...]] = []
    with torch.no_grad():
        for start in range(0, max(logits.shape[0], 1), chunk_size):
            work = logits[start : start + chunk_size].detach()
            lab = labels[start : start + chunk_size]
            if work.dtype not in (torch.float32, torch.float64):
                work = work.float()
            logp = torch.log_softmax(work, dim=-1)
            p = logp.exp()
            if bool(torch.isfinite(logp).all()):
                mu = (p * logp).sum(dim=-1)
                dev = logp - mu.unsqueeze(-1)
            else:  # masked vocabulary: 0 * -inf would give NaN
                alive = p > 0
                zero = torch.zeros((), dtype=p.dtype, device=p.device)
                mu = torch.where(alive, p * logp, zero).sum(dim=-1)
                dev = torch.where(alive, logp - mu.unsqueeze(-1), zero)
            sigma = (p * dev * dev).sum(dim=-1).clamp_min(0.0).sqrt()
            token_lp = logp.gather(-1, lab.unsqueeze(-1)).squeeze(-1)
            is_argmax = work.argmax(dim=-1) == lab
            parts.append((token_lp, mu, sigma, is_argmax))

    def _cat(i: int) -> np.ndarray:
        return torch.cat([part[i] for part in parts]).cpu().numpy()

    return TokenStats(
        logprobs=_cat(0),
        mu=_cat(1),
        sigma=_cat(2),
        is_argmax=_cat(3),
        text=text,
    )


# --------------------------------------------------------------------------------------------
# Per-item attack scores (higher = more likely a member)
# --------------------------------------------------------------------------------------------


def _check_k(k: float) -> None:
    if not 0.0 < k <= 1.0:
        raise ConfigError(f"k must be in (0, 1], got {k}")


def _lowest_k_mean(values: np.ndarray, k: float) -> float:
    """Mean of the ``max(1, floor(k * T))`` smallest values (``int(T * k)`` as in Shi et al.'s
    and OpenUnlearning's code); NaN when empty."""
    _check_k(k)
    n = values.shape[0]
    if n == 0:
        return math.nan
    keep = max(1, int(n * k))
    return float(np.sort(values)[:keep].mean())


def loss_score(stats: TokenStats) -> float:
    """LOSS attack (Yeom et al. 2018, "Privacy Risk in Machine Learning"): mean token log-prob,
    i.e. -NLL."""
    return -stats.nll


def zlib_length(text: str) -> int:
    """Length in bytes of ``zlib.compress`` (default level) of the UTF-8 text."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_score(stats: TokenStats) -> float:
    """ZLib attack (Carlini et al. 2021, "Extracting Training Data from Large Language Models"):
    ``-NLL / zlib_length(text)`` with NLL the *mean* token NLL (log-perplexity).

    The same quantity, sign flipped, as OpenUnlearning's ``ZLIBAttack`` (``avg_loss /
    zlib_entropy``, mean NLL over the answer tokens) and mimir's ``ZLIBAttack``.
    """
    if stats.text is None:
        raise DataError("the zlib attack needs TokenStats.text (the scored answer)")
    length = zlib_length(stats.text)
    return -stats.nll / length


def min_k_score(stats: TokenStats, k: float = DEFAULT_K) -> float:
    """Min-K% Prob (Shi et al. 2024, "Detecting Pretraining Data from Large Language Models"):
    mean of the lowest ``max(1, floor(k*T))`` token log-probs."""
    return _lowest_k_mean(stats.logprobs, k)


def min_k_plus_plus_score(
    stats: TokenStats, k: float = DEFAULT_K, sigma_floor: float = SIGMA_FLOOR
) -> float:
    """Min-K%++ (Zhang et al. 2024, "Min-K%++: Improved Baseline for Detecting Pre-Training Data
    from Large Language Models"): per token ``(log p(y_t) - mu_t) / max(sigma_t, sigma_floor)``,
    then the mean of the lowest ``max(1, floor(k*T))``.

    The floor of 1e-3 on sigma is OpenUnlearning's clamp of the variance at 1e-6; the reference
    implementation (zjysteven/mink-plus-plus) divides without a floor.
    """
    if stats.mu is None or stats.sigma is None:
        raise DataError("Min-K%++ needs TokenStats.mu and TokenStats.sigma")
    z = (stats.logprobs - stats.mu) / np.maximum(stats.sigma, sigma_floor)
    return _lowest_k_mean(z, k)


def reference_score(target: TokenStats, reference: TokenStats) -> float:
    """Reference attack (Carlini et al. 2022, "Membership Inference Attacks From First
    Principles"; "Ref" in MUSE): reference-model NLL minus target-model NLL on the same answer.

    OpenUnlearning's ``ReferenceAttack`` scores ``target_loss - ref_loss`` (non-member
    orientation); this is its negation.
    """
    if len(target) != len(reference):
        raise DataError(
            f"target and reference stats cover {len(target)} and {len(reference)} tokens"
        )
    return reference.nll - target.nll


def attack_scores(
    attack: str,
    stats: Sequence[TokenStats],
    reference_stats: Sequence[TokenStats] | None = None,
    *,
    k: float = DEFAULT_K,
) -> np.ndarray:
    """Per-item scores of one of :data:`TOKEN_ATTACKS` (higher = more likely a member)."""
    if attack == "loss":
        return np.array([loss_score(s) for s in stats])
    if attack == "zlib":
        return np.array([zlib_score(s) for s in stats])
    if attack == "min_k":
        return np.array([min_k_score(s, k) for s in stats])
    if attack == "min_k_plus_plus":
        return np.array([min_k_plus_plus_score(s, k) for s in stats])
    if attack == "reference":
        if reference_stats is None or len(reference_stats) != len(stats):
            raise DataError("the reference attack needs one reference TokenStats per item")
        return np.array(
            [reference_score(t, r) for t, r in zip(stats, reference_stats, strict=True)]
        )
    raise ConfigError(f"unknown attack {attack!r}; expected one of {', '.join(TOKEN_ATTACKS)}")


# --------------------------------------------------------------------------------------------
# GradNorm (needs the model)
# --------------------------------------------------------------------------------------------


def gradnorm_scores(
    model: torch.nn.Module,
    items: Iterable[Any],
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    *,
    p: float = 2.0,
    reduction: Literal["mean", "global"] = "mean",
) -> np.ndarray:
    """GradNorm attack: ``-||grad_theta NLL(item)||`` per item (higher = more likely a member).

    Gradient-norm MIAs are studied for LLM pre-training data by Wang et al. 2024 (arXiv
    2402.17012, cited by mimir and OpenUnlearning). ``loss_fn(model, item)`` must return the
    item's scalar loss (mean answer-token NLL). Following OpenUnlearning's ``GradNormAttack``
    (``p: 2`` in its TOFU config), ``reduction="mean"`` takes the p-norm of each parameter
    tensor's gradient and averages over tensors; ``"global"`` takes the p-norm of all gradients
    concatenated. Only parameters with ``requires_grad`` count. The model's mode (train/eval) is
    left as it is, and gradients already accumulated in ``.grad`` are restored afterwards. The
    forward passes run in the block's measurement precision (:mod:`obliviate.core.precision`);
    the gradients are those of the weights, in their dtype.
    """
    if p not in (1.0, 2.0, math.inf):
        raise ConfigError(f"p must be 1, 2 or inf, got {p}")
    if reduction not in ("mean", "global"):
        raise ConfigError(f"reduction must be 'mean' or 'global', got {reduction!r}")
    params = [q for q in model.parameters() if q.requires_grad]
    if not params:
        raise ConfigError("GradNorm needs at least one parameter with requires_grad=True")
    saved = [q.grad for q in params]
    scores: list[float] = []
    try:
        for item in items:
            for q in params:
                q.grad = None
            with torch.enable_grad(), measuring(model):
                loss = loss_fn(model, item)
                if loss.ndim != 0:
                    raise DataError("loss_fn must return a scalar loss per item")
                loss.backward()
            norms = np.array(
                [
                    float(torch.linalg.vector_norm(q.grad.detach(), ord=p, dtype=torch.float64))
                    if q.grad is not None
                    else 0.0
                    for q in params
                ]
            )
            if reduction == "mean":
                value = norms.mean()
            elif p == math.inf:
                value = norms.max()
            else:
                value = (norms**p).sum() ** (1.0 / p)
            scores.append(-float(value))
    finally:
        for q, g in zip(params, saved, strict=True):
            q.grad = g
    return np.array(scores, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# AUC, PrivLeak, and the MetricResult wrapper
# --------------------------------------------------------------------------------------------


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def mia_auc(
    member_scores: Sequence[float] | np.ndarray, nonmember_scores: Sequence[float] | np.ndarray
) -> float:
    """ROC AUC of telling members from non-members by score (``roc_auc_score``, members = 1).

    In unlearning the members are the forget set and the non-members a holdout set; 1.0 means
    every forget item outscores every holdout item, 0.5 indistinguishable. Non-finite scores
    (e.g. from empty answers) are left out; each side needs at least one finite score.
    """
    members = _finite(member_scores)
    nonmembers = _finite(nonmember_scores)
    if members.size == 0 or nonmembers.size == 0:
        raise DataError("MIA AUC needs at least one finite member and one non-member score")
    labels = np.concatenate([np.ones(members.size), np.zeros(nonmembers.size)])
    return float(roc_auc_score(labels, np.concatenate([members, nonmembers])))


PRIVLEAK_CONVENTIONS: tuple[str, ...] = ("muse", "relative_auc")
"""PrivLeak conventions: ``muse`` (the default, published) and ``relative_auc`` (the default
before 0.2; see :func:`privleak`)."""


def privleak(
    auc_unlearned: float,
    auc_oracle: float,
    *,
    convention: Literal["muse", "relative_auc"] = "muse",
) -> float:
    """PrivLeak (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language
    Models", arXiv:2407.06460): the relative gap, in percent, between the MIA AUC of the
    unlearned model and of the oracle (retrained without the forget set).

    Both AUCs are oriented as :func:`mia_auc` computes them: forget = members (label 1).

    - ``"muse"`` (default): the number MUSE and OpenUnlearning publish,
      ``((1 - AUC_u) - (1 - AUC_o)) / (1 - AUC_o) * 100``. MUSE's ``privleak.py`` labels the
      forget set 0 and holdout 1 (key ``forget_holdout_Min-40%``), so its AUC is ``1 - AUC``
      here; OpenUnlearning's ``privleak`` converts ``score = 1 - AUC`` before the same formula.
      Near 0 is good; large negative = under-unlearning (MUSE's News target model: -99.8);
      large positive = over-unlearning. Comparable with MUSE's and OpenUnlearning's tables.
    - ``"relative_auc"`` (the default before 0.2): ``(AUC_u - AUC_o) / AUC_o * 100``. The
      opposite sign (positive = under-unlearning) and a different scale; its magnitude equals
      the ``"muse"`` one only when ``AUC_o = 0.5``. Not comparable with published tables.

    Returns NaN when the denominator is 0 (the relative gap is undefined).
    """
    if convention == "muse":
        num, den = (1.0 - auc_unlearned) - (1.0 - auc_oracle), 1.0 - auc_oracle
    elif convention == "relative_auc":
        num, den = auc_unlearned - auc_oracle, auc_oracle
    else:
        raise ConfigError(
            f"convention must be one of {', '.join(PRIVLEAK_CONVENTIONS)}, got {convention!r}"
        )
    if den == 0:
        return math.nan
    return float(num / den * 100.0)


def mia_result(
    attack: str,
    forget_scores: Sequence[float] | np.ndarray,
    holdout_scores: Sequence[float] | np.ndarray,
    *,
    split: str | None = "forget",
    **details: Any,
) -> MetricResult:
    """Wrap one attack's scores: value = AUC (forget = members), per_item = forget scores."""
    forget = [float(x) for x in np.asarray(forget_scores, dtype=np.float64).ravel()]
    holdout = [float(x) for x in np.asarray(holdout_scores, dtype=np.float64).ravel()]
    n_dropped = sum(not math.isfinite(x) for x in forget + holdout)
    return MetricResult(
        name=f"mia_{attack}",
        value=mia_auc(forget, holdout),
        per_item=forget,
        split=split,
        higher_is_better=None,
        details={
            "attack": attack,
            "holdout_scores": holdout,
            "n_forget": len(forget),
            "n_holdout": len(holdout),
            "n_nonfinite_dropped": n_dropped,
            "orientation": "score: higher = member; AUC: forget labelled 1, holdout 0",
            **details,
        },
    )


def run_mia(
    attacks: Sequence[str],
    forget_stats: Sequence[TokenStats],
    holdout_stats: Sequence[TokenStats],
    *,
    k: float = DEFAULT_K,
    forget_reference_stats: Sequence[TokenStats] | None = None,
    holdout_reference_stats: Sequence[TokenStats] | None = None,
    precomputed: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    split: str | None = "forget",
) -> dict[str, MetricResult]:
    """Run token-level attacks (:data:`TOKEN_ATTACKS`) on forget (members) vs. holdout
    (non-members) and return one :class:`MetricResult` per attack, keyed by attack name.

    ``reference`` needs the reference model's stats on both sets. Attacks that need the model
    (``gradnorm``) are scored elsewhere (:func:`gradnorm_scores`) and passed in ``precomputed``
    as ``{name: (forget_scores, holdout_scores)}``.
    """
    _check_k(k)
    results: dict[str, MetricResult] = {}
    for attack in attacks:
        forget = attack_scores(attack, forget_stats, forget_reference_stats, k=k)
        holdout = attack_scores(attack, holdout_stats, holdout_reference_stats, k=k)
        extra = {"k": k} if attack in ("min_k", "min_k_plus_plus") else {}
        results[attack] = mia_result(attack, forget, holdout, split=split, **extra)
    for attack, (forget, holdout) in (precomputed or {}).items():
        results[attack] = mia_result(attack, forget, holdout, split=split)
    return results


__all__ = [
    "DEFAULT_K",
    "PRIVLEAK_CONVENTIONS",
    "SIGMA_FLOOR",
    "TOKEN_ATTACKS",
    "TokenStats",
    "attack_scores",
    "gradnorm_scores",
    "loss_score",
    "mia_auc",
    "mia_result",
    "min_k_plus_plus_score",
    "min_k_score",
    "privleak",
    "reference_score",
    "run_mia",
    "token_stats_from_logits",
    "zlib_length",
    "zlib_score",
]
