"""Helpers shared by the CLI commands: recipe loading, error handling, output."""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from obliviate.core.errors import ObliviateError
from obliviate.core.io import is_disk_full
from obliviate.core.recipe import apply_overrides, read_yaml, validate

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> None:
    message = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    typer.echo(f"error: {message}", err=True)  # always one line, whatever the exception said
    raise typer.Exit(code)


Force = Annotated[bool, typer.Option(
    "--force", help="re-run the stages this command covers even where their record is current; "
                    "on a run made with another recipe or other data: redo it with these")]
AllowModified = Annotated[bool, typer.Option(
    "--allow-modified", help="use models whose files differ from what the run recorded (the "
                             "record says so)")]

def _stopped(message: str, code: int = 2) -> None:
    from obliviate.core.rundir import fail_claimed

    fail_claimed(" ".join(str(message).split()))  # no stage stays "running" after an error
    fail(message, code)


def friendly_errors(func: F) -> F:
    """Turn user errors into one line on stderr and a non-zero exit, never a traceback; the
    stages the command was running are recorded as failed."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ObliviateError as exc:
            _stopped(str(exc))
        except FileNotFoundError as exc:
            _stopped(f"{exc.filename or exc}: file not found")
        except OSError as exc:  # permission denied, disk full, a file where a folder should be
            where = f"{exc.filename}: " if exc.filename else ""
            if is_disk_full(exc):
                _stopped(f"{where}no space left on device; free some space and re-run the same "
                         "command (finished stages are kept)")
            _stopped(f"{where}{exc.strerror or exc}")
        except KeyboardInterrupt:
            _stopped("interrupted; re-run the same command to resume", code=130)
        except Exception as exc:
            if is_disk_full(exc):
                _stopped("no space left on device while writing; free some and re-run the same "
                         "command (finished stages are kept)")
            raise

    return wrapper  # type: ignore[return-value]


def packaged_recipe(name: str) -> Path:
    """A recipe shipped inside the package (``obliviate/recipes/<name>.yaml``)."""
    return Path(str(resources.files("obliviate") / "recipes" / f"{name}.yaml"))


def resolve_recipe_path(recipe: str) -> Path:
    path = Path(recipe)
    if not path.exists() and not path.suffix and packaged_recipe(recipe).is_file():
        return packaged_recipe(recipe)
    return path


# modality -> "module:RecipeClass"; the CLI is the only place that knows every modality
MODALITIES = {
    "llm": "obliviate.llm.recipe:LLMRecipe",
    "diffusion": "obliviate.diffusion.recipe:DiffusionRecipe",
}


def load_any_recipe(recipe: str, overrides: list[str]) -> Any:
    """Load a recipe of either modality (by its ``modality`` key) with overrides applied."""
    path = resolve_recipe_path(recipe)
    data = apply_overrides(read_yaml(path), list(overrides))
    for section in ("sweep", "search"):  # `sweep=null` runs the recipe the sweep varies
        if data.get(section, None) is not None:
            raise ObliviateError(f"{path}: its `{section}:` section is run by `obliviate "
                                 f"{section} {recipe}`; this command runs a recipe without one "
                                 f"({section}=null drops it)")
        data.pop(section, None)
    schema = recipe_schema(path, data)
    own = own_recipe_benchmark(path, data)
    if own is not None and "task" not in data:
        raise ObliviateError(
            f"{path}: the {own.name} benchmark's own recipe (several tasks, its script "
            f"benchmarks/{own.name}/run.py runs it); these commands run one task: use a recipe "
            f"with task.benchmark: {own.name} (e.g. {own.name}_erase_style)")
    return validate(schema, data, source=str(path))


def own_recipe_benchmark(path: Path, data: dict[str, Any]) -> Any:
    """The registered benchmark whose own recipe class (its ``recipe_schema``, read by a script
    of its own) recipe ``data`` from ``path`` is (its ``name`` or file stem is that benchmark's
    packaged recipe); ``None`` for a pipeline recipe."""
    from obliviate.core.benchmark import registered

    return next((cls for cls in registered(str(data.get("modality", "llm")))
                 if cls.recipe_schema is not None and cls.recipe in (data.get("name"), path.stem)),
                None)


def recipe_schema(path: Path, data: dict[str, Any]) -> type[Any]:
    """The modality's recipe class for recipe ``data`` read from ``path``."""
    modality = data.get("modality", "llm")
    if not isinstance(modality, str):
        raise ObliviateError(f"{path}: modality must be a name ({', '.join(MODALITIES)}), "
                             f"got {type(modality).__name__}")
    schema = MODALITIES.get(modality)
    if schema is None:
        raise ObliviateError(f"{path}: unknown modality {modality!r}; known: "
                             f"{', '.join(MODALITIES)}")
    module, name = schema.rsplit(":", 1)
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ObliviateError(f"{path}: modality {modality!r} is not available ({exc})") from None


def pipeline_for(recipe: Any) -> Any:
    """The modality's pipeline module: every modality offers the same stage functions
    (``open_run``, ``prepare_task``, ``finetune_stage``, ``unlearn_stage``, ``evaluate_stage``,
    ``attack_stage``) and ``HEADLINE`` (the numbers its tables show first), so each CLI command
    is written once for both."""
    return pipeline_module(recipe.modality)


def pipeline_module(modality: str) -> Any:
    if modality not in MODALITIES:
        raise ObliviateError(f"unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
    return importlib.import_module(f"obliviate.{modality}.pipeline")


def set_threads() -> None:
    """Honour OMP_NUM_THREADS for torch (CPU runs on shared cores slow down with extra threads)."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        import torch

        torch.set_num_threads(int(threads))


def command_line() -> str:
    return " ".join(["obliviate", *sys.argv[1:]])
