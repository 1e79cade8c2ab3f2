"""The report's section on deletion requests over time and forget-set scaling (MUSE's C6 and C5,
Shi et al. 2024, arXiv:2407.06460), from what :mod:`obliviate.core.requests` left in the run:
``requests/requests.json`` + ``requests.png`` and ``scaling/scaling.json`` + ``scaling.png``.

``report.json`` holds each series (``{metric: {model: [value per request or size]}}``, the
oracles' curve under ``oracle``, ``null`` where a model has no value) with its x values; the
HTML page embeds each plot (one line per method, the oracles dashed) and names its file.
"""

from __future__ import annotations

import base64
import math
from html import escape
from pathlib import Path
from typing import Any

from obliviate.core.errors import ObliviateError
from obliviate.core.io import read_json
from obliviate.core.requests import curves

KINDS = {  # folder -> (x label, what a step is)
    "requests": ("request", "after each deletion request (forget = every request so far)"),
    "scaling": ("forget-set size", "at each forget-set size, unlearned from the target"),
}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def requests_section(root: Path) -> dict[str, Any]:
    """``{"requests": {...}, "scaling": {...}}`` for the summaries the run has (may be empty)."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        path = root / kind / f"{kind}.json"
        if not path.is_file():
            continue
        try:
            summary = read_json(path)
        except ObliviateError:
            continue
        after = summary.get("after") or []
        x = ([s.get("forget_size") for s in after] if kind == "scaling"
             else [s.get("request", i) for i, s in enumerate(after, 1)])
        plot = root / kind / f"{kind}.png"
        out[kind] = {
            "x": x, "labels": [s.get("label") for s in after],
            "forget_sizes": [s.get("forget_size") for s in after],
            "methods": summary.get("methods", []), "oracles": summary.get("oracles"),
            "series": {metric: {model: [_finite(v) for v in values]
                                for model, values in models.items()}
                       for metric, models in curves(summary).items()},
            "plot": str(plot.relative_to(root)) if plot.is_file() else None,
        }
    return out


def requests_html(data: dict[str, Any], root: Path, headline: list[str] | None = None) -> str:
    """Each kind's plot (embedded, its file named) and a table of the headline series."""
    from obliviate.core.report_html import table

    parts = []
    for kind, section in data.items():
        xlabel, what = KINDS[kind]
        parts.append(f"<h3>{escape(kind)}: {escape(what)}</h3>")
        plot = root / section["plot"] if section.get("plot") else None
        if plot is not None and plot.is_file():
            uri = base64.b64encode(plot.read_bytes()).decode("ascii")
            name = escape(section["plot"])
            parts.append(f'<img class="plot" alt="{name}" title="{name}" '
                         f'src="data:image/png;base64,{uri}">'
                         f"<p class='muted'>{name}: each metric against the {escape(xlabel)}, "
                         "one line per method, the oracles' curve dashed (each step has its "
                         "own oracle).</p>")
        keys = [k for k in (headline or []) if k in section["series"]] or \
            list(section["series"])[:4]
        rows = [[key, model.removeprefix("unlearned/"), *values] for key in keys
                for model, values in section["series"][key].items()]
        parts.append(table(["metric", "model", *[f"{xlabel} {x}" for x in section["x"]]],
                           rows, left=2))
    return "".join(parts)


__all__ = ["requests_html", "requests_section"]
