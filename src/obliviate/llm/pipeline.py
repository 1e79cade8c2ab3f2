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


def method_config(name: str, args: dict[str, Any]) -> Any:
    """Validate ``args`` against method ``name``'s config class (errors name the method)."""
    from obliviate.core.recipe import validate
    from obliviate.core.registry import METHODS

    cls = METHODS.get(name, "llm")
    return cls, validate(cls.config_class, dict(args), source=f"unlearn.method_args.{name}")


def unlearn_stage(recipe: LLMRecipe, run: RunDir, task: UnlearningTask,
                  methods: list[str] | None = None) -> dict[str, Any]:
    """Run each method on the target (skipping finished ones) and record cost and config."""
    import torch

    import obliviate.llm.methods  # noqa: F401  (registers the catalogue)
    from obliviate.core.io import atomic_write_json
    from obliviate.core.profiling import peak_memory
    from obliviate.llm.artifacts import MANIFEST, load_model_for_eval
    from obliviate.llm.data.tofu import default_tofu_root, load_idontknow
    from obliviate.llm.finetune import base_model
    from obliviate.llm.methods.base import DEFAULT_REFUSALS, UnlearnContext

    cfg = recipe.unlearn
    names = methods or cfg.methods
    resolved = {name: method_config(name, cfg.method_args.get(name, {})) for name in names}
    target = Path(cfg.target) if cfg.target else run.model("target")
    refusals = DEFAULT_REFUSALS
    if recipe.task.source == "tofu":
        root = recipe.task.tofu_path or default_tofu_root()
        if root and (Path(root) / "idontknow.jsonl").is_file():
            refusals = tuple(load_idontknow(Path(root) / "idontknow.jsonl"))
    out = {}
    for name, (cls, config) in resolved.items():
        stage = f"unlearn_{name}"
        out_dir = run.model(f"unlearned/{name}")
        if run.stage_done(stage) and (out_dir / MANIFEST).is_file():
            out[name] = run.read_record()["stages"][stage]
            continue
        model, tokenizer, fmt = load_model_for_eval(target, recipe.model)
        if getattr(cls, "starts_from", "target") == "base":
            model = base_model(recipe.model, tokenizer, recipe.seed)
        model.train()
        method = cls(config)
        ctx = UnlearnContext(tokenizer=tokenizer, fmt=fmt, task=task, train=cfg.train,
                             lora=cfg.lora, selection=cfg.selection,
                             max_length=recipe.model.max_length, refusals=refusals)
        run.record_stage(stage, status="running", method=name)
        torch.manual_seed(recipe.seed)
        outcome = method.run(model, task, out_dir, ctx=ctx)
        prompt = outcome.extra.get("prompt_format")
        atomic_write_json(out_dir / MANIFEST, {
            "method": name, "paper": cls.paper, "config": config.model_dump(mode="json"),
            "base_model": str(target), "changes_weights": cls.changes_weights,
            "prompt_format": prompt.to_dict() if prompt is not None else None})
        out[name] = run.record_stage(
            stage, status="done", method=name, paper=cls.paper,
            config=config.model_dump(mode="json"), train=cfg.train.model_dump(mode="json"),
            lora=cfg.lora.model_dump(mode="json"), seconds=outcome.seconds, steps=outcome.steps,
            trainable_parameters=outcome.trainable_parameters,
            total_parameters=outcome.total_parameters,
            peak_memory=outcome.extra.get("peak_memory") or peak_memory(),
            selection=outcome.extra.get("selection"), history=outcome.history,
            target=str(target), output=str(out_dir), data=task.provenance()["splits"])
    return out
