"""One leaderboard and one front across several run directories (``obliviate report runs/*``).

Each run is scored against its own oracle and target (a model is only comparable with the
model trained without *its* forget set), exactly as its own report does; the rows of every run
then meet in one table. The numbers come from the runs' results stores
(:mod:`obliviate.core.store`: every evaluated model, sweep cell and search trial), which this
report also exports as ``results.csv`` beside the page.

Written to ``OUTPUT/`` (default: ``report_across/`` beside the first run): ``report.json``,
``leaderboard.md`` and a self-contained ``report.html`` with the Pareto plot of every run's
configurations.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

from obliviate.core.errors import DataError
from obliviate.core.hypervolume import front_indices
from obliviate.core.report import collect, write_report_files
from obliviate.core.rundir import utc_now
from obliviate.core.store import open_many

AXES = ("forgetting", "utility", "robustness")


def collect_runs(run_dirs: list[str | Path], rule: str | None = None,
                 axes: dict[str, str] | None = None, allow_oracle: bool = False
                 ) -> dict[str, Any]:
    """Every run's ranking merged into one leaderboard, and the front across runs."""
    roots = [Path(d) for d in run_dirs]
    names = _short_names(roots)
    store = open_many(roots)
    counts = {Path(r["run_dir"]).resolve(): r for r in store.query(
        "SELECT run_dir, COUNT(*) AS rows, SUM(kind = 'model') AS models, "
        "SUM(kind = 'cell') AS cells, SUM(kind = 'trial') AS trials FROM results "
        "GROUP BY run_dir")}
    runs, leaderboard, configurations = [], [], []
    for root, name in zip(roots, names, strict=True):
        data = collect(root, rule, axes, allow_oracle)
        stored = counts.get(root.resolve(), {})
        runs.append({"name": name, "run_dir": str(root), "title": data["title"],
                     "task": (data.get("task") or {}).get("name"), "modality": data["modality"],
                     "verdict": data["verdict"], "rows": stored.get("rows", 0),
                     "models": stored.get("models", 0), "cells": stored.get("cells", 0),
                     "trials": stored.get("trials", 0)})
        for entry in data["ranking"]:
            leaderboard.append({**entry, "run": name, "run_rank": entry["rank"]})
        for config in data["pareto"]["configurations"]:
            configurations.append({**config, "run": name,
                                   "method": f"{name}: {config['method']}",
                                   "config_id": f"{name}:{config['config_id']}"})
    ranked = sorted((e for e in leaderboard if e["distance"] is not None
                     and e["run_rank"] is not None), key=lambda e: e["distance"])
    for rank, entry in enumerate(ranked, start=1):
        entry["rank"] = rank
    unranked = [e for e in leaderboard if e not in ranked]
    for entry in unranked:
        entry["rank"] = None
    points = [[c["mean"].get(a) for a in AXES[:2]] for c in configurations]
    scored = [i for i, p in enumerate(points) if None not in p]
    front = [configurations[scored[i]]["config_id"]
             for i in front_indices([points[i] for i in scored])]
    return {"title": f"obliviate report across {len(roots)} runs", "generated": utc_now(),
            "runs": runs, "leaderboard": ranked + unranked,
            "pareto": {"axes": list(AXES[:2]), "configurations": configurations,
                       "front": front, "reference_points": {}},
            "reported": {}, "store": store}


def _short_names(roots: list[Path]) -> list[str]:
    names = [r.name or str(r) for r in roots]
    if len(set(names)) == len(names):
        return names
    return [str(r) for r in roots]


def write_runs_report(run_dirs: list[str | Path], output: str | Path | None = None,
                      rule: str | None = None, axes: dict[str, str] | None = None,
                      allow_oracle: bool = False) -> tuple[Path, Path]:
    """Write the cross-run report; returns (report.html, report.json)."""
    if len(run_dirs) < 2:
        raise DataError("a report across runs needs at least two run directories")
    data = collect_runs(run_dirs, rule, axes, allow_oracle)
    out = Path(output) if output else Path(run_dirs[0]).parent / "report_across"
    out.mkdir(parents=True, exist_ok=True)
    store = data.pop("store")
    store.export(out / "results.csv")
    return write_report_files(out, data, render_markdown, render_page)


def _row(e: dict[str, Any]) -> list[str]:
    def num(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, (int, float)) else "–"

    mean, std = e.get("mean") or {}, e.get("std") or {}
    cells = [f"{num(mean.get(a))}" + (f" ± {num(std.get(a))}" if std.get(a) else "")
             for a in AXES]
    return [str(e["rank"] or "–"), e["run"], e["method"], str(e.get("seeds", "")), *cells,
            num(e.get("distance")), e.get("reason") or ""]


HEADER = ["rank", "run", "method", "seeds", *AXES, "distance to oracle", "note"]


def render_markdown(data: dict[str, Any]) -> str:
    lines = [f"# {data['title']}", "",
             "Each run's models are scored against that run's own oracle and target; ranked by "
             "the Euclidean distance to the oracle's point on forgetting × utility × robustness "
             "(1 = the oracle on each). A model that was not attacked is not ranked.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_row(e)) + " |" for e in data["leaderboard"]]
    lines += ["", "## Runs", ""]
    for run in data["runs"]:
        lines.append(f"- **{run['name']}** (`{run['run_dir']}`, task {run['task']}): "
                     f"{run['models']} models, {run['cells']} sweep cells, {run['trials']} "
                     "search trials in its results store")
        lines += [f"  - {v['text']}" for v in run["verdict"]]
    return "\n".join(lines) + "\n"


def render_page(data: dict[str, Any], png: bytes | None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in _row(e)) + "</tr>"
                   for e in data["leaderboard"])
    plot = (f'<img alt="Pareto plot" style="max-width:100%" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
            if png else "")
    runs = "".join(f"<li><b>{escape(r['name'])}</b> ({escape(r['run_dir'])}): "
                   + "; ".join(escape(v["text"]) for v in r["verdict"]) + "</li>"
                   for r in data["runs"])
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>'
            f"{escape(data['title'])}</title></head><body style='font-family:sans-serif'>"
            f"<h1>{escape(data['title'])}</h1><p>generated {escape(data['generated'])}</p>"
            f"<h2>Leaderboard</h2><table border=1 cellpadding=3><tr>{head}</tr>{body}</table>"
            f"<h2>Pareto front across runs</h2>{plot}<h2>Runs and their verdicts</h2>"
            f"<ul>{runs}</ul></body></html>\n")
