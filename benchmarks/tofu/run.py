"""TOFU benchmark on SmolLM2-135M-Instruct: the packaged ``tofu_smollm2`` recipe end to end.

Fine-tunes the target (forget01 + a slice of retain authors) and the oracle (the retain slice
only), runs every LLM method of the recipe, evaluates every model with the TOFU, MIA and
memorisation suites against the oracle, attacks every unlearned model (relearning, 4-bit
quantization, rephrasing; each attack also on the oracle) and prints two markdown tables.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/tofu/run.py [--output runs/tofu-bench]
        [--stages finetune,unlearn,evaluate,attack] [--workers 2] [key=value overrides ...]

Every stage resumes: re-running with the same output folder skips finished models, methods,
evaluations and attacks, and continues an interrupted training from its checkpoint.

``--workers 2`` runs the fine-tunings, the methods and the evaluations as one plan of jobs in
two processes of one thread each, each taking the next job it may start when it finishes one
(the oracle's evaluation while the target still trains, a finished method's evaluation while
another method trains): on the 2-core CPU box two of these side by side finish sooner than one
after the other with two threads each (BENCHMARKS.md). The attacks stay in one process with
every thread.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (  # noqa: E402
    RECIPES,
    Job,
    StageTimer,
    add_stages,
    add_workers,
    chosen_stages,
    command_line,
    fmt,
    machine,
    markdown_table,
    metrics_table,
    model_order,
    parser,
    recorded_results,
    run_in_workers,
    set_threads,
    take_jobs,
)

from obliviate.core import stages  # noqa: E402
from obliviate.core.io import read_json  # noqa: E402
from obliviate.core.recipe import load_recipe  # noqa: E402
from obliviate.core.rundir import RunDir  # noqa: E402
from obliviate.llm import pipeline  # noqa: E402
from obliviate.llm.benchmarks.tofu import Tofu  # noqa: E402
from obliviate.llm.recipe import LLMRecipe  # noqa: E402

STAGES = ("finetune", "unlearn", "evaluate", "attack")
METRICS = [(h.label, h.key, h.digits) for h in Tofu.headline]  # what the benchmark declares


def attack_table(attacks: dict[str, dict[str, Any]], run: RunDir) -> str:
    """Forget ROUGE-L recall plain, 4-bit, under the best rephrasing (with the oracle on that
    same variant) and relearned (k = 0 → k = max on the held-out half of the forget set)."""
    head = ["model", "plain", "4-bit RTN", "best rephrasing (oracle)", "variant",
            "relearning k=0 → 10 (oracle)"]
    rows: list[list[str]] = []
    oracle: dict[str, Any] = {}
    for name in model_order(list(attacks)):
        cells = {a: attacks[name].get(a, {}) for a in ("relearning", "quantization",
                                                        "rephrasing")}
        best = None
        path = run.root / "attacks" / name / "rephrasing.json"
        if path.is_file():
            best = read_json(path).get("details", {}).get("best_variant")
        quant, reph, relearn = cells["quantization"], cells["rephrasing"], cells["relearning"]
        rows.append([
            name.removeprefix("unlearned/"), fmt(quant.get("plain", reph.get("plain"))),
            fmt(quant.get("attacked")),
            f"{fmt(reph.get('attacked'))} ({fmt(reph.get('oracle_attacked'))})",
            best or "–",
            f"{fmt(relearn.get('plain'))} → {fmt(relearn.get('attacked'))} "
            f"({fmt(relearn.get('oracle_attacked'))})"])
        for key, cell in (("quantization", quant), ("relearning", relearn)):
            oracle.setdefault(f"{key}_plain", cell.get("oracle_plain"))
            oracle.setdefault(key, cell.get("oracle_attacked"))
    rows.insert(0, ["**oracle**", fmt(oracle.get("quantization_plain")),
                    fmt(oracle.get("quantization")), "(in each row)", "",
                    f"{fmt(oracle.get('relearning_plain'))} → {fmt(oracle.get('relearning'))}"])
    note = ("Plain, 4-bit and rephrasing are scored on the whole forget set; relearning "
            "fine-tunes on half of each author's facts and is scored on the held-out half.")
    return markdown_table(head, rows) + "\n\n" + note


ONE = {  # what a worker of --workers runs for one job
    "finetune": lambda recipe, run, task, name: pipeline.finetune_stage(
        recipe, run, task, roles=(name,)),
    "unlearn": lambda recipe, run, task, name: pipeline.unlearn_stage(
        recipe, run, task, methods=[name]),
    "evaluate": lambda recipe, run, task, name: pipeline.evaluate_stage(
        recipe, run, task, models=[name]),
}


def plan(recipe: LLMRecipe, run: RunDir, chosen: list[str]) -> list[Job]:
    """The jobs of the ``chosen`` stages for ``--workers``, in the order workers take them
    when ready: both fine-tunings, the oracle's evaluation (every other evaluation reads it;
    none when the run has no oracle), the methods (each after the target), then every other
    model's evaluation (each after the job that makes it). A worker whose next stage must wait
    starts what it may (the oracle's evaluation while the target trains, the evaluation of a
    finished method while the other worker's method trains) instead of idling at a stage's
    end."""
    jobs: list[Job] = []
    made: dict[str, str] = {}  # model -> the job of this plan that makes it

    def add(stage: str, name: str, *after: str | None) -> None:
        jobs.append(Job(stage, name, tuple(a for a in after if a)))

    if "finetune" in chosen:
        for role in ("target", "oracle"):
            add("finetune", role)
            made[role] = f"finetune:{role}"
    available = stages.available_models(run)
    if "evaluate" in chosen and ("oracle" in made or "oracle" in available):
        add("evaluate", "oracle", made.get("oracle"))
    if "unlearn" in chosen:
        for method in recipe.unlearn.methods:
            add("unlearn", method, made.get("target"))
            made[f"unlearned/{method}"] = f"unlearn:{method}"
    if "evaluate" in chosen:
        for model in model_order(list(dict.fromkeys([*available, *made]))):
            if model != "oracle":
                add("evaluate", model, "evaluate:oracle", made.get(model))
    return jobs


def main() -> None:
    args_parser = parser(__doc__, "runs/tofu-bench")
    add_stages(args_parser, STAGES)
    add_workers(args_parser)
    args = args_parser.parse_args()
    chosen = chosen_stages(args_parser, args.stages, STAGES)
    threads = set_threads()
    recipe = load_recipe(LLMRecipe, RECIPES / "tofu_smollm2.yaml", args.overrides)
    command = command_line(threads)
    run = pipeline.open_run(recipe, args.output, command)
    timed = StageTimer()
    task = timed("task", pipeline.prepare_task, recipe, run)
    if args.jobs:  # a worker of --workers: the jobs it takes, no tables
        take_jobs(args.jobs, lambda job: timed(job.key, ONE[job.stage], recipe, run, task,
                                               job.name))
        return
    summaries = attacks = None
    shared = [s for s in chosen if s != "attack"] if args.workers > 1 else []
    if shared:  # the attacks stay in this process with every thread
        timed(",".join(shared), run_in_workers, __file__, args, plan(recipe, run, shared))
    else:
        if "finetune" in chosen:
            timed("finetune", pipeline.finetune_stage, recipe, run, task)
        if "unlearn" in chosen:
            timed("unlearn", pipeline.unlearn_stage, recipe, run, task)
        if "evaluate" in chosen:
            summaries = timed("evaluate", pipeline.evaluate_stage, recipe, run, task)
    if "attack" in chosen:
        attacks = timed("attack", pipeline.attack_stage, recipe, run, task)
    sizes = {name: info["n"] for name, info in task.provenance()["splits"].items()}
    print(f"## TOFU slice on SmolLM2-135M-Instruct — {run.root}\n")
    print(f"```\n{command}\n```\n")
    print(f"Machine: {machine()}. Wall time of this invocation {timed.total / 60:.1f} min. "
          f"Splits: {sizes}.\n")
    record = run.read_record()["stages"]
    summaries = summaries or recorded_results(record)[0]  # `--stages ""` re-prints the tables
    attacks = attacks or recorded_results(record)[1]
    if summaries:
        print(metrics_table(summaries, record, METRICS) + "\n")
    if attacks:
        print(attack_table(attacks, run) + "\n")
    print(timed.line())


if __name__ == "__main__":
    main()
