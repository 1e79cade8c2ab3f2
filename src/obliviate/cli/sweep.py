"""``obliviate sweep RECIPE``: methods × hyperparameters × seeds, resumable, then the report."""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

from obliviate.cli.common import (
    MODALITIES,
    command_line,
    fail,
    friendly_errors,
    resolve_recipe_path,
)


@friendly_errors
def sweep(
    recipe: Annotated[str, typer.Argument(
        help="YAML recipe with a `sweep:` section (or a packaged name, e.g. sweep_demo)")],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="recipe overrides as section.key=value, e.g. sweep.seeds=[0,1]")] = None,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="run directory (default: runs/<recipe name>)")] = None,
    executor: Annotated[str, typer.Option(
        help="local (one cell after another) or ray (each cell a Ray task; needs ray)"
    )] = "local",
    report: Annotated[bool, typer.Option(help="write the HTML report at the end")] = True,
) -> None:
    """Run a grid of methods × hyperparameters × seeds against one target and oracle.

    The target and oracle are trained once in the run directory; each cell unlearns the
    target with its settings in RUN_DIR/sweep/<cell id>/ and is evaluated against the oracle.
    A finished cell leaves a `done` file and is skipped when the command runs again, so an
    interrupted sweep resumes. The recipe's sweep section, e.g.:

    \b
      sweep:
        methods: {npo: {beta: [0.05, 0.1]}, grad_diff: {}}
        grid: {unlearn.train.learning_rate: [0.0003, 0.001]}
        seeds: [0, 1]
    """
    from obliviate.core.axes import AxisMap
    from obliviate.core.recipe import apply_overrides, read_yaml
    from obliviate.core.sweep import split_sweep

    path = resolve_recipe_path(recipe)
    base, spec = split_sweep(apply_overrides(read_yaml(path), list(overrides or [])), str(path))
    modality = str(base.get("modality", "llm"))
    if modality not in MODALITIES:
        fail(f"{path}: unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
    try:
        module = importlib.import_module(f"obliviate.{modality}.sweep")
    except ImportError as exc:
        fail(f"sweeps are not available for {modality} ({exc})")
    run, results = module.sweep(base, spec, output, executor=executor, command=command_line(),
                                log=typer.echo)
    axes = AxisMap.for_modality(modality)
    width = max([len(r["cell_id"]) for r in results] + [4]) + 2
    typer.echo(f"{'cell':<{width}}{'status':<9}{'forgetting':>11}{'utility':>9}  settings")
    for r in results:
        scores, _ = axes.score(r.get("metrics", {}))
        shown = [f"{v:>{w}.4f}" if v is not None else f"{'-':>{w}}"
                 for v, w in ((scores.get("forgetting"), 11), (scores.get("utility"), 9))]
        params = " ".join(f"{k.split('.')[-1]}={v}" for k, v in r.get("params", {}).items())
        typer.echo(f"{r['cell_id']:<{width}}{r.get('status', ''):<9}{''.join(shown)}  {params} "
                   f"seed={r.get('seed')}")
    if report:
        from obliviate.core.report import write_report

        html, _ = write_report(run.root)
        typer.echo(f"report: {html}")
    typer.echo(f"run directory: {run.root}")
