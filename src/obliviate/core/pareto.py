"""Pareto fronts of forgetting against utility (and robustness), seed aggregation, selection.

Every score is oriented "higher is better" before it gets here (see :mod:`obliviate.core.axes`).
A point is one (run, method, hyperparameters, seed); points that differ only in the seed form a
*configuration*, summarised by the mean and standard deviation of each score.

Dominance is exact: ``p`` dominates ``q`` when ``p ≥ q`` on every axis and ``p > q`` on at
least one. The front is the set of points no other point dominates; equal points do not
dominate each other, so ties stay on the front together. A point missing an axis (``None`` or
NaN) is left out of the front it cannot be compared on.

A method reports one configuration, chosen by a stated :class:`SelectionRule`. The default,
:class:`ThresholdRule`, reads only the *raw* forgetting and utility axes (``raw_forgetting``,
``raw_utility``: no oracle) of the unlearned models; rules that look at oracle-derived metrics
or axes must say so (``uses_oracle``) and are refused unless the caller passes
``allow_oracle=True``. Only the evaluation axes (forgetting, utility, robustness: closeness to
the oracle) and the ranking built on them (:func:`oracle_distance`) read the oracle.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from obliviate.core.axes import is_oracle_metric
from obliviate.core.errors import ConfigError

AXES_2D = ("forgetting", "utility")
AXES_3D = ("forgetting", "utility", "robustness")
RAW_2D = ("raw_forgetting", "raw_utility")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@dataclass
class Point:
    """One evaluated model: which method and configuration, and its oriented scores."""

    label: str
    method: str
    config_id: str
    scores: dict[str, float | None]
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    run: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    def value(self, axis: str) -> float | None:
        value = self.scores.get(axis)
        return float(value) if _finite(value) else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Configuration:
    """The points of one configuration across seeds: mean and sample std of each score."""

    config_id: str
    method: str
    label: str
    params: dict[str, Any]
    seeds: list[int | None]
    mean: dict[str, float | None]
    std: dict[str, float | None]
    metrics: dict[str, float | None] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.seeds)

    def value(self, axis: str) -> float | None:
        value = self.mean.get(axis)
        return float(value) if _finite(value) else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n": self.n}


def _comparable(item: Point | Configuration, axes: Sequence[str]) -> bool:
    return all(item.value(a) is not None for a in axes)


def dominates(p: Point | Configuration, q: Point | Configuration, axes: Sequence[str]) -> bool:
    """``p ≥ q`` on every axis and ``p > q`` on one (both must have every axis)."""
    a = [p.value(x) for x in axes]
    b = [q.value(x) for x in axes]
    if None in a or None in b:
        return False
    pairs = list(zip(a, b, strict=True))
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


def pareto_front(points: Iterable[Point | Configuration],
                 axes: Sequence[str] = AXES_2D) -> list[Any]:
    """The non-dominated points on ``axes``, in input order (O(n²), fine for sweeps)."""
    if not axes:
        raise ConfigError("pareto_front needs at least one axis")
    pool = [p for p in points if _comparable(p, axes)]
    return [p for p in pool if not any(dominates(q, p, axes) for q in pool if q is not p)]


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate_seeds(points: Iterable[Point]) -> list[Configuration]:
    """Group points by ``config_id`` (seeds of one configuration): mean ± sample std."""
    groups: dict[str, list[Point]] = {}
    for point in points:
        groups.setdefault(point.config_id, []).append(point)
    out = []
    for config_id, members in groups.items():
        first = members[0]
        mean, std = {}, {}
        for axis in sorted({a for m in members for a in m.scores}):
            mean[axis], std[axis] = _mean_std([v for m in members
                                               if (v := m.value(axis)) is not None])
        keys = sorted({k for m in members for k in m.metrics})
        metrics = {k: _mean_std([m.metrics[k] for m in members
                                 if _finite(m.metrics.get(k))])[0] for k in keys}
        out.append(Configuration(config_id, first.method, first.label, first.params,
                                 [m.seed for m in members], mean, std, metrics,
                                 [m.run or m.label for m in members]))
    return out


def oracle_distance(item: Point | Configuration, oracle: dict[str, float | None],
                    axes: Sequence[str] = AXES_3D) -> float | None:
    """Euclidean distance from ``item`` to the oracle's point on ``axes`` (an axis the oracle
    lacks counts as 1, the oracle's value by construction); ``None`` when ``item`` lacks one."""
    values = [item.value(a) for a in axes]
    if any(v is None for v in values):
        return None
    point = [float(v) if _finite(v := oracle.get(a)) else 1.0 for a in axes]
    return math.dist(values, point)  # type: ignore[arg-type]


# -- choosing a method's reported point ------------------------------------------------------
@dataclass
class SelectionRule:
    """A stated rule that picks one configuration per method; recorded in every report."""

    name: str = "rule"
    uses_oracle: bool = False

    def describe(self) -> str:
        raise NotImplementedError

    def pick(self, candidates: list[Configuration]) -> tuple[Configuration | None, str]:
        """The chosen configuration and a note (e.g. which fallback applied)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "description": self.describe()}


@dataclass
class ThresholdRule(SelectionRule):
    """Max mean utility among configurations with mean forgetting ≥ ``min_forgetting``; when
    none reaches it, the configuration with the highest mean forgetting (noted). Reads the
    ``axes`` (forgetting, utility), by default the raw ones, which use no oracle."""

    name: str = "max_utility_at_forgetting"
    min_forgetting: float = 0.5
    axes: tuple[str, str] = RAW_2D

    def describe(self) -> str:
        forget, utility = self.axes
        return (f"max mean {utility} subject to mean {forget} >= {self.min_forgetting:g}; "
                f"if no configuration reaches it, max mean {forget}"
                + (" (reads the oracle)" if self.uses_oracle else " (no oracle metrics used)"))

    def pick(self, candidates: list[Configuration]) -> tuple[Configuration | None, str]:
        forget, utility = self.axes
        scored = [c for c in candidates if _comparable(c, self.axes)]
        if not scored:
            return None, f"no configuration has both {forget} and {utility}"
        ok = [c for c in scored if (c.value(forget) or 0.0) >= self.min_forgetting]
        if ok:
            best = max(ok, key=lambda c: (c.value(utility), c.value(forget)))
            return best, "threshold met"
        best = max(scored, key=lambda c: (c.value(forget), c.value(utility)))
        return best, f"fallback: no configuration reaches {forget} >= {self.min_forgetting:g}"


@dataclass
class ProxyRule(SelectionRule):
    """The configuration maximising (or minimising) one named metric's seed mean."""

    name: str = "best_proxy"
    key: str = "raw_forgetting"
    maximize: bool = True

    def __post_init__(self) -> None:
        self.uses_oracle = self.uses_oracle or is_oracle_metric(self.key)

    def describe(self) -> str:
        word = "max" if self.maximize else "min"
        oracle = " (an oracle-derived metric)" if self.uses_oracle else " (no oracle metrics used)"
        return f"{word} mean of {self.key!r}{oracle}"

    def _value(self, c: Configuration) -> float | None:
        value = c.value(self.key) if self.key in c.mean else c.metrics.get(self.key)
        return float(value) if _finite(value) else None

    def pick(self, candidates: list[Configuration]) -> tuple[Configuration | None, str]:
        scored = [c for c in candidates if self._value(c) is not None]
        if not scored:
            return None, f"no configuration has {self.key!r}"
        sign = 1.0 if self.maximize else -1.0
        return max(scored, key=lambda c: sign * (self._value(c) or 0.0)), "proxy"


@dataclass
class OracleDistanceRule(SelectionRule):
    """The configuration closest (Euclidean, on ``axes``) to the oracle's point. Peeks."""

    name: str = "closest_to_oracle"
    uses_oracle: bool = True
    oracle: dict[str, float] = field(default_factory=dict)
    axes: tuple[str, ...] = AXES_2D

    def describe(self) -> str:
        return f"min Euclidean distance to the oracle on {', '.join(self.axes)} (uses the oracle)"

    def pick(self, candidates: list[Configuration]) -> tuple[Configuration | None, str]:
        if any(not _finite(self.oracle.get(a)) for a in self.axes):
            return None, "the oracle's point is unknown"
        scored = [c for c in candidates if _comparable(c, self.axes)]
        if not scored:
            return None, "no configuration has every axis"
        return min(scored, key=lambda c: math.dist([c.value(a) for a in self.axes],
                                                   [self.oracle[a] for a in self.axes])), "nearest"


def select_reported(configs: Iterable[Configuration], rule: SelectionRule,
                    allow_oracle: bool = False) -> dict[str, dict[str, Any]]:
    """Each method's reported configuration under ``rule``: ``{method: {config, note, ...}}``."""
    if rule.uses_oracle and not allow_oracle:
        raise ConfigError(f"selection rule {rule.name!r} reads oracle-derived metrics; pass "
                          "allow_oracle=True to use it (the report then says so)")
    by_method: dict[str, list[Configuration]] = {}
    for config in configs:
        by_method.setdefault(config.method, []).append(config)
    out = {}
    for method, candidates in sorted(by_method.items()):
        chosen, note = rule.pick(candidates)
        out[method] = {"config_id": chosen.config_id if chosen else None,
                       "label": chosen.label if chosen else None, "note": note,
                       "candidates": len(candidates),
                       "mean": chosen.mean if chosen else None,
                       "std": chosen.std if chosen else None,
                       "params": chosen.params if chosen else None}
    return out


def parse_rule(text: str) -> SelectionRule:
    """``threshold:0.5`` | ``proxy:KEY`` (``proxy:-KEY`` minimises) | ``oracle``."""
    kind, _, arg = text.partition(":")
    if kind == "threshold":
        try:
            return ThresholdRule(min_forgetting=float(arg or 0.5))
        except ValueError:
            raise ConfigError(f"rule {text!r}: threshold must be a number") from None
    if kind == "proxy":
        key = arg or "raw_forgetting"
        return ProxyRule(key=key.lstrip("-"), maximize=not key.startswith("-"))
    if kind == "oracle":
        return OracleDistanceRule()
    raise ConfigError(f"unknown selection rule {text!r}; use threshold:T, proxy:KEY or oracle")
