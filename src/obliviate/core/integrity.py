"""The integrity of a run's models: what each stage records about the model folders it wrote,
evaluated or attacked (per-file hashes, the weights hash, the base model of a prompt-only model),
and the check before a stage reads a model that its files are still those recorded.

:class:`~obliviate.core.rundir.RunDir` adds :func:`integrity_fields` to every finished stage;
:func:`verify_model` guards every read; ``obliviate audit --verify`` lists
:func:`model_differences`. Below :mod:`obliviate.core.stages` (stage plumbing), beside the run
directory: it reads a run through the small :class:`RunDir` protocol, so the two do not import
each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from obliviate.core.errors import ObliviateError
from obliviate.core.io import canonical_json, read_json, sha256_dir
from obliviate.core.record import ModelFiles, model_files, relative_to_run, resolve_in_run
from obliviate.core.safety import output_name


class RunDir(Protocol):
    """What integrity needs of a run directory (:class:`obliviate.core.rundir.RunDir`): its
    root, its record, where its models lie, and the ``--allow-modified`` bookkeeping."""

    root: Path
    allow_modified: bool
    modified: dict[str, list[str]]

    def model(self, name: str) -> Path: ...

    def read_record(self) -> dict[str, Any]: ...


def recorded(run: RunDir, stage: str) -> dict[str, Any]:
    """The audit record of ``stage`` (empty if it never ran)."""
    return run.read_record().get("stages", {}).get(stage, {})


MANIFEST = "unlearned.json"
"""The file that marks a finished unlearned model: ``models/unlearned/<method>/unlearned.json``."""


class IntegrityError(ObliviateError):
    """A model's files differ from what the run recorded when it wrote them."""


def base_model_path(folder: str | Path, base: str) -> Path:
    """Where the base model a manifest names lies: relative names are relative to the run root
    (the closest folder above ``folder`` holding ``run.json``), so a copied run uses its own
    target; older manifests that named it relative to the working directory still resolve."""
    if Path(base).is_absolute():
        return Path(base)
    for parent in Path(folder).resolve().parents:
        if (parent / "run.json").is_file() and (parent / base).exists():
            return parent / base
    return Path(base)


def describe_model(run: RunDir, path: str | Path) -> ModelFiles:
    """The integrity data of the model folder at ``path`` (see :class:`ModelFiles`)."""
    path = Path(path)
    weights = path / "model" if (path / "model").is_dir() else path
    safetensors = sorted(weights.glob("*.safetensors")) if weights.is_dir() else []
    base = None
    if (path / MANIFEST).is_file() and not (path / "model").is_dir():
        info = read_json(path / MANIFEST)
        if isinstance(info, dict) and info.get("base_model"):
            where = base_model_path(path, str(info["base_model"]))
            if where.is_dir():
                base = describe_model(run, where)
    return ModelFiles(path=relative_to_run(path, run.root), files=model_files(path),
                      weights_sha256=sha256_dir(weights, ("*.safetensors",)) if safetensors
                      else None, base=base)


def model_digest(run: RunDir, path: str | Path) -> str | None:
    """One hash of everything a model folder holds (for a stage's inputs); None if absent."""
    path = Path(path)
    if not path.exists():
        return None
    info = describe_model(run, path).model_dump()
    info.pop("path")
    return hashlib.sha256(canonical_json(info)).hexdigest()


PRODUCERS = {"target": "finetune_target", "oracle": "finetune_oracle", "judge": "finetune_judge"}


def producer(name: str) -> str | None:
    """The stage that writes model ``name`` of a run (None for a model from outside)."""
    if name in PRODUCERS:
        return PRODUCERS[name]
    if name.startswith("unlearned/") and output_name(name) == name:
        return "unlearn_" + name.removeprefix("unlearned/")
    return None


def _differences(recorded: ModelFiles, folder: Path) -> list[str]:
    on_disk = model_files(folder) if folder.exists() else {}
    out = [f"{f} changed" for f in sorted(recorded.files) if f in on_disk
           and on_disk[f] != recorded.files[f]]
    out += [f"{f} missing" for f in sorted(recorded.files) if f not in on_disk]
    out += [f"{f} added" for f in sorted(on_disk) if f not in recorded.files]
    return out


def model_differences(run: RunDir, recorded: ModelFiles) -> list[str]:
    """What differs between a model's recorded files and those on disk now (its base model's
    too, for a prompt-only model); ``[]`` when everything matches."""
    folder = resolve_in_run(recorded.path, run.root)
    out = [f"{folder / d}" for d in _differences(recorded, folder)]
    if recorded.base is not None:
        out += model_differences(run, recorded.base)
    return out


def recorded_model(run: RunDir, name: str) -> tuple[str, ModelFiles] | None:
    """``(stage, files)`` the run recorded for its model ``name``, if it recorded them."""
    stage = producer(name)
    if stage is None:
        return None
    info = recorded(run, stage)
    if info.get("status") != "done" or not isinstance(info.get("produced"), dict):
        return None
    return stage, ModelFiles.model_validate(info["produced"])


def verify_model(run: RunDir, name: str) -> None:
    """Before a stage reads model ``name`` of the run: its files must be those recorded when it
    was written. A difference is refused in one line naming the first changed file, unless the
    command passes ``--allow-modified`` (then every stage it records says which files differed).
    """
    found = recorded_model(run, name)
    if found is None:
        return
    stage, files = found
    problems = model_differences(run, files)
    if not problems:
        return
    if run.allow_modified:
        run.modified[name] = problems
        return
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise IntegrityError(f"{problems[0]}{more}: differs from what {stage} recorded; pass "
                         f"--allow-modified to use {name} as it is, or --force to re-run {stage}")


MIN_JUDGE_ACCURACY = 0.8
"""Below this holdout accuracy, a judge's verdicts (unlearning and retain accuracy) are flagged:
a judge that misreads a third of real images cannot say what a model generates."""


def eval_warnings(run: RunDir, stage: str, info: Mapping[str, Any]) -> list[str]:
    """Why an evaluation's numbers may not be trusted: no oracle to compare with, a judge below
    :data:`MIN_JUDGE_ACCURACY` on its holdout, metrics a suite skipped for lack of data."""
    stages = run.read_record()["stages"]
    out = []
    if stage != "eval_oracle" and stages.get("eval_oracle", {}).get("status") != "done":
        out.append("no oracle evaluation in this run: the comparisons with the oracle (Forget "
                   "Quality, PrivLeak, the gaps to the oracle) are missing")
    accuracy = stages.get("finetune_judge", {}).get("holdout_accuracy")
    if isinstance(accuracy, (int, float)) and accuracy < MIN_JUDGE_ACCURACY:
        out.append(f"the judge's holdout accuracy is {accuracy:.3g}, below "
                   f"{MIN_JUDGE_ACCURACY:g}: the accuracies it reports cannot be trusted")
    folder = Path(str(info.get("output") or ""))
    for file in sorted(folder.glob("*.json")) if info.get("output") and folder.is_dir() else []:
        try:
            skipped = (read_json(file).get("provenance") or {}).get("skipped") or {}
        except (ObliviateError, AttributeError):
            continue
        out += [f"{file.stem}: {metric} skipped ({why})" for metric, why in skipped.items()]
    return out


def run_warnings(run: RunDir) -> list[str]:
    """Every warning the run's records hold, as ``stage: warning`` lines (for tables, reports)."""
    return [f"{name.removeprefix('eval_')}: {w}"
            for name, stage in run.read_record()["stages"].items()
            for w in stage.get("warnings") or []]


def integrity_fields(run: RunDir, stage: str, info: Mapping[str, Any]) -> dict[str, Any]:
    """The integrity data a finished stage records, by kind: the model it wrote (and the target
    it read), the model it evaluated (and the judge), the model it attacked (and the oracle)."""
    out: dict[str, Any] = {}
    if stage.startswith("finetune_"):
        path = run.model(stage.removeprefix("finetune_"))
        if path.is_dir():
            out["produced"] = describe_model(run, path).model_dump()
            out["weights_sha256"] = out["produced"]["weights_sha256"]
    elif stage.startswith("unlearn_"):
        path = run.model("unlearned/" + stage.removeprefix("unlearn_"))
        if path.is_dir():
            out["produced"] = describe_model(run, path).model_dump()
        target = info.get("target")
        if target and Path(str(target)).is_dir():
            out["source"] = describe_model(run, str(target)).model_dump()
    elif stage.startswith("eval_") and info.get("model"):
        model = Path(str(info["model"]))
        if model.exists():
            out["evaluated"] = describe_model(run, model).model_dump()
            out["weights_sha256"] = out["evaluated"]["weights_sha256"]
        if run.model("judge").is_dir() and (run.model("judge") / "config.json").is_file():
            out["judge"] = describe_model(run, run.model("judge")).model_dump()
    if stage.startswith("eval_"):
        out["warnings"] = eval_warnings(run, stage, info)
    return out
