"""The report's section on deletion requests over time and forget-set scaling (MUSE's C6 and C5,
Shi et al. 2024, arXiv:2407.06460), from what :mod:`obliviate.core.requests` left in the run:
``requests/requests.json`` + ``requests.png`` and ``scaling/scaling.json`` + ``scaling.png``.

``report.json`` holds each series (``{metric: {model: [value per request or size]}}``, the
oracles' curve under ``oracle``, ``null`` where a model has no value) with its x values; the
HTML page embeds each plot (one line per method, the oracles dashed) and names its file.
"""

from __future__ import annotations

import math
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


__all__ = ["KINDS", "requests_section"]
