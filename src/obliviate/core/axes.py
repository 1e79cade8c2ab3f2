"""Which metrics are "forgetting", "utility" and "robustness": a small, documented mapping.

A model's metrics are one flat ``{key: value}`` dict: its evaluation summary
(``suite/split/metric``, e.g. ``tofu/forget/prob``) plus, when it was attacked,
``attack/<attack>/<metric>/<field>`` (``field`` ∈ ``plain``, ``attacked``, ``oracle_attacked``,
``recovery``). Each axis has a list of
*score expressions* tried in order; the first one every key of which is present wins, and the
report states which one was used. A score expression is::

    KEY             the value (KEY may be an fnmatch pattern matching exactly one key)
    1-EXPR          one minus EXPR (turns "lower is better" in [0, 1] around)
    -EXPR           minus EXPR (any other "lower is better")
    f(P, P, ...)    f ∈ hmean, mean, max, min over every key matching the patterns P

Defaults (every axis "higher is better"):

LLM
  forgetting  ``1-tofu/forget/prob``, else ``1-tofu/forget/rouge``
  utility     ``tofu/model_utility``, else ``hmean(tofu/retain/prob, tofu/retain/rouge)``
  robustness  ``1-max(attack/*/rouge/attacked)``, else ``1-max(attack/*/prob/attacked)``: the
              forget probe after the strongest attack (relearning, quantization and rephrasing
              measure the same probe, so they are comparable; white-box probes report other
              metrics and are left out)

Diffusion (the key names the diffusion evaluation is to write; ``*`` matches any suite/split
prefix, e.g. ``judge/forget/unlearning_accuracy``)
  forgetting  ``*unlearning_accuracy`` (UA: 1 − the judge's accuracy on images of the forgotten
              class/concept), else ``1-*forget_accuracy``
  utility     ``*retain_accuracy`` (the judge's accuracy on retained classes), else ``-*fid``
  robustness  ``1-max(attack/*/accuracy/attacked)``: forget-concept classifier accuracy after
              the strongest attack
"""

from __future__ import annotations

import fnmatch
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from obliviate.core.errors import ConfigError

DEFAULT_AXES: dict[str, dict[str, tuple[str, ...]]] = {
    "llm": {
        "forgetting": ("1-tofu/forget/prob", "1-tofu/forget/rouge"),
        "utility": ("tofu/model_utility", "hmean(tofu/retain/prob, tofu/retain/rouge)"),
        "robustness": ("1-max(attack/*/rouge/attacked)", "1-max(attack/*/prob/attacked)"),
    },
    "diffusion": {
        "forgetting": ("*unlearning_accuracy", "1-*forget_accuracy"),
        "utility": ("*retain_accuracy", "-*fid"),
        "robustness": ("1-max(attack/*/accuracy/attacked)",),
    },
}

_CALL = re.compile(r"^(hmean|mean|max|min)\((.*)\)$")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _matches(pattern: str, metrics: Mapping[str, Any]) -> list[float] | None:
    if pattern in metrics:
        return [float(metrics[pattern])] if _finite(metrics[pattern]) else None
    hits = [metrics[k] for k in sorted(metrics) if fnmatch.fnmatchcase(k, pattern)]
    values = [float(v) for v in hits if _finite(v)]
    return values or None


def _hmean(values: list[float]) -> float:
    if any(v <= 0 for v in values):
        return 0.0
    return statistics.harmonic_mean(values)


FUNCTIONS = {"hmean": _hmean, "mean": statistics.fmean, "max": max, "min": min}


@dataclass(frozen=True)
class ScoreExpr:
    """A parsed score expression (see the module docstring)."""

    text: str

    def __post_init__(self) -> None:
        self.parse()

    def parse(self) -> tuple[float, float, str | None, list[str]]:
        """``(offset, sign, function, patterns)``: value = offset + sign · f(patterns)."""
        body = self.text.replace(" ", "")
        offset, sign = 0.0, 1.0
        if body.startswith("1-"):
            offset, sign, body = 1.0, -1.0, body[2:]
        elif body.startswith("-"):
            sign, body = -1.0, body[1:]
        call = _CALL.match(body)
        func, args = (call.group(1), call.group(2).split(",")) if call else (None, [body])
        args = [a for a in args if a]
        if not args or any(c in a for a in args for c in "()"):
            raise ConfigError(f"score expression {self.text!r}: expected KEY, 1-KEY, -KEY or "
                              "f(KEY, ...) with f in hmean, mean, max, min")
        return offset, sign, func, args

    def keys(self) -> list[str]:
        return self.parse()[3]

    def evaluate(self, metrics: Mapping[str, Any]) -> float | None:
        """The score, or ``None`` when a key is missing (or a bare pattern is ambiguous)."""
        offset, sign, func, patterns = self.parse()
        values: list[float] = []
        for pattern in patterns:
            found = _matches(pattern, metrics)
            if found is None:
                return None
            if func is None and len(found) != 1:
                return None
            values += found
        raw = FUNCTIONS[func](values) if func else values[0]
        return offset + sign * raw


@dataclass
class AxisMap:
    """Score expressions per axis, tried in order; remembers which one each model used."""

    axes: dict[str, tuple[str, ...]]

    @classmethod
    def for_modality(cls, modality: str, overrides: Mapping[str, str | Sequence[str]] | None = None
                     ) -> AxisMap:
        axes = dict(DEFAULT_AXES.get(modality, DEFAULT_AXES["llm"]))
        for axis, value in (overrides or {}).items():
            axes[axis] = (value,) if isinstance(value, str) else tuple(value)
        for exprs in axes.values():
            for text in exprs:
                ScoreExpr(text)  # fail early on a malformed expression
        return cls(axes)

    def score(self, metrics: Mapping[str, Any]) -> tuple[dict[str, float | None],
                                                          dict[str, str | None]]:
        """``({axis: value}, {axis: expression used})``; ``None`` where nothing applies."""
        values: dict[str, float | None] = {}
        used: dict[str, str | None] = {}
        for axis, exprs in self.axes.items():
            values[axis], used[axis] = None, None
            for text in exprs:
                value = ScoreExpr(text).evaluate(metrics)
                if value is not None:
                    values[axis], used[axis] = value, text
                    break
        return values, used

    def to_dict(self) -> dict[str, list[str]]:
        return {axis: list(exprs) for axis, exprs in self.axes.items()}
