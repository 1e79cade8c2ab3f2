"""WMDP-style hazardous-knowledge unlearning on SmolLM2-135M-Instruct: the packaged ``wmdp``
recipe end to end on its synthetic hazard task (llm/data/synthetic_hazard.py).

Fine-tunes the target (both domains' corpora and practice questions) and the oracle (the retain
domain only), runs the recipe's methods on the forget corpus, and scores every model on the
forget domain's and the retain domain's four-choice questions (chance 0.25) and on general
utility, a 40-question general-knowledge task in place of MMLU, which cannot be downloaded here.
The three are local lm-eval tasks in ARC's cloze format that this script writes
(``lm_eval_tasks.py``) and runs through lm-evaluation-harness on the in-memory model (the
``lm_eval`` suite); the two domains are also scored in WMDP's lettered prompt (the ``mcq``
suite), which a 135M model reads near chance. Prints one markdown table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/wmdp/run.py [--output runs/wmdp-bench]
        [--stages finetune,unlearn,evaluate] [key=value overrides ...]

Every stage resumes: re-running with the same output folder skips finished models, methods and
evaluations. Real WMDP and MMLU: see the comments of ``src/obliviate/recipes/wmdp.yaml``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    RECIPES,
    StageTimer,
    add_stages,
    chosen_stages,
    command_line,
    machine,
    metrics_table,
    parser,
    recorded_results,
    set_threads,
)
from lm_eval_tasks import FORGET_TASK, RETAIN_TASK, TASK, general_facts, write_task  # noqa: E402

from obliviate.core.recipe import load_recipe  # noqa: E402
from obliviate.core.task import UnlearningTask  # noqa: E402
from obliviate.llm import pipeline  # noqa: E402
from obliviate.llm.benchmarks.wmdp import Wmdp  # noqa: E402
from obliviate.llm.recipe import LLMRecipe  # noqa: E402
from obliviate.llm.task import build_task  # noqa: E402

STAGES = ("finetune", "unlearn", "evaluate")
METRICS = [  # (column, summary key, decimals): this script's cloze tasks, then the declared ones
    ("forget-domain acc (cloze)", f"lm_eval/{FORGET_TASK}/acc", 3),
    ("retain-domain acc (cloze)", f"lm_eval/{RETAIN_TASK}/acc", 3),
    ("general facts acc (cloze)", f"lm_eval/{TASK}/acc", 3),
    *[(f"{h.label} (letters)", h.key, h.digits) for h in Wmdp.headline],
]


def lm_eval_overrides(output: str, task: UnlearningTask) -> list[str]:
    """Add the lm_eval suite on the local tasks (written into the run folder): general facts
    and the two domains' questions in cloze form."""
    folder = Path(output) / "lm_eval_tasks"
    write_task(folder, TASK, general_facts())
    for name, split in ((FORGET_TASK, "forget_mcq"), (RETAIN_TASK, "retain_mcq")):
        write_task(folder, name, [item.to_dict() for item in task.split(split).records])
    return ["evaluation.suites=[mcq,lm_eval]",
            f"evaluation.options.lm_eval.tasks=[{FORGET_TASK},{RETAIN_TASK},{TASK}]",
            f"evaluation.options.lm_eval.include_path={folder.resolve()}",
            "evaluation.options.lm_eval.batch_size=16"]


def main() -> None:
    args_parser = parser(__doc__, "runs/wmdp-bench")
    add_stages(args_parser, STAGES)
    args = args_parser.parse_args()
    stages = chosen_stages(args_parser, args.stages, STAGES)
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):  # the general-facts task is local
        os.environ.setdefault(var, "1")
    threads = set_threads()
    recipe = load_recipe(LLMRecipe, RECIPES / "wmdp.yaml", args.overrides)
    overrides = lm_eval_overrides(args.output, build_task(recipe.task, seed=recipe.seed))
    recipe = load_recipe(LLMRecipe, RECIPES / "wmdp.yaml", overrides + args.overrides)
    command = command_line(threads)
    run = pipeline.open_run(recipe, args.output, command)
    timed = StageTimer()
    task = timed("task", pipeline.prepare_task, recipe, run)
    if "finetune" in stages:
        timed("finetune", pipeline.finetune_stage, recipe, run, task)
    if "unlearn" in stages:
        timed("unlearn", pipeline.unlearn_stage, recipe, run, task)
    summaries = None
    if "evaluate" in stages:
        summaries = timed("evaluate", pipeline.evaluate_stage, recipe, run, task)
    sizes = {name: info["n"] for name, info in task.provenance()["splits"].items()}
    print(f"## Synthetic hazardous knowledge (WMDP-style) on {recipe.model.name_or_path} — "
          f"{run.root}\n")
    print(f"```\n{command}\n```\n")
    print(f"Machine: {machine()}. Wall time of this invocation {timed.total / 60:.1f} min. "
          f"Splits: {sizes}. Chance on both domains: 0.25.\n")
    record = run.read_record()["stages"]
    summaries = summaries or recorded_results(record)[0]
    if summaries:
        print(metrics_table(summaries, record, METRICS) + "\n")
    print(timed.line())


if __name__ == "__main__":
    main()
