"""``obliviate``: fine-tune, unlearn, evaluate, attack and report — for LLMs and diffusion models.

Every experiment is one YAML recipe; any key can be overridden as ``section.key=value``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from obliviate import __version__
from obliviate.cli.audit import audit as audit_command
from obliviate.cli.benchmarks import benchmarks as benchmarks_command
from obliviate.cli.common import (
    AllowModified,
    Force,
    command_line,
    fail,
    friendly_errors,
    load_any_recipe,
    pipeline_for,
    set_threads,
)
from obliviate.cli.evaluate import eval_app
from obliviate.cli.recipe import recipe_app
from obliviate.cli.report import report as report_command
from obliviate.cli.results import results as results_command
from obliviate.cli.sweep import search as search_command
from obliviate.cli.sweep import sweep as sweep_command
from obliviate.cli.trackers import LogWith, log_stages
from obliviate.core.modelcard import write_run_cards

app = typer.Typer(
    name="obliviate", no_args_is_help=True, rich_markup_mode=None,
    help="Machine unlearning for generative AI: one CLI for LLMs and diffusion models.\n\n"
         "Start with `obliviate demo`; every command takes a YAML recipe plus key=value "
         "overrides, e.g. `obliviate finetune recipes/demo.yaml finetune.epochs=10`.")
app.add_typer(eval_app, name="eval")
app.add_typer(recipe_app, name="recipe")

Overrides = Annotated[list[str] | None, typer.Argument(
    help="recipe overrides as section.key=value (values are YAML), e.g. finetune.epochs=3")]
Output = Annotated[str | None, typer.Option(
    "--output", "-o", help="run directory (default: runs/<recipe name>)")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"obliviate {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version,
                                                is_eager=True, help="print the version")] = False
         ) -> None:
    """Machine unlearning for generative AI."""
    set_threads()


@app.command()
@friendly_errors
def finetune(
    recipe: Annotated[str, typer.Argument(help="YAML recipe (or a packaged name, e.g. demo)")],
    overrides: Overrides = None,
    role: Annotated[str, typer.Option(help="target, oracle or both")] = "both",
    output: Output = None,
    force: Force = False,
) -> None:
    """Train the target model (forget ∪ retain) and the oracle (retain only).

    Both use the recipe's model and finetune sections, checkpoint as they go, and resume when
    the command is run again on the same run directory.
    """

    if role not in ("target", "oracle", "both"):
        fail(f"--role must be target, oracle or both, not {role!r}")
    config = load_any_recipe(recipe, overrides or [])
    pipeline = pipeline_for(config)
    run = pipeline.open_run(config, output, command_line(), force=force)
    task = pipeline.prepare_task(config, run)
    roles = ("target", "oracle") if role == "both" else (role,)
    done = pipeline.finetune_stage(config, run, task, roles)  # type: ignore[arg-type]
    for name, stage in done.items():
        typer.echo(f"{name}: {stage['model_path']}  (loss {stage['final_loss']:.4f}, "
                   f"{stage['seconds']:.1f}s)")
    typer.echo(f"run directory: {run.root}")


@app.command()
@friendly_errors
def unlearn(
    recipe: Annotated[str, typer.Argument(help="YAML recipe (or a packaged name, e.g. demo)")],
    overrides: Overrides = None,
    method: Annotated[list[str] | None, typer.Option(
        "--method", "-m", help="method to run (repeatable); default: the recipe's list")] = None,
    output: Output = None,
    force: Force = False,
    allow_modified: AllowModified = False,
    log_with: LogWith = None,
) -> None:
    """Unlearn the forget set from the target with one or more methods.

    The target is the run's fine-tuned target (run `obliviate finetune` first) or
    unlearn.target=PATH. Each method writes models/unlearned/<method>/ (safetensors, or a prompt
    for prompt-only baselines) and a record of its config, data hashes, steps, wall time, peak
    memory and trainable parameters in run.json. Hyperparameters: unlearn.method_args.npo.beta=0.2;
    optimiser: unlearn.train.learning_rate=1e-5; LoRA: unlearn.lora.enabled=true.
    """

    config = load_any_recipe(recipe, overrides or [])
    pipeline = pipeline_for(config)
    run = pipeline.open_run(config, output, command_line(), force=force,
                            allow_modified=allow_modified)
    task = pipeline.prepare_task(config, run)
    if config.unlearn.requests or config.unlearn.scaling:  # requests over time, growing sets
        from obliviate.core.requests import run_requests, run_scaling

        if config.unlearn.requests:
            summary = run_requests(pipeline, config, run, task, method or None, command_line(),
                                   getattr(pipeline, "load_request_file", None))
            typer.echo(f"{len(summary['after'])} requests: {run.root / 'requests'}")
        if config.unlearn.scaling:
            summary = run_scaling(pipeline, config, run, task, method or None, command_line())
            typer.echo(f"{len(summary['after'])} forget-set sizes: {run.root / 'scaling'}")
        return
    done = pipeline.unlearn_stage(config, run, task, method or None, log_with=log_with)
    write_run_cards(run.root, run.read_record())
    log_stages(run, log_with, ("unlearn",))
    for name, stage in done.items():
        typer.echo(f"{name}: {model_folder(stage)}  ({stage['steps']} steps, "
                   f"{stage['seconds']:.1f}s)")
    typer.echo(f"run directory: {run.root}")


def model_folder(stage: dict) -> str:
    """Where an unlearned model loads from: its folder (``from_pretrained`` reads it), or for
    a prompt-only method the target plus the prompt it is used with."""
    from pathlib import Path

    folder = Path(stage['output'])
    if (folder / "config.json").is_file() or (folder / "model").is_dir():
        return str(folder)
    return f"{stage.get('target')} with the prompt {folder / 'prompt.json'}"


@app.command("methods")
def list_methods() -> None:
    """List the registered unlearning methods with their papers."""
    import importlib

    from obliviate.cli.common import MODALITIES
    from obliviate.core.registry import METHODS

    for modality in MODALITIES:  # importing a modality's catalogue registers its methods
        try:
            importlib.import_module(f"obliviate.{modality}.methods")
        except ImportError as exc:
            typer.echo(f"({modality} methods unavailable: {exc})", err=True)

    for entry in METHODS.entries():
        paper = getattr(entry.obj, "paper", "")
        typer.echo(f"{entry.modality:<10}{entry.name:<18}{entry.summary}  [{paper}]")


app.command("benchmarks")(benchmarks_command)


@app.command()
@friendly_errors
def attack(
    recipe: Annotated[str, typer.Argument(help="YAML recipe (or a packaged name, e.g. demo)")],
    overrides: Overrides = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help="target or unlearned/<method> (repeatable); default: all")] = None,
    name: Annotated[list[str] | None, typer.Option(
        "--attack", "-a", help="attack to run (repeatable); default: the recipe's list")] = None,
    output: Output = None,
    force: Force = False,
    allow_modified: AllowModified = False,
    log_with: LogWith = None,
) -> None:
    """Attack the run's models: does the forgetting survive relearning, quantization,
    rephrasing and white-box probes?

    Every attack measures the same forget probe on the model and on the oracle, so "recovered"
    means "above what a model that never saw the data shows". Results:
    RUN_DIR/attacks/<model>/<attack>.json.
    """

    config = load_any_recipe(recipe, overrides or [])
    pipeline = pipeline_for(config)
    run = pipeline.open_run(config, output, command_line(), force=force,
                            allow_modified=allow_modified)
    task = pipeline.prepare_task(config, run)
    results = pipeline.attack_stage(config, run, task, model or None, name or None, force=force)
    write_run_cards(run.root, run.read_record())
    log_stages(run, log_with, ("attack",))
    typer.echo(format_attacks(results))
    typer.echo(f"results: {run.root / 'attacks'}")


def format_attacks(results: dict[str, dict[str, dict]]) -> str:
    """A fixed-width table: the probe plain, under attack, the oracle's, and the recovery."""
    rows = [(m, a, r) for m, by_attack in results.items() for a, r in by_attack.items()]
    # each name column as wide as its longest entry (a long method, attack or metric name)
    wide = [max([floor, *(len(str(v)) for v in values)]) + 2 for floor, values in (
        (24, [m for m, _, _ in rows]), (12, [a for _, a, _ in rows]),
        (18, [r.get("metric", "") for _, _, r in rows]))]
    lines = [f"{'model':<{wide[0]}}{'attack':<{wide[1]}}{'metric':<{wide[2]}}{'plain':>9}"
             f"{'attacked':>10}{'oracle':>9}{'recovery':>10}"]
    for model_name, attack_name, r in rows:
        recovery = r.get("recovery")
        cells = [(r.get("plain"), 9), (r.get("attacked"), 10), (r.get("oracle_attacked"), 9)]
        shown = "".join(f"{v:>{w}.3f}" if v is not None else f"{'-':>{w}}" for v, w in cells)
        lines.append(f"{model_name:<{wide[0]}}{attack_name:<{wide[1]}}"
                     f"{r.get('metric', ''):<{wide[2]}}{shown}"
                     + (f"{recovery:>+10.3f}" if recovery is not None else ""))
    return "\n".join(lines)


app.command("sweep")(sweep_command)
app.command("search")(search_command)
app.command("results")(results_command)
app.command("report")(report_command)
app.command("audit")(audit_command)


@app.command()
@friendly_errors
def demo(
    overrides: Overrides = None,
    output: Output = None,
    force: Force = False,
    log_with: LogWith = None,
) -> None:
    """The embedded-default demo: synthetic facts → target and oracle → unlearn → evaluate →
    attack every model → report, each weight-changing method over 3 unlearning seeds.

    Nothing is downloaded. Runs the packaged recipe `demo` (see `obliviate/recipes/demo.yaml`);
    any key can be overridden, e.g. `obliviate demo unlearn.methods=[npo]`.
    """
    from obliviate.cli.demo import run_seeds
    from obliviate.cli.evaluate import echo_warnings, format_summary, recipe_headline
    from obliviate.cli.report import format_verdict
    from obliviate.core.report import write_report

    config = load_any_recipe("demo", overrides or [])
    pipeline = pipeline_for(config)
    run = pipeline.open_run(config, output, command_line(), force=force)
    task = pipeline.prepare_task(config, run)
    typer.echo(f"task {task.name}: forget {len(task.forget)} facts, retain {len(task.retain)}")
    pipeline.finetune_stage(config, run, task)
    pipeline.unlearn_stage(config, run, task, log_with=log_with)
    summaries = pipeline.evaluate_stage(config, run, task)
    attacks = pipeline.attack_stage(config, run, task)
    run_seeds(config, run, typer.echo)  # unlearning seeds 1 and 2: mean ± std over 3 seeds
    write_run_cards(run.root, run.read_record())
    log_stages(run, log_with, ("unlearn", "eval", "attack"))
    html, data = write_report(run.root)
    typer.echo(format_summary(summaries, recipe_headline(config)))
    echo_warnings(run)
    typer.echo(format_attacks(attacks))
    typer.echo(format_verdict(data))
    typer.echo(f"run directory: {run.root}")
    typer.echo(f"report: {html}")


if __name__ == "__main__":  # pragma: no cover
    app()
