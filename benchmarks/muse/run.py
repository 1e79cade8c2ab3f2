"""MUSE's criteria on SmolLM2-135M-Instruct and the synthetic MUSE-like corpus, CPU-sized.

The packaged ``muse_synthetic`` recipe with SmolLM2 as the model: the target is fine-tuned on
the forget and retain articles, the oracle on the retain articles; then

1. each method of ``unlearn.methods`` once: VerbMem (forget), KnowMem forget and retain,
   Min-40% AUC and PrivLeak beside the target and the oracle;
2. sustainability: ``--requests`` deletion requests in a row for each of ``--sust-methods``
   (an oracle per request, trained on retain ∪ the requests not yet made);
3. scalability: each of ``--sizes`` (fractions of the forget articles) unlearned from the
   target by ``--scal-methods`` (an oracle per size).

Markdown tables go to stdout, stage wall times to stderr. Every stage resumes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/muse/run.py [--output runs/muse-bench]
        [--parts main,requests,scaling] [key=value overrides ...]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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
from obliviate.core.requests import run_requests, run_scaling  # noqa: E402
from obliviate.llm import pipeline  # noqa: E402
from obliviate.llm.benchmarks.muse import MuseSynthetic  # noqa: E402
from obliviate.llm.recipe import LLMRecipe  # noqa: E402

PARTS = ("main", "requests", "scaling")
COLUMNS = [(h.label, h.key, h.digits) for h in MuseSynthetic.headline]  # the declared ones
SMOLLM2 = [  # SmolLM2 and a CPU-sized corpus and schedule (overrides after these win)
    "model.name_or_path=smollm2", "model.prompt_style=base", "model.max_length=192",
    "task.news.num_people=8", "task.news.forget_people=4", "task.news.holdout_people=4",
    "task.news.facts_per_person=4", "task.news.qa_per_person=2", "task.news.requests=4",
    "finetune.epochs=6", "finetune.learning_rate=3e-4", "finetune.batch_size=2",
    "finetune.warmup_ratio=0.0", "finetune.lr_scheduler=constant",
    "unlearn.train.max_steps=6", "unlearn.train.learning_rate=1e-4",
    "unlearn.train.batch_size=2", "unlearn.methods=[grad_diff,npo,simnpo]",
    "evaluation.options.engine.batch_size=8",
]


def label(name: str) -> str:
    return "**oracle**" if name == "oracle" else name.removeprefix("unlearned/")


def row(name: str, summary: dict[str, Any], *extra: str) -> list[str]:
    return [label(name), *extra, *[fmt(summary.get(k), d) for _, k, d in COLUMNS]]


def method_seconds(run: pipeline.RunDir, name: str) -> str:
    stage = run.read_record()["stages"].get(
        "unlearn_" + name.removeprefix("unlearned/") if name.startswith("unlearned/")
        else "finetune_" + name, {})
    return fmt(stage.get("seconds"), 0)


def main_table(run: pipeline.RunDir, summaries: dict[str, dict[str, Any]]) -> str:
    order = ["target", "oracle", *sorted(n for n in summaries if n.startswith("unlearned/"))]
    rows = [row(n, summaries[n], method_seconds(run, n)) for n in order if n in summaries]
    return markdown_table(["model", "train (s)", *[c for c, _, _ in COLUMNS]], rows)


def steps_table(summary: dict[str, Any], key: str) -> str:
    """One row per (step, model): the metrics after each request, or at each size."""
    rows = []
    for step in summary["after"]:
        where = f"{step['label']} ({step['forget_size']} forget items)"
        for name in ["oracle", *sorted(m for m in step["models"] if m != "oracle")]:
            if name in step["models"]:
                rows.append(row(name, step["models"][name], where))
    return markdown_table(["model", key, *[c for c, _, _ in COLUMNS]], rows)


def main() -> None:
    args_parser = parser(__doc__, "runs/muse-bench")
    args_parser.add_argument("--parts", default=",".join(PARTS))
    args_parser.add_argument("--sust-methods", default="grad_diff,npo,simnpo")
    args_parser.add_argument("--scal-methods", default="npo")
    args_parser.add_argument("--requests", type=int, default=4)
    args_parser.add_argument("--sizes", default="0.25,0.5,1.0")
    args = args_parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    if set(parts) - set(PARTS):
        args_parser.error(f"--parts: choose from {', '.join(PARTS)}")
    threads = set_threads()
    recipe = load_recipe(LLMRecipe, RECIPES / "muse_synthetic.yaml",
                         [*SMOLLM2, *args.overrides])
    command = command_line(threads)
    run = pipeline.open_run(recipe, args.output, command)
    timed = StageTimer()
    task = timed("task", pipeline.prepare_task, recipe, run)
    timed("finetune", pipeline.finetune_stage, recipe, run, task)
    sizes = {name: info["n"] for name, info in task.provenance()["splits"].items()}
    print(f"## MUSE on the synthetic corpus, SmolLM2-135M-Instruct: {run.root}\n")
    print(f"```\n{command}\n```\n\nMachine: {machine()}. Splits: {sizes}.\n")
    if "main" in parts:
        timed("unlearn", pipeline.unlearn_stage, recipe, run, task)
        summaries = timed("evaluate", pipeline.evaluate_stage, recipe, run, task)
        print(main_table(run, summaries) + "\n")
    if "requests" in parts:
        sub = recipe.model_copy(deep=True)
        sub.unlearn.requests = _requests(args.requests)
        summary = timed("requests", run_requests, pipeline, sub, run, task,
                        args.sust_methods.split(","), command, pipeline.load_request_file)
        print("Sustainability (after each request; forget = every request so far):\n")
        print(steps_table(summary, "after request") + "\n")
    if "scaling" in parts:
        sub = recipe.model_copy(deep=True)
        sub.unlearn.scaling = _scaling([float(s) for s in args.sizes.split(",")])
        summary = timed("scaling", run_scaling, pipeline, sub, run, task,
                        args.scal_methods.split(","), command)
        print("Scalability (each size unlearned from the target):\n")
        print(steps_table(summary, "forget-set size") + "\n")
    print(f"Wall time of this invocation {timed.total / 60:.1f} min. {timed.line()}")


def _requests(count: int) -> Any:
    from obliviate.core.recipe import RequestsConfig

    return RequestsConfig(count=count)


def _scaling(sizes: list[float]) -> Any:
    from obliviate.core.recipe import ScalingConfig

    return ScalingConfig(sizes=sizes)


if __name__ == "__main__":
    main()
