"""Metric and evaluation results: per-item values plus an aggregate, serialisable to JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from obliviate.core.io import atomic_write_json, read_json


@dataclass
class MetricResult:
    """One metric on one split: the aggregate and, where defined, the per-item values."""

    name: str
    value: float
    per_item: list[float] | None = None
    split: str | None = None
    higher_is_better: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_items(cls, name: str, items: list[float], **kwargs: Any) -> MetricResult:
        finite = [x for x in items if x is not None and math.isfinite(x)]
        value = sum(finite) / len(finite) if finite else float("nan")
        return cls(name=name, value=value, per_item=list(items), **kwargs)


@dataclass
class EvalResult:
    """The output of one evaluation suite on one model."""

    suite: str
    model: str
    metrics: dict[str, MetricResult] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None

    def add(self, metric: MetricResult) -> MetricResult:
        key = f"{metric.split}/{metric.name}" if metric.split else metric.name
        self.metrics[key] = metric
        return metric

    def summary(self) -> dict[str, float]:
        """Aggregates only, keyed ``split/metric``."""
        return {k: m.value for k, m in self.metrics.items()}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        metrics = {k: MetricResult(**v) for k, v in data.get("metrics", {}).items()}
        return cls(**{**data, "metrics": metrics})

    @classmethod
    def load(cls, path: str | Path) -> EvalResult:
        return cls.from_dict(read_json(path))


@dataclass
class AttackResult:
    """Forgetting under attack: the probe on the unlearned model and on the oracle, before and
    after the attack, so "recovered" always means "above what a model that never saw the data
    shows" (``recovery = attacked − oracle_attacked``).

    ``curve`` holds points of an attack strength (e.g. relearning steps ``k``) and ``variants``
    the values of each variant (e.g. each rephrasing); ``attacked`` is the strongest of them.
    """

    attack: str
    model: str
    metric: str
    plain: float
    attacked: float
    oracle_plain: float | None = None
    oracle_attacked: float | None = None
    higher_is_recovered: bool = True
    curve: list[dict[str, Any]] = field(default_factory=list)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None

    @property
    def recovery(self) -> float | None:
        """How far the attack lifts the probe above the oracle under the same attack."""
        if self.oracle_attacked is None:
            return None
        sign = 1.0 if self.higher_is_recovered else -1.0
        return sign * (self.attacked - self.oracle_attacked)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "recovery": self.recovery}

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> AttackResult:
        data = read_json(path)
        data.pop("recovery", None)
        return cls(**data)
