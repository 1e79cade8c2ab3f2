"""``obliviate sweep RECIPE``: methods × hyperparameters × seeds, resumable, then the report."""

from __future__ import annotations

import importlib
from typing import Annotated, Any

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
    address: Annotated[str | None, typer.Option(
        help="Ray cluster address (default: RAY_ADDRESS, else a local Ray runtime)")] = None,
    num_cpus: Annotated[int | None, typer.Option(
        help="CPUs of the local Ray runtime obliviate starts (default: all)")] = None,
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
    from obliviate.core.modality_sweep import root_axes, root_references
    from obliviate.core.sweep import split_sweep

    path, base, spec, module = _load(recipe, overrides, split_sweep, "sweep")
    modality = str(base.get("modality", "llm"))
    run, results = module.sweep(base, spec, output, executor=executor, command=command_line(),
                                log=typer.echo, address=address, num_cpus=num_cpus)
    axes, refs = root_axes(run, modality), root_references(run)
    width = max([len(r["cell_id"]) for r in results] + [4]) + 2
    typer.echo(f"{'cell':<{width}}{'status':<9}{'forgetting':>11}{'utility':>9}  settings")
    for r in results:
        scores, _ = axes.score(r.get("metrics", {}), refs)
        shown = [f"{v:>{w}.4f}" if v is not None else f"{'-':>{w}}"
                 for v, w in ((scores.get("forgetting"), 11), (scores.get("utility"), 9))]
        params = " ".join(f"{k.split('.')[-1]}={v}" for k, v in r.get("params", {}).items())
        typer.echo(f"{r['cell_id']:<{width}}{r.get('status', ''):<9}{''.join(shown)}  {params} "
                   f"seed={r.get('seed')}")
    _finish(run.root, report)


def _load(recipe: str, overrides: list[str] | None, split: Any, what: str
          ) -> tuple[Any, dict[str, Any], Any, Any]:
    """The recipe's path, its data without the section, the section, the modality's module."""
    from obliviate.core.recipe import apply_overrides, read_yaml

    path = resolve_recipe_path(recipe)
    base, spec = split(apply_overrides(read_yaml(path), list(overrides or [])), str(path))
    modality = str(base.get("modality", "llm"))
    if modality not in MODALITIES:
        fail(f"{path}: unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
    try:
        module = importlib.import_module(f"obliviate.{modality}.sweep")
    except ImportError as exc:
        fail(f"{what} is not available for {modality} ({exc})")
    if not hasattr(module, what):
        fail(f"{what} is not available for {modality}")
    return path, base, spec, module


def _finish(root: Any, report: bool) -> None:
    if report:
        from obliviate.core.report import write_report

        html, _ = write_report(root)
        typer.echo(f"report: {html}")
    typer.echo(f"run directory: {root}")


@friendly_errors
def search(
    recipe: Annotated[str, typer.Argument(
        help="YAML recipe with a `search:` section (or a packaged name, e.g. search_demo)")],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="recipe overrides as section.key=value, e.g. search.trials=24")] = None,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="run directory (default: runs/<recipe name>)")] = None,
    executor: Annotated[str, typer.Option(
        help="local (one trial after another) or ray (trials as Ray tasks; needs ray)"
    )] = "local",
    address: Annotated[str | None, typer.Option(
        help="Ray cluster address (default: RAY_ADDRESS, else a local Ray runtime)")] = None,
    num_cpus: Annotated[int | None, typer.Option(
        help="CPUs of the local Ray runtime obliviate starts (default: all)")] = None,
    report: Annotated[bool, typer.Option(help="write the HTML report at the end")] = True,
) -> None:
    """Multi-objective hyperparameter search (Optuna) over the report's axes, per method.

    The target and oracle are trained once; each trial unlearns the target with the setting
    the sampler proposes, in RUN_DIR/sweep/<cell id>/, is evaluated against the oracle and told
    to the study (Optuna RDB storage, SQLite in RUN_DIR/search/study.db by default). Rerunning
    continues the study without repeating finished trials. The recipe's search section, e.g.:

    \b
      search:
        methods: {npo: {}, grad_diff: {}}     # {} = ranges from the method's typed config
        shared: {unlearn.train.learning_rate: {low: 1.0e-4, high: 3.0e-2, log: true}}
        trials: 12
        sampler: tpe                          # tpe | nsga2 | random
    """
    from obliviate.core.search import split_search

    _, base, spec, module = _load(recipe, overrides, split_search, "search")
    run, summaries = module.search(base, spec, output, executor=executor, command=command_line(),
                                   log=typer.echo, address=address, num_cpus=num_cpus)
    typer.echo(f"{'method':<14}{'trials':>7}{'front':>7}{'hypervolume':>13}  reference point")
    for method, summary in summaries.items():
        typer.echo(f"{method:<14}{len(summary['trials']):>7}{len(summary['front']):>7}"
                   f"{summary['hypervolume']:>13.4f}  {summary['reference_point']} "
                   f"({', '.join(summary['objectives'])})")
    _finish(run.root, report)
