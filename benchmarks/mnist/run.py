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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (  # noqa: E402
    RECIPES,
    StageTimer,
    command_line,
    fmt,
    machine,
    markdown_table,
    parser,
    set_threads,
)

from obliviate.core.recipe import load_recipe  # noqa: E402
from obliviate.diffusion import pipeline  # noqa: E402
from obliviate.diffusion.recipe import DiffusionRecipe  # noqa: E402

KEY = "generation/{}"


def table(recipe: DiffusionRecipe, run: pipeline.RunDir, summaries: dict, attacks: dict) -> str:
    record = run.read_record()["stages"]
    names = recipe.attack.attacks
    head = ["model", "UA ↑", "retain acc ↑", "FID (judge) ↓", "KID ↓",
            *[f"{a} success ↓" for a in names], "wall time (s)"]
    rows = []
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
        rows.append([f"**{name}**" if name == "oracle" else name,
                     fmt(summary.get(KEY.format("forget/unlearning_accuracy"))),
                     fmt(summary.get(KEY.format("retain/retain_accuracy"))),
                     fmt(summary.get(KEY.format("retain/fid")), 2),
                     fmt(summary.get(KEY.format("retain/kid")), 4),
                     *[fmt(v) for v in shown], fmt(seconds, 1)])
    return markdown_table(head, rows)


def main() -> None:
    args = parser(__doc__, "runs/mnist-bench").parse_args()
    threads = set_threads()
    recipe = load_recipe(DiffusionRecipe, RECIPES / "mnist.yaml", args.overrides)
    command = command_line(threads)
    run = pipeline.open_run(recipe, args.output, command)
    timed = StageTimer()
    task = timed("task", pipeline.prepare_task, recipe, run)
    trained = timed("finetune", pipeline.finetune_stage, recipe, run, task)
    timed("unlearn", pipeline.unlearn_stage, recipe, run, task)
    summaries = timed("evaluate", pipeline.evaluate_stage, recipe, run, task)
    attacks = timed("attack", pipeline.attack_stage, recipe, run, task)
    target = summaries.get("target", {})
    print(f"## MNIST 16×16, forget {recipe.task.settings.forget_classes} — {run.root}\n")
    print(f"```\n{command}\n```\n")
    print(f"Machine: {machine()}. Total wall time {timed.total / 60:.1f} min. Judge held-out "
          f"accuracy {fmt(trained['judge'].get('holdout_accuracy'))}; target's samples "
          f"recognised as their class: {fmt(target.get(KEY.format('retain/retain_accuracy')))} "
          f"(retain), "
          f"{fmt(1 - target.get(KEY.format('forget/unlearning_accuracy'), float('nan')))} "
          "(forget class).\n")
    print(table(recipe, run, summaries, attacks) + "\n")
    print(timed.line())


if __name__ == "__main__":
    main()
