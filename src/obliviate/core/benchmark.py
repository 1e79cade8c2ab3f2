"""Benchmarks as registered parts: one file and one registration each.

A benchmark says where an unlearning task's data come from and how its results are read:

* its **splits** and their **roles** (``forget``, ``retain``, ``holdout``: non-members never
  trained on, ``evaluation``: read by metrics only);
* a typed **config** (a :class:`StrictModel` of its own keys, with defaults) and
  ``load(config, seed) -> UnlearningTask`` (a local folder in the benchmark's published layout,
  else its hub id when online);
* its default evaluation **suites**, its **headline** metrics (``(label, summary key)``: the
  columns every table shows first, the CLI's, ``benchmarks/``'s and the report's), the report's
  **axes** (score expressions, see :mod:`obliviate.core.axes`), the **oracle** it expects and the
  packaged **recipe** that runs it.

Registering one::

    @BENCHMARKS.register("tofu", modality="llm")
    class Tofu(Benchmark):
        "TOFU (Maini et al. 2024): 200 fictitious authors."
        config_class = TofuConfig
        splits = {"forget": "forget", "retain": "retain", "holdout": "holdout", ...}
        def load(self, config, seed): ...

A recipe selects it with ``task.benchmark: tofu`` (``task.source`` is the older spelling); the
other keys of ``task`` are the benchmark's config. :class:`TaskSection` does that parsing for
every modality.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import (
    Field,
    SerializationInfo,
    ValidationError,
    model_serializer,
    model_validator,
)

from obliviate.core.recipe import NestedKeyError, StrictModel
from obliviate.core.registry import BENCHMARKS
from obliviate.core.task import UnlearningTask

SplitRole = Literal["forget", "retain", "holdout", "evaluation"]


@dataclass(frozen=True)
class Headline:
    """One headline number: the table column ``label`` reads the summary key ``key``
    (``suite/split/metric``); ``digits`` is how many decimals a table prints."""

    label: str
    key: str
    digits: int = 3


class Benchmark:
    """Base of every benchmark; subclasses set the class attributes and :meth:`load`."""

    name: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    config_class: ClassVar[type[StrictModel]] = StrictModel
    splits: ClassVar[Mapping[str, SplitRole]] = {}
    """split name -> role (a task's ``forget``/``retain`` are always named so)."""
    suites: ClassVar[tuple[str, ...]] = ()
    """Evaluation suites a recipe runs when it names none."""
    headline: ClassVar[tuple[Headline, ...]] = ()
    axes: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    """Report axes (forgetting, utility, robustness) -> score expressions tried in order."""
    oracle: ClassVar[str] = "a model trained on the retain set only"
    recipe: ClassVar[str | None] = None
    """The packaged recipe (``obliviate/recipes/<recipe>.yaml``) that runs this benchmark."""
    hub_id: ClassVar[str | None] = None

    def load(self, config: Any, seed: int = 0) -> UnlearningTask:
        raise NotImplementedError

    def default_name(self, config: Any) -> str:
        """The task's name when the recipe gives none."""
        return self.name

    @classmethod
    def headline_pairs(cls) -> list[tuple[str, str]]:
        return [(h.label, h.key) for h in cls.headline]


def get_benchmark(name: str, modality: str) -> type[Benchmark]:
    """The registered benchmark (a one-line :class:`ConfigError` listing the known ones)."""
    return BENCHMARKS.get(name, modality)


def headline(modality: str, benchmark: str | None = None) -> list[tuple[str, str]]:
    """The headline ``(label, key)`` pairs of a benchmark; without a name, every registered
    benchmark's of the modality, first declaration of a key kept (tables show the present ones)."""
    entries = ([get_benchmark(benchmark, modality)] if benchmark else
               [e.obj for e in BENCHMARKS.entries(modality)])
    seen: dict[str, tuple[str, str]] = {}
    for cls in entries:
        for label, key in cls.headline_pairs():
            seen.setdefault(key, (label, key))
    return list(seen.values())


class TaskSection(StrictModel):
    """A recipe's ``task`` section: ``benchmark`` (alias ``source``), an optional task ``name``,
    and the benchmark's own keys, validated by its ``config_class`` into ``settings``.

    A modality subclasses it and sets ``modality`` (and may add shared keys as fields)::

        class TaskConfig(TaskSection):
            modality: ClassVar[str] = "llm"
            retain_limit: int | None = None

    ``model_dump`` gives the flat section back, so a dumped recipe reloads as it was.
    """

    modality: ClassVar[str] = ""
    default_benchmark: ClassVar[str] = ""
    aliases: ClassVar[Mapping[str, Mapping[str, str]]] = {"source": {}}
    """Older spellings of ``benchmark`` (key -> renamed values), e.g. diffusion's
    ``dataset: folder`` for ``benchmark: image_folder``. A key that the named benchmark's own
    config declares (wmdp's ``source``) stays that benchmark's."""
    benchmark: str = Field(default="", description="a registered benchmark's name")
    name: str | None = None
    """the task's name in reports and the run record (default: the benchmark's)"""
    settings: Any = Field(default=None, description="the benchmark's typed config")

    @model_validator(mode="before")
    @classmethod
    def _split_keys(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or isinstance(data.get("settings"), StrictModel):
            return data
        data = dict(data)
        for key, renames in cls.aliases.items():
            named = data.get("benchmark")
            if key not in data or (isinstance(named, str) and (cls.modality, named) in BENCHMARKS
                                   and key in get_benchmark(named, cls.modality)
                                   .config_class.model_fields):
                continue
            value = data.pop(key)
            data.setdefault("benchmark", renames.get(value, value) if isinstance(value, str)
                            else value)
        name = data.get("benchmark") or cls.default_benchmark
        if not isinstance(name, str):
            raise ValueError(f"benchmark must be a name, got {type(name).__name__}")
        from obliviate.core.errors import ConfigError

        try:
            bench = get_benchmark(name, cls.modality)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        own = set(cls.model_fields) - {"settings"}
        mine = {k: v for k, v in data.items() if k in own}
        # a recipe switched to another benchmark by an override (task.source=jsonl on the
        # demo) still holds the first one's keys: those of another registered benchmark are
        # set aside; a key no benchmark knows is still an error
        accepted = set(bench.config_class.model_fields)
        foreign = {key for entry in BENCHMARKS.entries(cls.modality) if entry.obj is not bench
                   for key in entry.obj.config_class.model_fields} - accepted
        rest = {k: v for k, v in data.items() if k not in own and k not in foreign}
        try:
            settings = bench.config_class.model_validate(rest)
        except ValidationError as exc:  # one line naming the key, as every recipe error does
            err = exc.errors()[0]
            raise NestedKeyError(".".join(str(p) for p in err["loc"]),
                                 str(err["msg"]).removeprefix("Value error, ")) from None
        return {**mine, "benchmark": bench.name, "settings": settings}

    @model_serializer(mode="wrap")
    def _flat(self, handler: Any, info: SerializationInfo) -> dict[str, Any]:
        out = handler(self)
        settings = out.pop("settings", None)
        if isinstance(self.settings, StrictModel):
            settings = self.settings.model_dump(mode=info.mode)
        return {**out, **(settings or {})}

    @property
    def bench(self) -> Benchmark:
        """The registered benchmark, instantiated."""
        return get_benchmark(self.benchmark, self.modality)()

    def load(self, seed: int = 0) -> UnlearningTask:
        """The benchmark's task under this section's settings (named ``name`` if given)."""
        bench = self.bench
        task = bench.load(self.settings, seed)
        task.name = self.name or task.name
        task.metadata.setdefault("benchmark", self.benchmark)
        return task


__all__ = ["BENCHMARKS", "Benchmark", "Headline", "SplitRole", "TaskSection", "get_benchmark",
           "headline"]
