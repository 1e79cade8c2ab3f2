"""``obliviate eval``: evaluate the models of a run, or score existing TOFU logs."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from obliviate.cli.common import AllowModified, Force, friendly_errors
from obliviate.cli.trackers import LogWith

eval_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="Evaluate the models of a run, or score existing TOFU logs.")


@eval_app.command("score")
@friendly_errors
def score(
    log: Annotated[str, typer.Argument(
        help="evaluation log: TOFU's legacy format (one JSON or its output folder) or "
             "OpenUnlearning's TOFU_EVAL.json")],
    oracle: Annotated[str | None, typer.Option(
        help="the oracle's (retain-only model's) log, for Forget Quality")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    ds_size: Annotated[int | None, typer.Option(
        help="score the first N questions of each split (TOFU's published logs: 300)")] = None,
    ks_method: Annotated[str, typer.Option(
        help="scipy.stats.ks_2samp method: auto, exact or asymp")] = "auto",
) -> None:
    """Score a TOFU evaluation log: Model Utility, Forget Quality and the 12 components.

    The aggregation is TOFU's own (Maini et al. 2024), reproduced exactly.
    """
    from obliviate.llm.evaluation.tofu_aggregate import load_eval_log, score_tofu

    items = load_eval_log(log)
    oracle_items = load_eval_log(oracle, splits=("forget",)) if oracle else None
    result = score_tofu(items, oracle_items, ds_size=ds_size, ks_method=ks_method)
    if as_json:
        typer.echo(json.dumps(result.to_flat_dict(), indent=2))
    else:
        typer.echo(result.format_table())


@eval_app.command("run")
@friendly_errors
def run_eval(
    recipe: Annotated[str, typer.Argument(help="YAML recipe (or a packaged name, e.g. demo)")],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="recipe overrides as section.key=value")] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help="target, oracle or unlearned/<method> (repeatable); default: all")
    ] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="run directory")] = None,
    force: Force = False,
    allow_modified: AllowModified = False,
    log_with: LogWith = None,
) -> None:
    """Evaluate the run's models with the recipe's suites (TOFU, MIA, memorisation).

    The oracle is evaluated first; its TOFU and MIA results give every other model's Forget
    Quality and PrivLeak. Results: RUN_DIR/eval/<model>/<suite>.json.
    """
    from obliviate.cli.common import command_line, load_any_recipe, pipeline_for
    from obliviate.cli.trackers import log_stages
    from obliviate.core.modelcard import write_run_cards

    config = load_any_recipe(recipe, overrides or [])
    pipeline = pipeline_for(config)
    run = pipeline.open_run(config, output, command_line(), force=force,
                            allow_modified=allow_modified)
    task = pipeline.prepare_task(config, run)
    summaries = pipeline.evaluate_stage(config, run, task, model or None, force=force)
    write_run_cards(run.root, run.read_record())  # the model cards show the new metrics
    log_stages(run, log_with, ("eval",))
    typer.echo(format_summary(summaries, recipe_headline(config)))
    echo_warnings(run)
    typer.echo(f"results: {run.root / 'eval'}")


def recipe_headline(config: Any) -> list[tuple[str, str]]:
    """The headline numbers ``(label, summary key)`` the recipe's benchmark declares."""
    from obliviate.core.benchmark import headline

    return headline(config.modality, config.task.benchmark)


def echo_warnings(run) -> None:
    """The run's warnings under a table: numbers a reader should not take at face value."""
    from obliviate.core.integrity import run_warnings

    for line in run_warnings(run):
        typer.echo(f"warning: {line}")


def format_summary(summaries: dict[str, dict[str, float]],
                   headline: list[tuple[str, str]]) -> str:
    """A fixed-width table of the ``headline`` numbers (label, summary key) of each model; the
    run's benchmark says which numbers those are (:func:`recipe_headline`)."""
    present = [(label, key) for label, key in headline
               if any(key in s for s in summaries.values())]
    width = max([len(n) for n in summaries] + [5]) + 2
    lines = ["model".ljust(width) + "".join(f"{label:>14}" for label, _ in present)]
    for name, summary in summaries.items():
        cells = []
        for _, key in present:
            value = summary.get(key)
            cells.append(f"{value:>14.4g}" if isinstance(value, (int, float)) else f"{'-':>14}")
        lines.append(name.ljust(width) + "".join(cells))
    return "\n".join(lines)
