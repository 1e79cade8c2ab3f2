"""Diffusion stages run by the CLI: build the task, train target, oracle and judge, unlearn,
evaluate and attack — the same stage functions as every modality.

Each stage records itself in the run directory's ``run.json``; a stage already marked done
(with its outputs present) is skipped, so re-running a command resumes where it stopped.
Training stages resume from their last checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from obliviate.core import stages
from obliviate.core.errors import ObliviateError
from obliviate.core.integrity import MANIFEST, model_digest, verify_model
from obliviate.core.integrity import recorded as _recorded
from obliviate.core.precision import measured_in, precision_input
from obliviate.core.recipe import defining, offset_seed
from obliviate.core.record import relative_to_run
from obliviate.core.rundir import RunDir, environment_info
from obliviate.core.safety import output_name
from obliviate.core.stages import open_run  # noqa: F401  (every pipeline offers it)
from obliviate.core.task import TRAINING_SPLIT, Role, UnlearningTask
from obliviate.diffusion.evaluation import HEADLINE  # noqa: F401  (the CLI's table columns)
from obliviate.diffusion.recipe import DiffusionRecipe
from obliviate.diffusion.task import factors_input


def prepare_task(recipe: DiffusionRecipe, run: RunDir) -> UnlearningTask:
    from obliviate.diffusion.task import build_task

    return stages.record_task(run, build_task(recipe.task, seed=recipe.seed))


def _device() -> torch.device:
    from obliviate.diffusion.training import default_device

    return default_device()


def _shape(task: UnlearningTask) -> tuple[int, int, int]:
    meta = task.metadata
    return int(meta["num_classes"]), int(meta["image_size"]), int(meta["channels"])


# -- fine-tuning ---------------------------------------------------------------------------------
def finetune_stage(recipe: DiffusionRecipe, run: RunDir, task: UnlearningTask,
                   roles: tuple[Role, ...] = ("target", "oracle")) -> dict[str, Any]:
    """Train each role (target on forget ∪ retain, oracle on retain) unless already done, and
    the judge; return the stage records (``model_path``, ``final_loss``, ``seconds``, ...)."""
    out = stages.finetune_loop(recipe, run, roles,
                               lambda role: task.split(TRAINING_SPLIT[role]).sha256,
                               lambda role: train_role(recipe, run, task, role))
    out["judge"] = ensure_judge(recipe, run, task)[1]
    return out


def train_role(recipe: DiffusionRecipe, run: RunDir, task: UnlearningTask, role: Role
               ) -> dict[str, Any]:
    """DDPM-train a fresh denoiser (or ``model.pretrained``) for ``role`` and save it."""
    from obliviate.diffusion.data import to_tensor
    from obliviate.diffusion.models import build_denoiser, save_denoiser
    from obliviate.diffusion.training import remove_checkpoints, train_denoiser

    stage = f"finetune_{role}"
    split = task.split(TRAINING_SPLIT[role])
    device = _device()
    x, y = to_tensor(split.records, device)
    model = build_denoiser(recipe.model, *_shape(task), seed=recipe.seed).to(device)
    config = offset_seed(recipe.finetune, recipe.seed)
    run.record_stage(stage, status="running", role=role, split=split.provenance())
    outcome = train_denoiser(model, x, y, config, checkpoint_dir=run.checkpoints(role),
                             description=f"finetune {role}")
    path = save_denoiser(model, run.model(role), extra={"role": role, "task": task.name})
    remove_checkpoints(run.checkpoints(role))
    return run.record_stage(
        stage, status="done", role=role, model_path=str(path), final_loss=outcome.final_loss,
        seconds=outcome.seconds, steps=outcome.steps, split=split.provenance(),
        trainable_parameters=outcome.trainable_parameters,
        total_parameters=outcome.total_parameters, peak_memory=outcome.peak_memory,
        history=outcome.history, resumed_from=outcome.resumed_from, device=str(device),
        images_seen=outcome.steps * config.batch_size, config=config.model_dump(mode="json"))


def judge_factors(task: UnlearningTask) -> tuple[int, int] | None:
    """The sizes of the two domains whose pairs are the task's classes (styles × objects,
    ``metadata["factors"]``), for a judge with one head per domain; ``None`` for plain classes."""
    sizes = factors_input(task).get("factors")
    return (sizes[0], sizes[1]) if sizes else None


def ensure_judge(recipe: DiffusionRecipe, run: RunDir, task: UnlearningTask
                 ) -> tuple[Any, dict[str, Any]]:
    """Load the run's judge, training it first (on forget ∪ retain) when it is missing."""
    from obliviate.diffusion.data import to_tensor
    from obliviate.diffusion.judge import load_judge, save_judge, train_judge

    stage, path = "finetune_judge", run.model("judge")
    device = _device()
    full = task.full
    factors = judge_factors(task)
    depends = {"judge": recipe.evaluation.judge, "seed": recipe.seed, "data": full.sha256,
               **factors_input(task)}
    if run.stage_done(stage, depends) and (path / "config.json").is_file():
        stages.check_same_data(run, stage, _recorded(run, stage).get("split", {}).get("sha256"),
                        full.sha256)
        verify_model(run, "judge")
        return load_judge(path, device)[0], _recorded(run, stage)
    x, y = to_tensor(full.records, device)
    holdout = task.eval_splits.get("holdout")
    x_val, y_val = to_tensor(holdout.records, device) if holdout and len(holdout) else (None,
                                                                                         None)
    config = offset_seed(recipe.evaluation.judge, recipe.seed)
    run.record_stage(stage, status="running", split=full.provenance())
    net, info = train_judge(x, y, task.metadata["num_classes"], config, x_val, y_val, factors)
    save_judge(net, path, info)
    record = run.record_stage(stage, status="done", model_path=str(path),
                              final_loss=info["final_loss"], seconds=info["seconds"],
                              holdout_accuracy=info.get("holdout_accuracy"),
                              split=full.provenance(), config=config.model_dump(mode="json"))
    return net, record


# -- unlearning -----------------------------------------------------------------------------------
def method_config(recipe: DiffusionRecipe, name: str) -> tuple[Any, Any]:
    """Method ``name``'s class and its config: paper defaults, then ``unlearn.train``, then
    ``unlearn.method_args.<name>`` (errors name the method)."""
    import obliviate.diffusion.methods  # noqa: F401  (registers the catalogue)
    from obliviate.core import precedence

    cls, config = precedence.method_config(name, "diffusion",
                                           recipe.unlearn.method_args.get(name, {}),
                                           shared=precedence.explicit(recipe.unlearn.train))
    return cls, offset_seed(config, recipe.seed)


def load_target(recipe: DiffusionRecipe, run: RunDir, task: UnlearningTask, path: Path,
                device: Any = None) -> Any:
    """The model at ``path``, on ``device`` (default: the one accelerate picks)."""
    from obliviate.diffusion.models import load_pretrained

    if not path.exists():
        raise ObliviateError(f"{path}: no target model (run `obliviate finetune` first, or set "
                             "unlearn.target=PATH)")
    config = recipe.model.model_copy(update={"pretrained": str(path)})
    return load_pretrained(config, *_shape(task)).to(device or _device())


def unlearn_stage(recipe: DiffusionRecipe, run: RunDir, task: UnlearningTask,
                  methods: list[str] | None = None, log_with: list[str] | None = None
                  ) -> dict[str, Any]:
    """Run each method on the target (skipping finished ones) and record cost and config;
    ``log_with`` sends each training curve live to those trackers (``RUN_DIR/logs``)."""
    from obliviate.core.io import sha256_dir
    from obliviate.core.pristine import pristine_copy
    from obliviate.diffusion import runner

    names = methods or recipe.unlearn.methods
    resolved = {name: method_config(recipe, name) for name in names}
    target = Path(recipe.unlearn.target) if recipe.unlearn.target else run.model("target")

    def unlearn_one(name: str, cls: Any, config: Any, out_dir: Path, depends: dict[str, Any]
                    ) -> dict[str, Any]:
        model = pristine_copy(  # read from disk once for every method; kept in host memory
            ("diffusion", str(target.resolve()), depends["target"], recipe.model.model_dump_json(),
             _shape(task)), lambda: load_target(recipe, run, task, target, "cpu")).to(_device())
        return runner.unlearn(
            name, cls, config, model, task, seed=recipe.seed, out_dir=out_dir, run=run,
            base_model=relative_to_run(target, run.root), log_with=log_with,
            logging_dir=run.root / "logs",
            record={"target": str(target), "target_weights_sha256": sha256_dir(
                target, ("*.safetensors",)) if target.is_dir() else None})[1]

    return stages.unlearn_loop(run, task, resolved, target, unlearn_one, recipe.seed,
                        verify_target=not recipe.unlearn.target)


# -- evaluation -----------------------------------------------------------------------------------
def model_path(run: RunDir, name: str) -> Path:
    """A model of the run (``target``, ``oracle``, ``unlearned/esd_x``), else a folder. An
    unlearned model's weights sit in its folder (in ``model/`` in runs before 0.2)."""
    inside = run.model(name)
    if (inside / MANIFEST).is_file() and (inside / "model").is_dir():
        return inside / "model"
    if inside.exists():
        return inside
    return Path(name)


def load_model(recipe: DiffusionRecipe, run: RunDir, task: UnlearningTask, name: str) -> Any:
    verify_model(run, name)  # the files the run recorded, or a one-line refusal
    return load_target(recipe, run, task, model_path(run, name)).eval()


def evaluate_stage(recipe: DiffusionRecipe, run: RunDir, task: UnlearningTask,
                   models: list[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Evaluate each model with the judge (``eval/<model>/generation.json`` and
    ``samples.png``); the oracle first, so every other model gets its gap to the oracle."""
    from obliviate.core.result import EvalResult
    from obliviate.diffusion import runner
    from obliviate.diffusion.evaluation import SUITE, neighbour_classes, reference_images
    from obliviate.diffusion.judge import features

    names = models or stages.available_models(run)
    if not names:
        raise ObliviateError(f"{run.root}: no models to evaluate (run `obliviate finetune`)")
    names = stages.oracle_first(names)
    cfg = recipe.evaluation
    oracle_file = run.root / "eval" / "oracle" / f"{SUITE}.json"
    judge, reference, neighbours = None, None, None
    if factors_input(task):  # its judge may be retrained (a head per domain) before the digest
        ensure_judge(recipe, run, task)
    summaries = {}
    for name in names:
        stage = f"eval_{output_name(name)}"
        out_dir = run.eval_dir(name)
        depends = {"evaluation": defining(cfg),
                   "seed": recipe.seed, "model": model_digest(run, model_path(run, name)),
                   "judge": model_digest(run, run.model("judge")),
                   "oracle": None if name == "oracle" else model_digest(run, oracle_file),
                   **precision_input(cfg.mixed_precision), **factors_input(task)}
        if not force and run.stage_done(stage, depends) and (out_dir / f"{SUITE}.json").is_file():
            summaries[name] = _recorded(run, stage)["summary"]
            continue
        if judge is None:
            judge = ensure_judge(recipe, run, task)[0]
            x_ref, y_ref = reference_images(task)
            from obliviate.diffusion.task import retain_classes

            keep = torch.isin(y_ref, torch.tensor(retain_classes(task)))
            reference = features(judge, x_ref[keep]).numpy()
            neighbours = neighbour_classes(judge, task, cfg.neighbours)
        oracle = EvalResult.load(oracle_file) if name != "oracle" and oracle_file.is_file() \
            else None
        path = model_path(run, name)
        model = load_model(recipe, run, task, name)
        with measured_in(cfg.mixed_precision):
            result, _ = runner.evaluate(
                model, judge, task, cfg, name=name, seed=recipe.seed, oracle=oracle,
                out_dir=out_dir, run=run, stage=stage, reference_features=reference,
                neighbours=neighbours, record={"model": str(path)},
                provenance={"model": str(path), "model_name": name, "seed": recipe.seed,
                            "obliviate": environment_info()["obliviate"], "task": task.name,
                            **precision_input(cfg.mixed_precision)})
        summaries[name] = runner.summary(result)
    return summaries


# -- attacks --------------------------------------------------------------------------------------
def attack_stage(recipe: DiffusionRecipe, run: RunDir, task: UnlearningTask,
                 models: list[str] | None = None, attacks: list[str] | None = None,
                 force: bool = False) -> dict[str, dict[str, Any]]:
    """Run each attack against each model and the oracle; ``attacks/<model>/<attack>.json``."""
    import obliviate.diffusion.attacks  # noqa: F401  (registers the attacks)
    from obliviate.core.runner import run_attack
    from obliviate.diffusion.attacks import AttackContext

    cfg = recipe.attack
    resolved = stages.resolve_attacks(attacks or cfg.attacks, cfg.options, "diffusion")
    targets = stages.attack_targets(run, models, cfg.models)
    cache: dict[str, Any] = {}  # what the attacks measured on the oracle, shared by all models
    model = stages.ResidentModels(lambda name: ensure_judge(recipe, run, task)[0] if name == "judge"
                           else load_model(recipe, run, task, name), pinned=("oracle", "judge"))

    def attack_one(name: str, cls: Any, config: Any) -> Any:
        judge, oracle = model("judge"), model("oracle")
        ctx = AttackContext(task=task, model=model(name), model_name=name, oracle=oracle,
                            judge=judge, probe=cfg.probe, seed=recipe.seed, oracle_cache=cache)
        return run_attack(cls, config, ctx, recipe.seed)

    with measured_in(cfg.mixed_precision):
        return stages.attack_loop(run, targets, resolved, attack_one, force=force,
                                  depends={"probe": cfg.probe, "seed": recipe.seed,
                                           **precision_input(cfg.mixed_precision),
                                           **factors_input(task)})
