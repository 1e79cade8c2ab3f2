"""Stage plumbing shared by every modality's pipeline.

Each modality (``obliviate.llm.pipeline``, ``obliviate.diffusion.pipeline``) offers the same
stage functions to the CLI; what does not depend on the modality lives here: opening a run
directory (bound to one task and recipe), recording the task, refusing to resume on other data,
listing a run's models, and the resumable loops of the fine-tuning, unlearning and attack stages
(skip what is current, resume what stopped, record what ran); each modality hands them what it
does differently: how one model is trained, one method run, one attack made.
The integrity of the models a stage writes, reads or attacks is :mod:`obliviate.core.integrity`.

A run is bound to what defines its experiment (:data:`BOUND`: the recipe's name, modality,
seed, task and model): a command with other values there is refused in one line naming the
difference, unless it passes ``--force``. Everything else a stage depends on is its ``inputs``:
a stage whose recorded inputs differ from the requested ones re-runs, and says why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from obliviate.core.checkpoint import latest_checkpoint
from obliviate.core.errors import ObliviateError
from obliviate.core.integrity import (
    MANIFEST,
    describe_model,
    model_digest,
    producer,
    recorded,
    verify_model,
)
from obliviate.core.io import canonical_json
from obliviate.core.recipe import (
    RecipeBase,
    StrictModel,
    defining,
    defining_keys,
    dump_recipe,
    validate,
)
from obliviate.core.result import AttackResult
from obliviate.core.rundir import RunDir, diff_inputs, environment_info, utc_now
from obliviate.core.safety import check_run_name, check_utf8_path, output_name, printable
from obliviate.core.task import Role, UnlearningTask

BOUND = ("name", "modality", "seed", "task", "model")
"""The recipe sections that define a run's experiment: another value is another run."""


def open_run(recipe: RecipeBase, output_dir: str | Path | None, command: str,
             force: bool = False, allow_modified: bool = False) -> RunDir:
    """Create (or reopen) the run directory and append ``command`` to its audit record.

    A run that recorded another recipe in :data:`BOUND` (another task, model, seed or name) is
    refused in one line naming the difference, unless ``force`` (then its stages re-run). The
    check, the recipe and the command entry are written under the run's lock, so of two
    commands started at once with different recipes, one is refused."""
    name = check_run_name(recipe.name)
    run = RunDir(Path(output_dir or recipe.output_dir or Path("runs") / name),
                 force=force, allow_modified=allow_modified).create()
    text = dump_recipe(recipe)
    dumped = recipe.model_dump(mode="json")
    with run.lock():
        record = run.read_record()
        before = record.get("recipe")
        if isinstance(before, dict) and not force:
            bound = {k: _defining(recipe, k, before.get(k)) for k in BOUND}
            now = {k: _defining(recipe, k, dumped.get(k)) for k in BOUND}
            if canonical_json(bound) != canonical_json(now):
                raise ObliviateError(
                    f"{run.root}: this run was made with another recipe ({diff_inputs(bound, now)}"
                    "); use a new --output for a new run, or --force to redo this one with it")
        run.write_recipe(text)
        commands = record.get("commands") or []
        commands.append({"command": printable(command), "started": utc_now(),
                         "recipe_sha256": hashlib.sha256(text.encode()).hexdigest(),
                         **({"force": True} if force else {}),
                         **({"allow_modified": True} if allow_modified else {})})
        run.update_record(name=name, modality=recipe.modality, environment=environment_info(),
                          commands=commands, recipe=dumped)
    return run


def _defining(recipe: RecipeBase, section: str, value: Any) -> Any:
    """A recorded or dumped recipe section without its execution-only keys and its later-added
    keys at their implicit value (:func:`obliviate.core.recipe.defining_keys`)."""
    cls = type(getattr(recipe, section, None))
    return defining_keys(cls, value) if isinstance(value, dict) else value


def record_task(run: RunDir, task: UnlearningTask) -> UnlearningTask:
    """Write the task's provenance (split names, sizes, hashes) to the run; a run that recorded
    other data (a data file edited since) is refused unless the command passes ``--force``."""
    provenance = task.provenance()
    for split in provenance["splits"].values():
        check_utf8_path(split.get("source", ""), "a data path")
    with run.lock():
        before = run.read_record().get("task")
        if isinstance(before, dict) and not run.force:
            old = {n: (s or {}).get("sha256") for n, s in (before.get("splits") or {}).items()}
            new = {n: s["sha256"] for n, s in provenance["splits"].items()}
            if old != new:
                changed = [n for n in sorted(set(old) | set(new)) if old.get(n) != new.get(n)]
                raise ObliviateError(
                    f"{run.root}: this run recorded different data for its task (split "
                    f"{', '.join(changed)}: sha256 {str(old.get(changed[0]))[:12]} -> "
                    f"{str(new.get(changed[0]))[:12]}); use a new --output for new data, or "
                    "--force to redo this run with it")
        run.write_task(provenance)
        run.update_record(task=provenance)
    return task


def check_same_data(run: RunDir, stage: str, recorded_hash: Any, current: Any) -> None:
    """Refuse to resume or reuse a stage that ran on other data: one run directory, one task
    (with ``--force`` the stage re-runs on the new data instead)."""
    if recorded_hash is not None and recorded_hash != current and not run.force:
        raise ObliviateError(f"{run.root}: {stage} ran on different data than this recipe's "
                             "task (the data hashes differ); use a new --output for new data")


def check_split_hashes(run: RunDir, stage: str, task: UnlearningTask) -> None:
    """:func:`check_same_data` on every split of ``task`` against ``stage``'s record."""
    before = recorded(run, stage).get("data")
    current = {s: info["sha256"] for s, info in task.provenance()["splits"].items()}
    check_same_data(run, stage, {s: info["sha256"] for s, info in before.items()}
                    if before else None, current)


TrainOne = Callable[[Role], dict[str, Any]]
"""``(role) -> stage record``: trains the run's ``role`` model (target, oracle) and saves it."""


def finetune_loop(recipe: RecipeBase, run: RunDir, roles: Sequence[Role],
                  split_sha256: Callable[[Role], str], train_one: TrainOne,
                  depends_also: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fine-tune each role unless it is done with the same inputs (the recipe's ``model``,
    ``finetune`` and seed, the sha256 of the role's training split, ``split_sha256(role)``, and
    ``depends_also``); ``train_one(role)`` resumes from the role's last checkpoint. A stage done
    or checkpointed on other data is refused (:func:`check_same_data`). Returns each role's
    stage record."""
    out = {}
    for role in roles:
        stage, data = f"finetune_{role}", split_sha256(role)
        depends = {"model": defining(recipe.model), "finetune": defining(recipe.finetune),
                   "seed": recipe.seed, "data": data, **(depends_also or {})}
        done = run.stage_done(stage, depends, run.checkpoints(role)) and \
            (run.model(role) / "config.json").is_file()
        if done or latest_checkpoint(run.checkpoints(role)) is not None:
            check_same_data(run, stage, recorded(run, stage).get("split", {}).get("sha256"), data)
        out[role] = recorded(run, stage) if done else train_one(role)
    return out


UnlearnOne = Callable[[str, Any, StrictModel, Path, dict[str, Any]], dict[str, Any]]
"""``(method name, method class, its config, output folder, the stage's inputs) -> stage
record``: runs one method on the target (the modality loads it) and saves the unlearned model;
the inputs hold the target's digest (``"target"``)."""


def unlearn_loop(run: RunDir, task: UnlearningTask, methods: Mapping[str, tuple[Any, StrictModel]],
                 target: Path, unlearn_one: UnlearnOne, seed: int, verify_target: bool = True,
                 depends: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run every method on ``target``, skipping those done with the same inputs (the method's
    config, ``depends``: what else the modality's methods read, the seed, the task's data and
    the target's files); a method whose checkpoints remain resumes in ``unlearn_one``, once its
    data is checked to be the same. ``verify_target``: the run's own target is checked against
    its recorded files before a method reads it (:func:`verify_model`). Returns each method's
    stage record (``unlearn_<name>``; the model goes to ``models/unlearned/<name>``)."""
    data = task.provenance()["splits"]
    out = {}
    for name, (cls, config) in methods.items():
        stage = f"unlearn_{name}"
        out_dir = run.model(f"unlearned/{name}")
        inputs = {"config": config, **(depends or {}), "seed": seed, "data": data,
                  "target": model_digest(run, target)}
        done = run.stage_done(stage, inputs, out_dir / "checkpoints") and \
            (out_dir / MANIFEST).is_file()
        if done or (out_dir / "checkpoints").is_dir():
            check_split_hashes(run, stage, task)
        if done:
            out[name] = recorded(run, stage)
            continue
        if verify_target:
            verify_model(run, "target")
        out[name] = unlearn_one(name, cls, config, out_dir, inputs)
    return out


def available_models(run: RunDir) -> list[str]:
    """Models of a run in evaluation order: oracle first (its results are the yardstick)."""
    names = [n for n in ("oracle", "target") if (run.model(n) / "config.json").is_file()]
    unlearned = run.root / "models" / "unlearned"
    if unlearned.is_dir():
        names += [f"unlearned/{p.name}" for p in sorted(unlearned.iterdir())
                  if (p / MANIFEST).is_file()]
    return names


def oracle_first(names: Sequence[str]) -> list[str]:
    return ["oracle", *[n for n in names if n != "oracle"]] if "oracle" in names else list(names)


def resolve_attacks(names: Sequence[str], options: Mapping[str, Mapping[str, Any]],
                    modality: str) -> dict[str, tuple[Any, StrictModel]]:
    """Each attack's class and validated config (errors name ``attack.options.<name>``)."""
    from obliviate.core.registry import ATTACKS

    out = {}
    for name in names:
        cls = ATTACKS.get(name, modality)
        out[name] = (cls, validate(cls.config_class, dict(options.get(name, {})),
                                   source=f"attack.options.{name}"))
    return out


def attack_targets(run: RunDir, models: Sequence[str] | None,
                   listed: Sequence[str] | None) -> list[str]:
    """Models named on the command line (they must exist), else the recipe's list of models
    worth attacking that the run has, else every model but the oracle."""
    if not (run.model("oracle") / "config.json").is_file():
        raise ObliviateError(f"{run.root}: attacks compare against the oracle; run "
                             "`obliviate finetune --role oracle` first")
    if models:
        return list(models)
    present = [m for m in available_models(run) if m != "oracle"]
    return [m for m in listed if m in present] if listed is not None else present


class ResidentModels:
    """Models loaded on first use and kept: the ``pinned`` ones (the oracle, a judge) for the
    whole stage, the others one at a time, so attacking many models holds at most one of them
    beside the oracle."""

    def __init__(self, load: Callable[[str], Any], pinned: Sequence[str] = ("oracle",)) -> None:
        self.load, self.pinned = load, tuple(pinned)
        self.loaded: dict[str, Any] = {}

    def __call__(self, name: str) -> Any:
        if name not in self.loaded:
            if name not in self.pinned:
                for other in [n for n in self.loaded if n not in self.pinned]:
                    del self.loaded[other]
            self.loaded[name] = self.load(name)
        return self.loaded[name]


AttackOne = Callable[[str, Any, StrictModel], AttackResult]
"""``(model name, attack class, config) -> result``: runs one attack on one model (and the
oracle); the modality loads models lazily inside it."""


def attack_loop(run: RunDir, targets: Sequence[str],
                attacks: Mapping[str, tuple[Any, StrictModel]], attack_one: AttackOne,
                force: bool = False, depends: Mapping[str, Any] | None = None
                ) -> dict[str, dict[str, Any]]:
    """Run every attack on every target, skipping those already done with the same inputs
    (unless ``force``); results go to ``attacks/<model>/<attack>.json`` and the run's audit
    record. ``depends``: what every attack's result also depends on (the probe, the seed).

    Each model (and the oracle) is checked against its recorded files before it is attacked
    (:func:`verify_model`), and each result records the files of both."""
    out: dict[str, dict[str, Any]] = {}
    oracle = run.model("oracle")
    for name in targets:
        label = output_name(name)
        for attack_name, (cls, config) in attacks.items():
            stage = f"attack_{label}_{attack_name}"
            path = run.root / "attacks" / label / f"{attack_name}.json"
            model = run.model(name) if producer(name) else Path(name)
            current = {"config": config.model_dump(mode="json"), **(depends or {}),
                       "model": model_digest(run, model), "oracle": model_digest(run, oracle)}
            if not force and run.stage_done(stage, current) and path.is_file():
                out.setdefault(name, {})[attack_name] = recorded(run, stage)
                continue
            verify_model(run, name)
            verify_model(run, "oracle")
            run.record_stage(stage, status="running", model=name, attack=attack_name,
                             inputs=current)
            result = attack_one(name, cls, config)
            result.save(path)
            out.setdefault(name, {})[attack_name] = run.record_stage(
                stage, status="done", model=name, attack=attack_name, metric=result.metric,
                plain=result.plain, attacked=result.attacked, oracle_plain=result.oracle_plain,
                oracle_attacked=result.oracle_attacked, recovery=result.recovery,
                seconds=result.seconds, output=str(path), config=config.model_dump(mode="json"),
                attacked_model=describe_model(run, model).model_dump() if model.exists()
                else None, oracle=describe_model(run, oracle).model_dump())
    return out
