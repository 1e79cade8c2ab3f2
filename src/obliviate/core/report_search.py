"""The report's search section: each study's hypervolume against trials, beside the grid's.

For every study of the run (``search/<method>/<sampler>-seed<seed>.json``, see
:mod:`obliviate.core.search`) the section holds its hypervolume curve, and for every method the
hypervolume of the grid cells of the same method (the sweep's plan), scored on the report's
axes against the same reference point: grid against search at the budget each spent.
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from obliviate.core.hypervolume import hypervolume
from obliviate.core.search import load_summaries
from obliviate.core.sweep import load_results

Scorer = Callable[[Mapping[str, Any]], Mapping[str, float | None]]


def search_section(root: str | Path, score: Scorer) -> dict[str, Any] | None:
    """``{studies: [...], grid: {method: {cells, hypervolume}}}`` or ``None`` without a search."""
    studies = load_summaries(root)
    if not studies:
        return None
    grid: dict[str, dict[str, Any]] = {}
    cells = [r for r in load_results(root) if r.get("kind", "cell") == "cell"]
    for study in studies:
        method = study["method"]
        if method in grid:
            continue
        mine = [c for c in cells if c.get("method") == method]
        points = [[score(c.get("metrics", {})).get(o) for o in study["objectives"]]
                  for c in mine]
        points = [p for p in points if None not in p]
        grid[method] = {"cells": len(mine), "scored": len(points),
                        "hypervolume": hypervolume(points, study["reference_point"])
                        if points else None}
    out = []
    for s in studies:
        curve = s.get("hypervolume_curve", [])
        out.append({"method": s["method"], "sampler": s["sampler"], "seed": s["seed"],
                    "trials": len(s["trials"]), "front": len(s["front"]),
                    "hypervolume": s["hypervolume"], "hypervolume_curve": curve,
                    "objectives": s["objectives"], "reference_point": s["reference_point"]})
    return {"studies": out, "grid": grid}


def search_rows(section: dict[str, Any]) -> list[list[Any]]:
    """Table rows: per method, the grid, then the search's mean ± std over its seeds."""
    rows = []
    for method, grid in section["grid"].items():
        rows.append([method, f"grid ({grid['cells']} cells)", grid["cells"],
                     grid["hypervolume"], ""])
        studies = [s for s in section["studies"] if s["method"] == method]
        by_sampler: dict[str, list[dict[str, Any]]] = {}
        for s in studies:
            by_sampler.setdefault(s["sampler"], []).append(s)
        for sampler, group in by_sampler.items():
            values = [s["hypervolume"] for s in group]
            std = statistics.stdev(values) if len(values) > 1 else None
            rows.append([method, f"search ({sampler}, seeds "
                         f"{', '.join(str(s['seed']) for s in group)})",
                         statistics.mean(s["trials"] for s in group),
                         statistics.mean(values), std])
    return rows


def search_png(section: dict[str, Any], dpi: int = 110) -> bytes:
    """Hypervolume against trials: one line per study, the grid's value as a dashed line."""
    from matplotlib.figure import Figure

    methods = list(section["grid"])
    fig = Figure(figsize=(5 * len(methods), 3.6))
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    for ax, method in zip(axes, methods, strict=True):
        for i, study in enumerate(s for s in section["studies"] if s["method"] == method):
            curve = study["hypervolume_curve"]
            ax.plot(range(1, len(curve) + 1), curve, "-o", ms=3, color=f"C{i % 10}",
                    label=f"{study['sampler']} seed {study['seed']}")
        grid = section["grid"][method]
        if grid["hypervolume"] is not None:
            ax.axhline(grid["hypervolume"], ls="--", color="grey",
                       label=f"grid, {grid['cells']} cells")
        ax.set_title(method)
        ax.set_xlabel("trials")
        ax.set_ylabel("hypervolume")
        ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
