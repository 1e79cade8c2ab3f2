"""``obliviate eval``: evaluate the models of a run, or score existing TOFU logs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from obliviate.cli.common import friendly_errors

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
