"""``obliviate report RUN_DIR``: the HTML + JSON report and the markdown leaderboard."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import typer

from obliviate.cli.common import fail, friendly_errors


def format_verdict(json_path: Path) -> str:
    """The report's verdict as the closing lines of a command, each with its evidence."""
    from obliviate.core.io import read_json
    from obliviate.core.report_html import sections_of

    data = read_json(json_path)
    page = json_path.parent / "report.html"
    lines = ["verdict:"]
    for item in data.get("verdict", []):
        links = ", ".join(f"{page}#{s}" for s in sections_of(item))
        lines.append(f"  - {item['text']}\n    evidence: {links}")
    return "\n".join(lines)


def refresh_costs(run_dir: Path, modality: str) -> None:
    """Let the modality write ``cost.json`` (FLOPs estimates need its tokenizer); best effort:
    the report falls back to the costs in ``run.json``."""
    try:
        module = importlib.import_module(f"obliviate.{modality}.sweep")
    except ImportError:
        return
    writer = getattr(module, "write_costs", None)
    if writer is None or not (run_dir / "recipe.yaml").is_file():
        return
    try:
        writer(run_dir)
    except Exception as exc:  # noqa: BLE001  (an estimate must not block the report)
        typer.echo(f"note: no FLOPs estimates ({type(exc).__name__}: {exc})", err=True)


@friendly_errors
def report(
    run_dirs: Annotated[list[str], typer.Argument(
        help="a run directory (e.g. runs/demo), or several (runs/*) for one report across "
             "them")],
    rule: Annotated[str | None, typer.Option(
        help="how each method's reported point is chosen: threshold:T (max utility with "
             "forgetting >= T; default threshold:0.5 or the sweep's rule), proxy:KEY "
             "(max of a metric; proxy:-KEY minimises) or oracle (closest to the oracle; "
             "needs --allow-oracle)")] = None,
    forgetting: Annotated[str | None, typer.Option(
        help="score expression for the forgetting axis, e.g. 'close(tofu/forget/rouge)', or "
             "'raw' for the raw axis (1 - forget prob, no oracle)")] = None,
    utility: Annotated[str | None, typer.Option(
        help="score expression for the utility axis, e.g. 'tofu/model_utility'")] = None,
    robustness: Annotated[str | None, typer.Option(
        help="score expression for the robustness axis")] = None,
    allow_oracle: Annotated[bool, typer.Option(
        help="allow a selection rule that reads oracle-derived metrics (the report says so)"
    )] = False,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="with several runs: where the report across them goes "
                               "(default: report_across/ beside the first run)")] = None,
) -> None:
    """Write RUN_DIR/report/: report.html (self-contained), report.json, leaderboard.md.

    With several run directories (`obliviate report runs/*`), one report across them: each run
    scored against its own oracle, one leaderboard and one Pareto plot, from the runs' results
    stores (exported beside it as results.csv).

    The page opens with a verdict (closest to the oracle on all axes, over-forgetting,
    output-only suppression, what nothing reached) and the ranking by distance to the oracle
    (unattacked models unranked). It holds the task and its data hashes, the methods and
    their configs, every
    evaluated model's metrics (oracle highlighted), the Pareto front of forgetting against
    utility (robustness under attack as a third axis; seed error bars), attacks, cost against
    retraining, and sample generations or images. Score expressions: KEY, 1-KEY, -KEY or
    hmean/mean/max/min(KEY, ...), or the oracle-relative close/kept/recovered(KEY, ...) (see
    obliviate.core.axes); keys as in run.json's eval summaries.
    """
    from obliviate.core.io import read_json
    from obliviate.core.report import write_report

    axes = {k: v for k, v in (("forgetting", forgetting), ("utility", utility),
                              ("robustness", robustness)) if v}
    if len(run_dirs) > 1:
        from obliviate.core.report_runs import write_runs_report

        for d in run_dirs:
            if not (Path(d) / "run.json").is_file():
                fail(f"{d}: not a run directory (no run.json)")
        html, data = write_runs_report(run_dirs, output, rule=rule, axes=axes or None,
                                       allow_oracle=allow_oracle)
        typer.echo(f"report across {len(run_dirs)} runs: {html}")
        typer.echo(f"leaderboard: {html.parent / 'leaderboard.md'}")
        typer.echo(f"every result: {html.parent / 'results.csv'}")
        return
    root = Path(run_dirs[0])
    if not (root / "run.json").is_file():
        fail(f"{root}: not a run directory (no run.json)")
    modality = read_json(root / "run.json").get("modality", "llm")
    refresh_costs(root, modality)
    html, data = write_report(root, rule=rule, axes=axes or None, allow_oracle=allow_oracle)
    typer.echo(format_verdict(data))
    typer.echo(f"report: {html}")
    typer.echo(f"data: {data}")
    typer.echo(f"leaderboard: {html.parent / 'leaderboard.md'}")
