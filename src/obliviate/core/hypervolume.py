"""Hypervolume of a set of points, every objective maximised.

The hypervolume (Zitzler & Thiele 1998) of points P against a reference point r is the volume
of the union of the boxes [r, p] for p in P with p > r on every objective: the larger, the more
of the objective space the front dominates. Points not strictly better than r on every
objective add nothing. Exact, by slicing along the last objective (HSO, While et al. 2006):
fine for the tens to hundreds of points a search produces.
"""

from __future__ import annotations

from collections.abc import Sequence


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """The hypervolume dominated by ``points`` above ``reference`` (maximisation)."""
    dims = len(reference)
    kept = [tuple(float(v) for v in p) for p in points
            if len(p) == dims and all(v > r for v, r in zip(p, reference, strict=True))]
    return _slice(kept, tuple(float(r) for r in reference))


def _slice(points: list[tuple[float, ...]], reference: tuple[float, ...]) -> float:
    if not points:
        return 0.0
    if len(reference) == 1:
        return max(p[0] for p in points) - reference[0]
    levels = sorted({p[-1] for p in points}, reverse=True) + [reference[-1]]
    volume = 0.0
    for upper, lower in zip(levels, levels[1:], strict=False):
        active = [p[:-1] for p in points if p[-1] >= upper]
        volume += (upper - lower) * _slice(active, reference[:-1])
    return volume


def hypervolume_curve(points: Sequence[Sequence[float]], reference: Sequence[float]
                      ) -> list[float]:
    """Hypervolume of the first k points, for k = 1 .. len(points) (a front's growth)."""
    return [hypervolume(points[:k], reference) for k in range(1, len(points) + 1)]


def front_indices(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points (maximisation), in input order."""
    def dominated(q: Sequence[float], p: Sequence[float]) -> bool:  # q dominates p
        pairs = list(zip(q, p, strict=True))
        return all(a >= b for a, b in pairs) and any(a > b for a, b in pairs)

    return [i for i, p in enumerate(points)
            if not any(dominated(q, p) for j, q in enumerate(points) if j != i)]
