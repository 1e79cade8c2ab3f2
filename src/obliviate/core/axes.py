"""Score expressions: how the metrics a benchmark declares become the "forgetting", "utility"
and "robustness" axes of the report.

The yardstick of unlearning is the oracle, the model trained without the forget set. Both
failing directions count: a model that keeps the forget set (under-forgetting) and one pushed
*past* the oracle (over-forgetting: MUSE's PrivLeak is signed both ways, and a forget loss far
above a never-seen set's makes the forget set detectable). So the default axes measure
closeness to the oracle; the older raw axes stay available by name (``raw_forgetting`` …).

A model's metrics are one flat ``{key: value}`` dict: its evaluation summary
(``suite/split/metric``, e.g. ``tofu/forget/prob``) plus, when it was attacked,
``attack/<attack>/<metric>/<field>`` (``field`` ∈ ``plain``, ``attacked``, ``oracle_attacked``,
``recovery``). Each axis has a list of *score expressions* tried in order; the first one every
key of which is present wins, and the report states which one was used. A score expression::

    KEY             the value (KEY may be an fnmatch pattern matching exactly one key)
    1-EXPR          one minus EXPR (turns "lower is better" in [0, 1] around)
    -EXPR           minus EXPR (any other "lower is better")
    f(P, P, ...)    f ∈ hmean, mean, max, min over every key matching the patterns P

and three functions that read the oracle's (o) and the target's (t) value of the same key
(m is the scored model's):

    close(P, ...)      mean over the keys of  1 − min(1, |m − o| / max(|t − o|, 0.05)):
                       1 at the oracle, 0 as far from it as the target (or farther), in either
                       direction. Without a target value the denominator is 1 (metrics in
                       [0, 1]). The floor 0.05 keeps a metric on which the target already sits
                       at the oracle from dividing by ~0.
    kept(P, ...)       mean over the keys of  min(1, m / max(t, o)): the share of the better
                       reference's retain-side score kept. ``-P`` marks a lower-is-better key:
                       min(1, min(t, o) / m).
    recovered(P, ...)  P matches ``attack/<a>/<m>/recovery`` keys (recovery = the probe under
                       attack minus the oracle's under the same attack): the largest, over
                       attacks, of  clip(recovery / max(r_t, 0.05), 0, 1)  with r_t the
                       target's recovery under the same attack (1 without it): the share of
                       the target's lead over the oracle that the strongest attack restores.

Which expressions an axis tries is declared by each benchmark (``Benchmark.axes``: the three
axes, each "higher is better", the oracle scoring 1 on forgetting and robustness, plus the raw
axes ``raw_forgetting``, ``raw_utility``, ``raw_robustness``: no oracle, what selection rules
read). The report, a sweep's table and a search read the run's benchmark
(:meth:`AxisMap.for_benchmark`); a run that names none gets every registered benchmark's
expressions of its modality, first declaration kept. Pass ``raw`` as an axis override to use the
raw expression on a main axis (``obliviate report --forgetting raw``). The metric names live
with the benchmarks (``obliviate/llm/benchmarks``, ``obliviate/diffusion/benchmarks``).
"""

from __future__ import annotations

import fnmatch
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from obliviate.core.errors import ConfigError
from obliviate.core.metric import oracle_metric_names

AXES = ("forgetting", "utility", "robustness")
RAW = {axis: f"raw_{axis}" for axis in AXES}
FLOOR = 0.05  # smallest target-to-oracle gap a normalisation divides by

# What an attack record holds relative to the oracle (``oracle_plain``, ``oracle_attacked``,
# ``recovery``: :class:`~obliviate.core.result.AttackResult`'s own fields); the metrics computed
# relative to it declare ``reads_oracle`` (:func:`~obliviate.core.metric.oracle_metric_names`).
# An expression or rule that reads either "peeks".
ATTACK_ORACLE_FIELDS = ("recovery", "oracle")
ORACLE_FUNCTIONS = ("close", "kept", "recovered")

_CALL = re.compile(r"^(hmean|mean|max|min|close|kept|recovered)\((.*)\)$")


def is_oracle_metric(key: str) -> bool:
    """True when ``key`` is computed from the oracle model: an attack record's oracle fields,
    or a registered metric that declares ``reads_oracle`` (Forget Quality, PrivLeak, ...)."""
    names = (*ATTACK_ORACLE_FIELDS, *oracle_metric_names())
    return any(fnmatch.fnmatch(key.lower(), f"*{name}*") for name in names)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _matching(pattern: str, metrics: Mapping[str, Any]) -> list[str]:
    if pattern in metrics:
        return [pattern] if _finite(metrics[pattern]) else []
    return [k for k in sorted(metrics) if fnmatch.fnmatchcase(k, pattern) and _finite(metrics[k])]


def _hmean(values: list[float]) -> float:
    if any(v <= 0 for v in values):
        return 0.0
    return statistics.harmonic_mean(values)


FUNCTIONS = {"hmean": _hmean, "mean": statistics.fmean, "max": max, "min": min}


@dataclass(frozen=True)
class References:
    """The oracle's and the target's metrics, which the oracle-relative functions read."""

    oracle: Mapping[str, Any] = field(default_factory=dict)
    target: Mapping[str, Any] = field(default_factory=dict)


def closeness(m: float, o: float, t: float | None) -> float:
    """``1 − min(1, |m − o| / max(|t − o|, FLOOR))`` (denominator 1 without a target value)."""
    scale = max(abs(t - o), FLOOR) if t is not None else 1.0
    return 1.0 - min(1.0, abs(m - o) / scale)


def position(m: float, o: float, t: float | None) -> float | None:
    """Where ``m`` sits on the line from the oracle (0) to the target (1); below 0 is past the
    oracle, away from the target (over-forgetting). ``None`` when the target is missing or sits
    within FLOOR of the oracle (the metric then says nothing about direction)."""
    if t is None or abs(t - o) < FLOOR:
        return None
    return (m - o) / (t - o)


def _kept(m: float, o: float, t: float | None, lower_is_better: bool) -> float:
    refs = [v for v in (o, t) if v is not None]
    if lower_is_better:
        best = min(refs)
        return 1.0 if m <= best else (best / m if m > 0 else 0.0)
    best = max(refs)
    if best <= 0:
        return 1.0 if m >= best else 0.0
    return min(1.0, m / best)


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
                              "f(KEY, ...) with f in hmean, mean, max, min, close, kept, "
                              "recovered")
        return offset, sign, func, args

    def keys(self) -> list[str]:
        return self.parse()[3]

    @property
    def uses_oracle(self) -> bool:
        """Whether the value depends on the oracle (an oracle function or metric)."""
        _, _, func, patterns = self.parse()
        return func in ORACLE_FUNCTIONS or any(is_oracle_metric(p) for p in patterns)

    def evaluate(self, metrics: Mapping[str, Any], refs: References | None = None
                 ) -> float | None:
        """The score, or ``None`` when a key is missing (or a bare pattern is ambiguous, or an
        oracle function has no oracle value for a key)."""
        offset, sign, func, patterns = self.parse()
        if func in ORACLE_FUNCTIONS:
            raw = self._relative(func, patterns, metrics, refs or References())
            return None if raw is None else offset + sign * raw
        values: list[float] = []
        for pattern in patterns:
            found = _matching(pattern, metrics)
            if not found or (func is None and len(found) != 1):
                return None
            values += [float(metrics[k]) for k in found]
        raw = FUNCTIONS[func](values) if func else values[0]
        return offset + sign * raw

    @staticmethod
    def _relative(func: str, patterns: list[str], metrics: Mapping[str, Any],
                  refs: References) -> float | None:
        def ref(source: Mapping[str, Any], key: str) -> float | None:
            return float(source[key]) if _finite(source.get(key)) else None

        values: list[float] = []
        for pattern in patterns:
            lower = func == "kept" and pattern.startswith("-")
            found = _matching(pattern.lstrip("-") if lower else pattern, metrics)
            if not found:
                return None
            for key in found:
                m = float(metrics[key])
                if func == "recovered":
                    r_t = ref(refs.target, key)
                    scale = max(r_t, FLOOR) if r_t is not None else 1.0
                    values.append(min(1.0, max(0.0, m / scale)))
                    continue
                o = ref(refs.oracle, key)
                if o is None:
                    return None
                t = ref(refs.target, key)
                values.append(closeness(m, o, t) if func == "close" else _kept(m, o, t, lower))
        return max(values) if func == "recovered" else statistics.fmean(values)


@dataclass
class AxisMap:
    """Score expressions per axis, tried in order; remembers which one each model used."""

    axes: dict[str, tuple[str, ...]]

    @classmethod
    def for_benchmark(cls, modality: str, name: str | None = None,
                      overrides: Mapping[str, str | Sequence[str]] | None = None) -> AxisMap:
        """The axes the benchmark ``name`` declares (without a name, or one not registered,
        every registered benchmark's of ``modality``), with ``overrides`` (axis -> expression(s),
        or ``raw``: that axis's raw expressions)."""
        from obliviate.core.benchmark import declared_axes

        declared = declared_axes(modality, name)
        axes = dict(declared)
        for axis, value in (overrides or {}).items():
            if value == "raw" and axis in RAW:
                if RAW[axis] not in declared:
                    raise ConfigError(f"--{axis} raw: the benchmark {name or modality!r} "
                                      f"declares no {RAW[axis]} axis")
                axes[axis] = declared[RAW[axis]]
                continue
            axes[axis] = (value,) if isinstance(value, str) else tuple(value)
        for exprs in axes.values():
            for text in exprs:
                ScoreExpr(text)  # fail early on a malformed expression
        return cls(axes)

    @classmethod
    def for_modality(cls, modality: str, overrides: Mapping[str, str | Sequence[str]] | None = None
                     ) -> AxisMap:
        """Every registered benchmark's axes of ``modality`` (a run that names no benchmark)."""
        return cls.for_benchmark(modality, None, overrides)

    def uses_oracle(self, axis: str) -> bool:
        """Whether any expression of ``axis`` reads the oracle."""
        return any(ScoreExpr(text).uses_oracle for text in self.axes.get(axis, ()))

    def score(self, metrics: Mapping[str, Any], refs: References | None = None
              ) -> tuple[dict[str, float | None], dict[str, str | None]]:
        """``({axis: value}, {axis: expression used})``; ``None`` where nothing applies."""
        values: dict[str, float | None] = {}
        used: dict[str, str | None] = {}
        for axis, exprs in self.axes.items():
            values[axis], used[axis] = None, None
            for text in exprs:
                value = ScoreExpr(text).evaluate(metrics, refs)
                if value is not None:
                    values[axis], used[axis] = value, text
                    break
        return values, used

    def to_dict(self) -> dict[str, list[str]]:
        return {axis: list(exprs) for axis, exprs in self.axes.items()}
