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
from obliviate.core.registry import BENCHMARKS, import_part
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
    recipe_schema: ClassVar[type[StrictModel] | None] = None
    """That recipe's schema when a benchmark script of its own runs it instead of the
    modality's commands (``obliviate recipe show`` reads a recipe so named with it)."""
    hub_id: ClassVar[str | None] = None

    def load(self, config: Any, seed: int = 0) -> UnlearningTask:
        raise NotImplementedError

    def default_name(self, config: Any) -> str:
        """The task's name when the recipe gives none."""
        return self.name

    @classmethod
    def headline_pairs(cls) -> list[tuple[str, str]]:
        return [(h.label, h.key) for h in cls.headline]

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """What the benchmark declares, as JSON-ready data (``obliviate benchmarks``)."""
        return {"name": cls.name, "modality": cls.modality,
                "summary": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
                "splits": dict(cls.splits), "suites": list(cls.suites),
                "headline": [h.label for h in cls.headline],
                "axes": {axis: list(exprs) for axis, exprs in cls.axes.items()},
                "oracle": cls.oracle, "recipe": cls.recipe, "hub_id": cls.hub_id}


def get_benchmark(name: str, modality: str) -> type[Benchmark]:
    """The registered benchmark (a one-line :class:`ConfigError` listing the known ones)."""
    registered(modality)
    return BENCHMARKS.get(name, modality)


def registered(modality: str | None = None) -> list[type[Benchmark]]:
    """The registered benchmarks (of ``modality``), by name. A modality registers its benchmarks
    when its ``obliviate.<modality>.benchmarks`` package is imported; a report read in a
    process that has not imported it yet (``modality`` named by a run record) imports it here,
    by that name: core names no modality."""
    if modality and not BENCHMARKS.entries(modality):
        import_part(modality, "benchmarks")  # an unknown modality has no benchmarks
    return [e.obj for e in BENCHMARKS.entries(modality)]


def _chosen(modality: str, benchmark: str | None) -> list[type[Benchmark]]:
    """The named benchmark, or (no name, or one not registered) every one of the modality."""
    every = registered(modality)
    named = [cls for cls in every if benchmark and cls.name == benchmark.lower()]
    return named or every


def headline(modality: str, benchmark: str | None = None) -> list[tuple[str, str]]:
    """The headline ``(label, key)`` pairs of a benchmark; without a name, every registered
    benchmark's of the modality (also for a name not registered: an older run), first
    declaration of a key kept (tables show the present ones)."""
    seen: dict[str, tuple[str, str]] = {}
    for cls in _chosen(modality, benchmark):
        for label, key in cls.headline_pairs():
            seen.setdefault(key, (label, key))
    return list(seen.values())


def declared_axes(modality: str, benchmark: str | None = None) -> dict[str, tuple[str, ...]]:
    """The report's axes (axis -> score expressions tried in order) that ``benchmark`` declares;
    without a name, or for one no longer registered (an older run), every registered
    benchmark's of the modality, in name order, the first declaration of an expression kept."""
    axes: dict[str, tuple[str, ...]] = {}
    for cls in _chosen(modality, benchmark):
        for axis, exprs in cls.axes.items():
            axes[axis] = axes.get(axis, ()) + tuple(e for e in exprs
                                                    if e not in axes.get(axis, ()))
    return axes


def run_benchmark(record: Mapping[str, Any], task: Mapping[str, Any] | None = None
                  ) -> str | None:
    """The benchmark a run's task came from: ``task.json``'s ``metadata.benchmark`` (written
    by :meth:`TaskSection.load`), else the recipe's ``task.benchmark`` in ``run.json``, else the
    older ``task.source``; ``None`` when the run names none (a task built in Python)."""
    task = task or record.get("task") or {}
    meta = task.get("metadata") or {}
    section = (record.get("recipe") or {}).get("task") or {}
    for value in (meta.get("benchmark"), section.get("benchmark"), meta.get("source"),
                  section.get("source")):
        if isinstance(value, str) and value:
            return value
    return None


def oracle_statement(record: Mapping[str, Any], task: Mapping[str, Any] | None = None
                     ) -> dict[str, Any]:
    """The oracle the run's benchmark expects next to the one the run has: ``{"benchmark",
    "expected", "actual", "retain_set"}`` (``retain_set``: whether the recorded oracle was trained
    on exactly the task's retain split; ``None`` when unknown)."""
    task = task or record.get("task") or {}
    modality = str(record.get("modality") or task.get("modality") or "")
    name = run_benchmark(record, task)
    match = [c for c in registered(modality) if name and c.name == name.lower()]
    expected = match[0].oracle if match else None
    stage = (record.get("stages") or {}).get("finetune_oracle")
    retain_name = (task.get("roles") or {}).get("retain")
    retain = (task.get("splits") or {}).get(retain_name) if retain_name else None
    if not stage:
        actual, same = "no oracle recorded (no finetune_oracle stage)", None
    else:
        split = stage.get("split") or {}
        base = (((stage.get("inputs") or {}).get("model") or {}).get("name_or_path")
                or ((record.get("recipe") or {}).get("model") or {}).get("name_or_path"))
        same = (split.get("sha256") == retain.get("sha256")) if retain and split else None
        which = {True: "the task's retain set", False: "NOT the task's retain set",
                 None: "data not recorded"}[same]
        actual = (f"fine-tuned{f' from {base}' if base else ''} on {split.get('name')} "
                  f"({split.get('n')} records: {which}), {stage.get('steps')} steps"
                  + ("" if stage.get("status") == "done" else f" [{stage.get('status')}]"))
    return {"benchmark": name, "expected": expected, "actual": actual, "retain_set": same}


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


__all__ = ["BENCHMARKS", "Benchmark", "Headline", "SplitRole", "TaskSection", "declared_axes",
           "get_benchmark", "headline", "oracle_statement", "registered", "run_benchmark"]
