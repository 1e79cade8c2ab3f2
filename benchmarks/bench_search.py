"""Grid against multi-objective search at equal budget: hypervolume against number of trials.

Runs the packaged ``search_demo`` recipe (the demo's synthetic task and tiny model; NPO and
GradDiff over learning rate × alpha) in one run directory: target and oracle once, the 4 × 3
grid of its ``sweep:`` section, then its ``search:`` section (12 trials per method) for each
seed given. Every setting is one resumable cell, so a rerun only prints the table. Prints, per
method, the hypervolume of the grid's 12 cells and the search's front after k trials, against the
reference point the summaries state::

    OMP_NUM_THREADS=2 python benchmarks/bench_search.py --seeds 0 1 2
"""

from __future__ import annotations

import statistics
import sys

from common import RECIPES, StageTimer, command_line, fmt, machine, parser, set_threads

from obliviate.core.axes import AxisMap
from obliviate.core.hypervolume import hypervolume
from obliviate.core.modality_sweep import root_references
from obliviate.core.recipe import apply_overrides, read_yaml
from obliviate.core.search import split_search
from obliviate.core.sweep import load_results, split_sweep
from obliviate.llm import sweep as llm_sweep

CHECKPOINTS = (1, 2, 4, 6, 8, 10, 12)


def main() -> None:
    args_parser = parser(__doc__, "runs/bench-search")
    args_parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = args_parser.parse_args()
    threads = set_threads()
    data = apply_overrides(read_yaml(RECIPES / "search_demo.yaml"), args.overrides)
    timer = StageTimer()
    base, grid = split_sweep(data)
    run, _ = timer("grid", llm_sweep.sweep, base, grid, args.output, log=print_err)
    summaries = {}
    for seed in args.seeds:
        base, spec = split_search(apply_overrides(data, [f"search.seed={seed}"]))
        _, found = timer(f"search seed {seed}", llm_sweep.search, base, spec, args.output,
                         log=print_err)
        summaries[seed] = found
    axes, refs = AxisMap.for_modality("llm"), root_references(run)
    reference = spec.reference()
    print(f"\n`{command_line(threads)}` — {machine()}; {timer.line()}\n")
    print(f"Hypervolume of ({', '.join(spec.objectives)}) against reference point {reference}"
          f" (every axis maximised), after k settings; search: mean ± std over seeds "
          f"{args.seeds}.\n")
    print("| method | way | " + " | ".join(f"k={k}" for k in CHECKPOINTS) + " |")
    print("|---|---|" + "---|" * len(CHECKPOINTS))
    results = load_results(run.root)
    for method in spec.methods:
        cells = [r for r in results if r["method"] == method and r.get("kind", "cell") == "cell"]
        points = [[axes.score(r["metrics"], refs)[0][o] for o in spec.objectives] for r in cells]
        grid_hv = hypervolume(points, reference)
        print(f"| {method} | grid ({len(cells)} cells) | "
              + " | ".join("" if k < len(cells) else fmt(grid_hv) for k in CHECKPOINTS) + " |")
        curves = [summaries[s][method]["hypervolume_curve"] for s in args.seeds]
        cols = []
        for k in CHECKPOINTS:
            at = [c[k - 1] for c in curves if len(c) >= k]
            sd = statistics.stdev(at) if len(at) > 1 else 0.0
            cols.append(f"{fmt(statistics.mean(at))} ± {fmt(sd)}" if at else "–")
        print(f"| {method} | search ({spec.sampler}) | " + " | ".join(cols) + " |")


def print_err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
