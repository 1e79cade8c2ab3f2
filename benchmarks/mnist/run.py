"""MNIST unlearning benchmark: the packaged ``mnist`` recipe end to end, then a markdown table.

Trains target, oracle and judge on 16×16 MNIST, runs the recipe's methods, evaluates every
model with the judge and attacks every unlearned model (and the oracle), timing each stage.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/mnist/run.py [--output runs/mnist-bench]
        [key=value overrides ...]

The table has, for the oracle, the target and each method: unlearning accuracy (1 − judge
accuracy on forget-class samples), retain accuracy, the Fréchet distance on the judge's
features against real held-out retain digits, the attack success rate of each attack, and the
method's wall time. Re-running with the same output folder reuses finished stages.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from obliviate.core.recipe import load_recipe
from obliviate.diffusion import pipeline
from obliviate.diffusion.recipe import DiffusionRecipe

RECIPE = Path(__file__).resolve().parents[2] / "src" / "obliviate" / "recipes" / "mnist.yaml"
KEY = "generation/{}"


def fmt(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "–"


def table(recipe: DiffusionRecipe, run: pipeline.RunDir, summaries: dict, attacks: dict,
          stage_seconds: dict[str, float]) -> str:
    record = run.read_record()["stages"]
    names = recipe.attack.attacks
    head = ["model", "UA ↑", "retain acc ↑", "FID (judge) ↓", "KID ↓",
            *[f"{a} success ↓" for a in names], "wall time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    oracle_attacks = {}
    for by_attack in attacks.values():
        for a, r in by_attack.items():
            oracle_attacks.setdefault(a, r.get("oracle_attacked"))
    for name, summary in summaries.items():
        if name == "oracle":
            seconds = record.get("finetune_oracle", {}).get("seconds")
            shown = [oracle_attacks.get(a) for a in names]
        elif name == "target":
            seconds = record.get("finetune_target", {}).get("seconds")
            shown = [attacks.get(name, {}).get(a, {}).get("attacked") for a in names]
        else:
            seconds = record.get(f"unlearn_{name.split('/')[-1]}", {}).get("seconds")
            shown = [attacks.get(name, {}).get(a, {}).get("attacked") for a in names]
        cells = [f"**{name}**" if name == "oracle" else name,
                 fmt(summary.get(KEY.format("forget/unlearning_accuracy"))),
                 fmt(summary.get(KEY.format("retain/retain_accuracy"))),
                 fmt(summary.get(KEY.format("retain/fid")), 2),
                 fmt(summary.get(KEY.format("retain/kid")), 4),
                 *[fmt(v) for v in shown], fmt(seconds, 1)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Stage wall times (s): " + ", ".join(f"{k} {v:.0f}"
                                                      for k, v in stage_seconds.items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/mnist-bench")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, section.key=value")
    args = parser.parse_args()
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        torch.set_num_threads(int(threads))
    recipe = load_recipe(DiffusionRecipe, RECIPE, args.overrides)
    command = " ".join(["OMP_NUM_THREADS=" + (threads or "?"), sys.executable.split("/")[-1],
                        *sys.argv])
    run = pipeline.open_run(recipe, args.output, command)
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    def timed(stage: str, fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        seconds[stage] = time.perf_counter() - t0
        print(f"[{stage}] {seconds[stage]:.0f}s", file=sys.stderr, flush=True)
        return out

    task = timed("task", pipeline.prepare_task, recipe, run)
    trained = timed("finetune", pipeline.finetune_stage, recipe, run, task)
    timed("unlearn", pipeline.unlearn_stage, recipe, run, task)
    summaries = timed("evaluate", pipeline.evaluate_stage, recipe, run, task)
    attacks = timed("attack", pipeline.attack_stage, recipe, run, task)
    total = time.perf_counter() - start
    target = summaries.get("target", {})
    print(f"## MNIST 16×16, forget {recipe.task.forget_classes} — {run.root}\n")
    print(f"```\n{command}\n```\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads. Total wall time "
          f"{total / 60:.1f} min. Judge held-out accuracy "
          f"{fmt(trained['judge'].get('holdout_accuracy'))}; target's samples recognised as "
          f"their class: {fmt(target.get(KEY.format('retain/retain_accuracy')))} (retain), "
          f"{fmt(1 - target.get(KEY.format('forget/unlearning_accuracy'), float('nan')))} "
          "(forget class).\n")
    print(table(recipe, run, summaries, attacks, seconds))


if __name__ == "__main__":
    main()
