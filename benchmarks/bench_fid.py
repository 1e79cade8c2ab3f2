"""Benchmark FID's trace term: ``scipy.linalg.sqrtm`` of Σ₁Σ₂ (the reference code's way) against
:func:`~obliviate.diffusion.metrics.distances.trace_sqrt_product` (two symmetric
eigendecompositions).

Inception's 2,048 features by default, for ``--samples`` images per set (random features: the
time depends on the shapes only; with fewer samples than features the covariances are singular,
as in a small FID). The two alternate ``--repeats`` times in one process; the table gives each
one's median, the speed-up and the relative difference of the traces. Both run in NumPy and
SciPy, whose BLAS takes its threads from ``OMP_NUM_THREADS``.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_fid.py --samples 500 3000
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import scipy.linalg
from common import STARTED_AT

from obliviate.diffusion.metrics.distances import trace_sqrt_product


def reference(s1: np.ndarray, s2: np.ndarray) -> float:
    return float(np.trace(np.real(scipy.linalg.sqrtm(s1 @ s2))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[500, 3000])
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, commit {STARTED_AT}.\n")
    print("| samples per set | features | sqrtm (s) | eigh (s) | speed-up | relative difference |")
    print("|---|---|---|---|---|---|")
    for n in args.samples:
        a = rng.normal(size=(n, args.features))
        b = rng.normal(size=(n, args.features)) * 1.1 + 0.2
        s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        times: dict[str, list[float]] = {"sqrtm": [], "eigh": []}
        values: dict[str, float] = {}
        for _ in range(args.repeats):
            for name, fn in (("sqrtm", reference), ("eigh", trace_sqrt_product)):
                t0 = time.perf_counter()
                values[name] = fn(s1, s2)
                times[name].append(time.perf_counter() - t0)
        old, new = (statistics.median(times[k]) for k in ("sqrtm", "eigh"))
        diff = abs(values["sqrtm"] - values["eigh"]) / abs(values["sqrtm"])
        print(f"| {n} | {args.features} | {old:.2f} | {new:.2f} | {old / new:.1f}× | {diff:.1e} |")


if __name__ == "__main__":
    main()
