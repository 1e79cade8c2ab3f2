"""``--log-with``: the CLI's runs logged to experiment trackers (accelerate's), offline, under
``RUN_DIR/logs`` (see :mod:`obliviate.core.tracking`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import typer

LogWith = Annotated[list[str] | None, typer.Option(
    "--log-with", help="log to an experiment tracker, offline, under RUN_DIR/logs "
                       "(repeatable): tensorboard, mlflow, wandb, ...")]


def log_stages(run: Any, log_with: list[str] | None, kinds: Sequence[str]) -> None:
    """Log the run's finished stages of ``kinds`` not logged before."""
    if log_with:
        from obliviate.core.tracking import log_run

        log_run(run.read_record(), log_with, run.root / "logs", kinds)
