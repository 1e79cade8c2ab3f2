"""``obliviate results RUN_DIR...``: the results store of one or many runs, queried or exported."""

from __future__ import annotations

from typing import Annotated

import typer

from obliviate.cli.common import friendly_errors


@friendly_errors
def results(
    run_dirs: Annotated[list[str], typer.Argument(help="run directories (e.g. runs/*)")],
    sql: Annotated[str | None, typer.Option(
        help="SQL over the `results` table, e.g. \"SELECT method, COUNT(*) FROM results "
             "GROUP BY method\"")] = None,
    export: Annotated[str | None, typer.Option(
        help="write every row to this .csv or .parquet file")] = None,
) -> None:
    """Every evaluated model, sweep cell and search trial of the given runs, as one table.

    Each run directory's rows (results.sqlite, plus its run.json evaluations and cells' done
    files) are gathered into one table with columns run_dir, kind (cell | trial | model), name,
    method, seed, config_id, params, metrics, cost, hashes, seconds, finished. Metrics are JSON:
    read one with json_extract(metrics, '$."tofu/forget/prob"').
    """
    from obliviate.core.store import open_many

    store = open_many(run_dirs)
    if export:
        typer.echo(f"wrote {store.export(export)}")
    rows = store.query(sql) if sql else store.query(
        "SELECT kind, method, COUNT(*) AS n, COUNT(DISTINCT run_dir) AS runs FROM results "
        "GROUP BY kind, method ORDER BY kind, method")
    if not rows:
        typer.echo("no results")
        return
    columns = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    typer.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        typer.echo("  ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))
