"""Helpers shared by the CLI commands: recipe loading, error handling, output."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import typer

from obliviate.core.errors import ObliviateError
from obliviate.core.recipe import load_recipe, read_yaml

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def friendly_errors(func: F) -> F:
    """Turn user errors into one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ObliviateError as exc:
            fail(str(exc))
        except FileNotFoundError as exc:
            fail(f"{exc.filename or exc}: file not found")
        except KeyboardInterrupt:
            fail("interrupted; re-run the same command to resume", code=130)

    return wrapper  # type: ignore[return-value]


def packaged_recipe(name: str) -> Path:
    """A recipe shipped inside the package (``obliviate/recipes/<name>.yaml``)."""
    return Path(str(resources.files("obliviate") / "recipes" / f"{name}.yaml"))


def resolve_recipe_path(recipe: str) -> Path:
    path = Path(recipe)
    if not path.exists() and not path.suffix and packaged_recipe(recipe).is_file():
        return packaged_recipe(recipe)
    return path


def load_any_recipe(recipe: str, overrides: list[str]) -> Any:
    """Load a recipe of either modality (by its ``modality`` key) with overrides applied."""
    path = resolve_recipe_path(recipe)
    modality = read_yaml(path).get("modality", "llm")
    for item in overrides:
        if item.startswith("modality="):
            modality = item.split("=", 1)[1]
    if modality == "llm":
        from obliviate.llm.recipe import LLMRecipe

        return load_recipe(LLMRecipe, path, overrides)
    raise ObliviateError(f"{path}: modality {modality!r} is not available; known: llm")


def set_threads() -> None:
    """Honour OMP_NUM_THREADS for torch (CPU runs on shared cores slow down with extra threads)."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        import torch

        torch.set_num_threads(int(threads))


def command_line() -> str:
    return " ".join(["obliviate", *sys.argv[1:]])
