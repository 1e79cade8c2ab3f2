"""The Pareto plot of a report (matplotlib, Agg backend, PNG bytes).

The axes are closeness to the oracle (see :mod:`obliviate.core.axes`): the oracle's star sits
at 1 on forgetting and robustness. Left: utility against forgetting. Right (when attacks ran):
robustness against forgetting.
Each configuration is a dot coloured by method with ±1 std error bars across seeds; the
configurations non-dominated on forgetting × utility are joined by a dashed line, each
method's reported configuration is ringed, the oracle is a star and the target a cross.
"""

from __future__ import annotations

import io
from typing import Any


def _panel(ax: Any, data: dict[str, Any], y_axis: str, front_key: str | None) -> None:
    pareto = data["pareto"]
    configs = pareto["configurations"]
    methods = sorted({c["method"] for c in configs})
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    reported = {v["config_id"] for v in data["reported"].values() if v.get("config_id")}
    labelled: set[str] = set()
    for c in configs:
        x, y = c["mean"].get("forgetting"), c["mean"].get(y_axis)
        if x is None or y is None:
            continue
        sx, sy = c["std"].get("forgetting") or 0.0, c["std"].get(y_axis) or 0.0
        label = c["method"] if c["method"] not in labelled else None
        labelled.add(c["method"])
        ax.errorbar(x, y, xerr=sx if c["n"] > 1 else None, yerr=sy if c["n"] > 1 else None,
                    fmt="o", ms=6, color=colours[c["method"]], ecolor=colours[c["method"]],
                    alpha=0.85, capsize=2, label=label)
        if c["config_id"] in reported:
            ax.plot(x, y, "o", ms=13, mfc="none", mec="black", mew=1.2)
    on_front = set(pareto.get(front_key) or []) if front_key else set()
    front = [c for c in configs if c["config_id"] in on_front and c["mean"].get(y_axis) is not None]
    if front:
        front.sort(key=lambda c: c["mean"]["forgetting"])
        ax.plot([c["mean"]["forgetting"] for c in front], [c["mean"][y_axis] for c in front],
                "--", color="grey", lw=1, label="Pareto front")
    for kind, marker, colour in (("oracle", "*", "gold"), ("target", "X", "crimson")):
        point = pareto["reference_points"].get(kind) or {}
        if point.get("forgetting") is not None and point.get(y_axis) is not None:
            ax.plot(point["forgetting"], point[y_axis], marker, ms=15, color=colour, mec="black",
                    label=kind, zorder=5)
    ax.set_xlabel("forgetting: closeness to the oracle (1 = the oracle)")
    ax.set_ylabel(f"{y_axis} (1 = the oracle's)")
    ax.grid(alpha=0.3)


def pareto_png(data: dict[str, Any], dpi: int = 110) -> bytes | None:
    """The plot as PNG bytes, or ``None`` when no model has both forgetting and utility."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    configs = data["pareto"]["configurations"]
    refs = data["pareto"]["reference_points"].values()
    if not any(c["mean"].get("forgetting") is not None and c["mean"].get("utility") is not None
               for c in [*configs, *({"mean": r} for r in refs)]):
        return None
    robust = "robustness" in data["pareto"]["axes"]
    fig = Figure(figsize=(12 if robust else 7, 5))
    axes = fig.subplots(1, 2 if robust else 1, squeeze=False)
    _panel(axes[0][0], data, "utility", "front")
    axes[0][0].set_title("utility vs forgetting")
    if robust:
        _panel(axes[0][1], data, "robustness", None)
        axes[0][1].set_title("robustness (forgetting under attack) vs forgetting")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
