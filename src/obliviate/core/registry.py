"""Name → implementation registries: benchmarks, methods, metrics, evaluation suites, attacks.

A modality registers its entries when its package is imported::

    @METHODS.register("npo", modality="llm")
    class NPO(LLMUnlearningMethod): ...

Lookups of an unknown name raise a :class:`ConfigError` listing what is known.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from obliviate.core.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    modality: str
    obj: T
    summary: str


class Registry(Generic[T]):
    """A registry of named objects, each tagged with the modality it belongs to."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[tuple[str, str], Entry[T]] = {}

    def register(self, name: str, *, modality: str) -> Callable[[T], T]:
        key = name.lower()

        def decorator(obj: T) -> T:
            if (modality, key) in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered for {modality}")
            doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
            for attr, value in (("name", key), ("modality", modality)):
                if isinstance(obj, type) and getattr(obj, attr, None) == "":
                    setattr(obj, attr, value)  # a class that leaves them blank learns them here
            self._entries[(modality, key)] = Entry(key, modality, obj, doc[0] if doc else "")
            return obj

        return decorator

    def get(self, name: str, modality: str) -> T:
        entry = self._entries.get((modality, name.lower()))
        if entry is None:
            known = ", ".join(self.names(modality)) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r} for {modality}; known: {known}")
        return entry.obj

    def names(self, modality: str | None = None) -> list[str]:
        return sorted(e.name for e in self.entries(modality))

    def entries(self, modality: str | None = None) -> list[Entry[T]]:
        return [e for (m, _), e in sorted(self._entries.items()) if modality in (None, m)]

    def __contains__(self, item: tuple[str, str]) -> bool:
        modality, name = item
        return (modality, name.lower()) in self._entries


def import_part(modality: str, part: str) -> bool:
    """Import ``obliviate.<modality>.<part>`` (a package whose import registers its entries, e.g.
    ``benchmarks`` or ``metrics``) by name, so that core reaches a modality's parts without
    importing the modality itself; ``False`` when there is no such modality or part."""
    package = f"obliviate.{modality}"
    try:
        importlib.import_module(f"{package}.{part}")
    except ModuleNotFoundError as exc:
        if exc.name not in (package, f"{package}.{part}"):
            raise
        return False
    return True


@functools.cache
def import_every(part: str) -> tuple[str, ...]:
    """:func:`import_part` for every modality installed beside core (the ``obliviate.*``
    packages that have ``part``), once per process; the modalities found."""
    import obliviate

    skip = {"core", "cli"}
    return tuple(info.name for info in pkgutil.iter_modules(obliviate.__path__)
                 if info.ispkg and info.name not in skip and import_part(info.name, part))


METHODS: Registry[Any] = Registry("method")
SUITES: Registry[Any] = Registry("evaluation suite")
ATTACKS: Registry[Any] = Registry("attack")
BENCHMARKS: Registry[Any] = Registry("benchmark")
"""Where a task's data come from (:class:`obliviate.core.benchmark.Benchmark`)."""
METRICS: Registry[Any] = Registry("metric")
"""One number per model (:class:`obliviate.core.metric.Metric`), with its declared needs."""
