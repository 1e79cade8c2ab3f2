"""Memorisation metrics on answers, and a dependency-free fluency heuristic for generations.

- Exact memorisation (Tirumala et al. 2022, "Memorization Without Overfitting: Analyzing the
  Training Dynamics of Large Language Models"): the fraction of answer tokens whose
  teacher-forced argmax prediction equals the label.
- Extraction strength (Carlini et al. 2021, "Extracting Training Data from Large Language
  Models"; as in OpenUnlearning's ``extraction_strength``): ``1 - k/|y|`` with k the shortest
  answer prefix after which the model's greedy continuation reproduces the rest of the answer.
- Fluency: a transparent heuristic (repetition, symbol noise, lexical diversity), not a trained
  gibberish classifier.

Both memorisation metrics read the boolean array ``is_argmax`` of :class:`TokenStats`
(teacher-forced: position t sees the true answer prefix y_<t).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from obliviate.core.errors import ConfigError, DataError
from obliviate.core.result import MetricResult
from obliviate.llm.evaluation.mia import TokenStats

ArgmaxLike = TokenStats | np.ndarray | Sequence[bool]


def _argmax_array(item: ArgmaxLike) -> np.ndarray:
    if isinstance(item, TokenStats):
        if item.is_argmax is None:
            raise DataError("memorisation metrics need TokenStats.is_argmax")
        return item.is_argmax
    arr = np.asarray(item, dtype=bool)
    if arr.ndim != 1:
        raise DataError(f"is_argmax must be one-dimensional, got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------------------------
# Exact memorisation and extraction strength
# --------------------------------------------------------------------------------------------


def exact_memorization_score(item: ArgmaxLike) -> float:
    """Fraction of answer tokens predicted exactly by the teacher-forced argmax (Tirumala et al.
    2022). NaN for an empty answer (OpenUnlearning records None there)."""
    arr = _argmax_array(item)
    return float(arr.mean()) if arr.size else math.nan


def extraction_strength_score(item: ArgmaxLike, *, openunlearning_compat: bool = False) -> float:
    """Extraction strength ``1 - k/T`` (Carlini et al. 2021; OpenUnlearning).

    k is the smallest index such that ``is_argmax[k:]`` is all True; k = T (score 0) when the
    last token is mispredicted. With teacher forcing, "every token of y[k:] is the argmax given
    the true prefix" is exactly "greedy decoding from x + y[:k] reproduces y[k:]" (argmax ties
    and stopping criteria aside), so no generation is needed.

    ``openunlearning_compat=True`` reproduces OpenUnlearning's loop, which stops at k = T - 1
    (score 1/T rather than 0 when the last token is wrong) and scores an empty answer 0; the
    default returns NaN for an empty answer.
    """
    arr = _argmax_array(item)
    total = arr.size
    if total == 0:
        return 0.0 if openunlearning_compat else math.nan
    wrong = np.flatnonzero(~arr)
    k = int(wrong[-1]) + 1 if wrong.size else 0
    if openunlearning_compat:
        k = min(k, total - 1)
    return 1.0 - k / total


def exact_memorization(items: Sequence[ArgmaxLike], *, split: str | None = None) -> MetricResult:
    """Exact memorisation per item; aggregate = mean over items with at least one token."""
    values = [exact_memorization_score(x) for x in items]
    return MetricResult.from_items("exact_memorization", values, split=split, higher_is_better=None)


def extraction_strength(
    items: Sequence[ArgmaxLike], *, split: str | None = None, openunlearning_compat: bool = False
) -> MetricResult:
    """Extraction strength per item; aggregate = mean over items with at least one token."""
    values = [
        extraction_strength_score(x, openunlearning_compat=openunlearning_compat) for x in items
    ]
    return MetricResult.from_items(
        "extraction_strength",
        values,
        split=split,
        higher_is_better=None,
        details={"openunlearning_compat": openunlearning_compat},
    )


# --------------------------------------------------------------------------------------------
# Fluency heuristic
# --------------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)
_PLAIN_PUNCTUATION = frozenset(".,;:!?'\"()-")


def fluency_components(text: str, *, n: int = 3) -> dict[str, float]:
    """The three ingredients of :func:`fluency_score` for one text.

    - ``repeated_ngram_ratio``: ``1 - distinct/total`` over the word n-grams (0 when the text
      has fewer than n words);
    - ``nonword_char_fraction``: fraction of non-space characters that are neither alphanumeric
      nor plain punctuation ``. , ; : ! ? ' " ( ) -``;
    - ``distinct_word_ratio``: distinct words / words (case-folded; 0 for no words).

    Words are maximal runs of ``\\w`` characters.
    """
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    words = _WORD.findall(text.casefold())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    repeated = 1.0 - len(set(grams)) / len(grams) if grams else 0.0
    chars = [c for c in text if not c.isspace()]
    noise = sum(1 for c in chars if not c.isalnum() and c not in _PLAIN_PUNCTUATION)
    nonword = noise / len(chars) if chars else 0.0
    distinct = len(set(words)) / len(words) if words else 0.0
    return {
        "repeated_ngram_ratio": repeated,
        "nonword_char_fraction": nonword,
        "distinct_word_ratio": distinct,
    }


def fluency_score(text: str, *, n: int = 3, distinct_floor: float = 0.5) -> float:
    """Heuristic fluency in [0, 1], higher = more fluent; 0 for a text with no words.

    ``(1 - repeated_ngram_ratio) * (1 - nonword_char_fraction)
    * min(1, distinct_word_ratio / distinct_floor)`` (see :func:`fluency_components`).

    It flags the usual failure modes of over-unlearned models (one token or phrase repeated,
    symbol soup, an empty answer) and needs no downloaded classifier. It is a heuristic, not
    a language model: it cannot tell fluent text from well-formed nonsense (random but
    distinct words) and is not a substitute for OpenUnlearning's gibberish classifier
    (``madhurjindal/autonlp-Gibberish-Detector-492513457``). Lexical diversity above
    ``distinct_floor`` earns full credit so that long fluent answers, which repeat function
    words, are not penalised.
    """
    if not 0.0 < distinct_floor <= 1.0:
        raise ConfigError(f"distinct_floor must be in (0, 1], got {distinct_floor}")
    parts = fluency_components(text, n=n)
    if parts["distinct_word_ratio"] == 0.0:
        return 0.0
    diversity = min(1.0, parts["distinct_word_ratio"] / distinct_floor)
    return (
        (1.0 - parts["repeated_ngram_ratio"]) * (1.0 - parts["nonword_char_fraction"]) * diversity
    )


def fluency(
    texts: Sequence[str], *, split: str | None = None, n: int = 3, distinct_floor: float = 0.5
) -> MetricResult:
    """:func:`fluency_score` per generated text; aggregate = mean."""
    values = [fluency_score(t, n=n, distinct_floor=distinct_floor) for t in texts]
    return MetricResult.from_items(
        "fluency",
        values,
        split=split,
        higher_is_better=True,
        details={"n": n, "distinct_floor": distinct_floor, "kind": "heuristic"},
    )


__all__ = [
    "exact_memorization",
    "exact_memorization_score",
    "extraction_strength",
    "extraction_strength_score",
    "fluency",
    "fluency_components",
    "fluency_score",
]
