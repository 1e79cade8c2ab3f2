"""``obliviate recipe show NAME``: every key of a recipe with its type, value, default and
meaning, read from the typed configs (pydantic fields and their descriptions), so shrinking a
recipe needs no source reading."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from obliviate.cli.common import (
    friendly_errors,
    own_recipe_benchmark,
    recipe_schema,
    resolve_recipe_path,
)

recipe_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="Show what a recipe's keys are and mean.")


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    for prefix in ("typing.", "obliviate.", "pydantic."):
        text = text.replace(prefix, "")
    return text.replace("NoneType", "None")


def _short(value: Any, width: int = 40) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def _doc(model: type[BaseModel]) -> str:
    lines = (model.__doc__ or "").strip().splitlines()
    return lines[0] if lines else ""


def describe(config: BaseModel, prefix: str = "") -> Iterator[tuple[str, str, str, str, str]]:
    """``(key, type, value, default, meaning)`` for every field of ``config``, nested configs
    walked (their own docstring's first line is the meaning of the section)."""
    from obliviate.core.benchmark import TaskSection

    for name, info in type(config).model_fields.items():
        key = f"{prefix}{name}"
        value = getattr(config, name)
        if isinstance(config, TaskSection) and name == "settings" and \
                isinstance(value, BaseModel):  # the benchmark's keys sit in the task section
            yield from describe(value, prefix)
            continue
        if isinstance(value, BaseModel):
            yield key, type(value).__name__, "", "", _doc(type(value))
            yield from describe(value, f"{key}.")
            continue
        default = info.get_default(call_default_factory=True) \
            if not info.is_required() else "(required)"
        yield (key, _type_name(info.annotation), _short(value), _short(default),
               info.description or "")


def method_sections(recipe: BaseModel) -> Iterator[tuple[str, str, str, str, str]]:
    """The hyperparameters of each method the recipe runs (``unlearn.method_args.<name>``)."""
    unlearn = getattr(recipe, "unlearn", None)
    if unlearn is None:
        return
    modality = getattr(recipe, "modality", "llm")
    importlib.import_module(f"obliviate.{modality}.methods")
    pipeline = importlib.import_module(f"obliviate.{modality}.pipeline")
    for name in getattr(unlearn, "methods", []):
        # as a run resolves it: an LLM method's training keys (wmdp's RMU learning_rate) are
        # training settings, not the method's hyperparameters
        # the method's own seed as the recipe writes it (a run adds the recipe's seed to it)
        cls, config = pipeline.method_config(recipe.model_copy(update={"seed": 0}), name)
        key = f"unlearn.method_args.{name}"
        yield key, cls.__name__, "", "", f"{_doc(cls)} [{cls.paper}]"
        yield from describe(config, f"{key}.")


def attack_sections(recipe: BaseModel) -> Iterator[tuple[str, str, str, str, str]]:
    """The settings of each attack the recipe runs (``attack.options.<name>``)."""
    from obliviate.core.registry import ATTACKS

    section = getattr(recipe, "attack", None)
    if section is None:
        return
    modality = getattr(recipe, "modality", "llm")
    importlib.import_module(f"obliviate.{modality}.attacks")
    for name in getattr(section, "attacks", []):
        cls = ATTACKS.get(name, modality)
        config = cls.config_class.model_validate((section.options or {}).get(name, {}))
        key = f"attack.options.{name}"
        yield key, cls.__name__, "", "", _doc(cls)
        yield from describe(config, f"{key}.")


def _recipe_and_sections(recipe: str, overrides: list[str]) -> tuple[BaseModel,
                                                                     dict[str, BaseModel]]:
    """The recipe with overrides applied, validated as the commands that run it read it, and
    its ``sweep:`` / ``search:`` sections (``obliviate sweep`` / ``search``), validated.

    A recipe that a benchmark script of its own runs (its ``name`` is the packaged recipe of a
    benchmark with a :attr:`~obliviate.core.benchmark.Benchmark.recipe_schema`) is read with
    that schema."""
    from obliviate.core.recipe import apply_overrides, read_yaml, validate
    from obliviate.core.search import split_search
    from obliviate.core.sweep import split_sweep

    path = resolve_recipe_path(recipe)
    data = apply_overrides(read_yaml(path), overrides)
    sections: dict[str, BaseModel] = {}
    for name, split in (("sweep", split_sweep), ("search", split_search)):
        if data.get(name) is not None:  # `sweep=null` drops the section, as a run command does
            sections[name] = split(data, str(path))[1]
    data = {k: v for k, v in data.items() if k not in ("sweep", "search")}
    schema = recipe_schema(path, data)  # also checks the modality
    own = own_recipe_benchmark(path, data)
    return validate(own.recipe_schema if own is not None else schema, data,
                    source=str(path)), sections


@recipe_app.command("show")
@friendly_errors
def show(
    recipe: Annotated[str, typer.Argument(help="YAML recipe or a packaged name (demo, mnist)")],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="recipe overrides as section.key=value")] = None,
) -> None:
    """Print every key of RECIPE: type, value in this recipe, default, meaning.

    The method and attack sections list each one's own settings (paper defaults); any key can
    be set in the YAML file or as section.key=value on the command line.
    """
    config, sections = _recipe_and_sections(recipe, overrides or [])
    rows = [*describe(config), *method_sections(config), *attack_sections(config),
            *(row for name, spec in sections.items() for row in describe(spec, f"{name}."))]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    typer.echo(f"{'key':<{widths[0]}}  {'type':<{widths[1]}}  {'value':<{widths[2]}}  "
               "default | meaning")
    for key, kind, value, default, meaning in rows:
        if not kind or value == "" and default == "":  # a section heading
            typer.echo(f"{key}  ({kind}) {meaning}".rstrip())
            continue
        tail = f"{default}" + (f" | {meaning}" if meaning else "")
        typer.echo(f"{key:<{widths[0]}}  {kind:<{widths[1]}}  {value:<{widths[2]}}  {tail}")
