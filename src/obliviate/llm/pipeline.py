"""LLM stages run by the CLI: build the task, fine-tune target and oracle, evaluate.

Each stage records itself in the run directory's ``run.json``; a stage already marked done
(with its outputs present) is skipped, so re-running a command resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from obliviate.core.recipe import dump_recipe
from obliviate.core.rundir import RunDir, environment_info, utc_now
from obliviate.core.task import UnlearningTask
from obliviate.llm.finetune import Role, finetune
from obliviate.llm.recipe import LLMRecipe
from obliviate.llm.task import build_task


def open_run(recipe: LLMRecipe, output_dir: str | Path | None, command: str) -> RunDir:
    run = RunDir(Path(output_dir or recipe.output_dir or Path("runs") / recipe.name)).create()
    run.write_recipe(dump_recipe(recipe))
    record = run.read_record()
    record.setdefault("commands", []).append({"command": command, "started": utc_now()})
    run.update_record(name=recipe.name, modality=recipe.modality,
                      environment=environment_info(), commands=record["commands"])
    return run


def prepare_task(recipe: LLMRecipe, run: RunDir) -> UnlearningTask:
    task = build_task(recipe.task, seed=recipe.seed)
    run.write_task(task.provenance())
    run.update_record(task=task.provenance())
    return task


def finetune_stage(recipe: LLMRecipe, run: RunDir, task: UnlearningTask,
                   roles: tuple[Role, ...] = ("target", "oracle")) -> dict[str, Any]:
    """Fine-tune each role unless it is already done; return the stage records."""
    out = {}
    for role in roles:
        stage = f"finetune_{role}"
        if run.stage_done(stage) and (run.model(role) / "config.json").is_file():
            out[role] = run.read_record()["stages"][stage]
            continue
        out[role] = finetune(role, recipe.model, recipe.finetune, task, run, seed=recipe.seed)
    return out
