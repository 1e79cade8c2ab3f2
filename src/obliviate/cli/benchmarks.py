"""``obliviate benchmarks``: the registered benchmarks and what each declares."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from obliviate.cli.common import MODALITIES, fail


def benchmark_rows(modality: str | None = None) -> list[dict[str, Any]]:
    """Every registered benchmark's declaration (:meth:`Benchmark.describe`), by modality and
    name; importing each modality's benchmarks registers them."""
    from obliviate.core.benchmark import registered

    if modality is not None and modality not in MODALITIES:
        fail(f"--modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
    chosen = [modality] if modality else list(MODALITIES)
    return [cls.describe() for m in chosen for cls in registered(m)]


def format_benchmarks(rows: list[dict[str, Any]]) -> str:
    """One block per benchmark: its summary, then one line per declaration."""
    blocks = []
    for row in rows:
        splits = ", ".join(f"{name} ({role})" for name, role in row["splits"].items())
        recipe = (f"{row['recipe']}  (obliviate/recipes/{row['recipe']}.yaml)" if row["recipe"]
                  else f"none packaged (a recipe with task.benchmark: {row['name']})")
        blocks.append("\n".join([
            f"{row['modality']:<10}{row['name']:<16}{row['summary']}",
            f"{'':<12}splits    {splits or '-'}",
            f"{'':<12}suites    {', '.join(row['suites']) or '-'}",
            f"{'':<12}headline  {', '.join(row['headline']) or '-'}",
            f"{'':<12}oracle    {row['oracle']}",
            f"{'':<12}recipe    {recipe}",
            f"{'':<12}hub id    {row['hub_id'] or '-'}"]))
    return "\n".join(blocks)


def benchmarks(
    modality: Annotated[str | None, typer.Option(
        help=f"only this modality's ({', '.join(MODALITIES)})")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON list")] = False,
) -> None:
    """List the registered benchmarks: their splits and roles, default suites, headline
    numbers, the oracle each expects, its packaged recipe and its hub id.

    A recipe selects one with task.benchmark: NAME; the report scores a run on the axes its
    benchmark declares (--json lists them)."""
    rows = benchmark_rows(modality)
    typer.echo(json.dumps(rows, indent=2) if as_json else format_benchmarks(rows))
