"""Stage plumbing shared by every modality's pipeline.

Each modality (``obliviate.llm.pipeline``, ``obliviate.diffusion.pipeline``) offers the same
stage functions to the CLI; what does not depend on the modality lives here: opening a run
directory, recording the task, refusing to resume on other data, listing a run's models, and
the resumable attack loop (skip what is done, record what ran).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from obliviate.core.errors import ObliviateError
from obliviate.core.recipe import RecipeBase, StrictModel, dump_recipe, validate
from obliviate.core.result import AttackResult
from obliviate.core.rundir import RunDir, environment_info, utc_now
from obliviate.core.task import UnlearningTask

MANIFEST = "unlearned.json"
"""The file that marks a finished unlearned model: ``models/unlearned/<method>/unlearned.json``."""


def open_run(recipe: RecipeBase, output_dir: str | Path | None, command: str) -> RunDir:
    """Create (or reopen) the run directory and append ``command`` to its audit record."""
    name = recipe.name
    run = RunDir(Path(output_dir or recipe.output_dir or Path("runs") / name)).create()
    text = dump_recipe(recipe)
    run.write_recipe(text)
    record = run.read_record()
    record.setdefault("commands", []).append({
        "command": command, "started": utc_now(),
        "recipe_sha256": hashlib.sha256(text.encode()).hexdigest()})
    run.update_record(name=name, modality=getattr(recipe, "modality", None),  # subclasses
                      environment=environment_info(), commands=record["commands"],
                      recipe=recipe.model_dump(mode="json"))
    return run


def record_task(run: RunDir, task: UnlearningTask) -> UnlearningTask:
    """Write the task's provenance (split names, sizes, hashes) to the run."""
    run.write_task(task.provenance())
    run.update_record(task=task.provenance())
    return task


def recorded(run: RunDir, stage: str) -> dict[str, Any]:
    """The audit record of ``stage`` (empty if it never ran)."""
    return run.read_record().get("stages", {}).get(stage, {})


def check_same_data(run: RunDir, stage: str, recorded_hash: Any, current: Any) -> None:
    """Refuse to resume or reuse a stage that ran on other data: one run directory, one task."""
    if recorded_hash is not None and recorded_hash != current:
        raise ObliviateError(f"{run.root}: {stage} ran on different data than this recipe's "
                             "task (the data hashes differ); use a new --output for new data")


def check_split_hashes(run: RunDir, stage: str, task: UnlearningTask) -> None:
    """:func:`check_same_data` on every split of ``task`` against ``stage``'s record."""
    before = recorded(run, stage).get("data")
    current = {s: info["sha256"] for s, info in task.provenance()["splits"].items()}
    check_same_data(run, stage, {s: info["sha256"] for s, info in before.items()}
                    if before else None, current)


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
                force: bool = False) -> dict[str, dict[str, Any]]:
    """Run every attack on every target, skipping those already done (unless ``force``);
    results go to ``attacks/<model>/<attack>.json`` and the run's audit record."""
    out: dict[str, dict[str, Any]] = {}
    for name in targets:
        for attack_name, (cls, config) in attacks.items():
            stage = f"attack_{name}_{attack_name}"
            path = run.root / "attacks" / name / f"{attack_name}.json"
            if not force and run.stage_done(stage) and path.is_file():
                out.setdefault(name, {})[attack_name] = recorded(run, stage)
                continue
            result = attack_one(name, cls, config)
            result.save(path)
            out.setdefault(name, {})[attack_name] = run.record_stage(
                stage, status="done", model=name, attack=attack_name, metric=result.metric,
                plain=result.plain, attacked=result.attacked, oracle_plain=result.oracle_plain,
                oracle_attacked=result.oracle_attacked, recovery=result.recovery,
                seconds=result.seconds, output=str(path), config=config.model_dump(mode="json"))
    return out
