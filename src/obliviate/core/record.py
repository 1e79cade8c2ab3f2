"""The typed run record: what each stage kind writes into ``run.json``, and the integrity data
that every model a run writes, evaluates or attacks carries.

A stage is named ``<kind>_<subject>`` (``finetune_target``, ``unlearn_npo``,
``eval_unlearned/npo``, ``attack_target_relearning``) and its record is validated against its
kind's schema on every update (:meth:`RunDir.record_stage`), so a misspelt or unknown field is
an error where it is written, not a silent gap in the audit. Both modalities record the same
:class:`ModelFiles` for each model: the SHA-256 of every file of its folder (weights, config,
tokenizer, generation config, manifest, VAE), its path relative to the run root, and, for a
prompt-only model, the files of the model whose weights it uses. ``obliviate audit --verify``
and every evaluation or attack re-hash them before use
(:func:`obliviate.core.integrity.verify_model`).

A new stage kind is one :class:`StageRecord` subclass plus :func:`register_stage_kind`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError

from obliviate.core.errors import ObliviateError
from obliviate.core.io import sha256_file
from obliviate.core.recipe import StrictModel

Status = Literal["running", "done", "failed"]
Number = float | Literal["inf", "-inf"] | None  # JSON-ready: inf is written as a string
Json = dict[str, Any]


class ModelFiles(StrictModel):
    """Integrity data of one model folder, the same for every modality and role."""

    path: str = Field(description="the folder, relative to the run root when inside the run")
    files: dict[str, str] = Field(description="file path inside the folder -> SHA-256")
    weights_sha256: str | None = Field(
        default=None, description="SHA-256 over the safetensors files alone (the audit's "
                                  "short fingerprint); None for a prompt-only model")
    base: ModelFiles | None = Field(
        default=None, description="a prompt-only model: the model whose weights it uses")


class StageRecord(StrictModel):
    """What every stage records: its status, timing, what decided whether it could be reused
    and the warnings a reader must see beside its numbers."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    status: Status
    updated: str | None = None
    started: str | None = None
    seconds: Number = None
    error: str | None = None
    output: str | None = None
    inputs: Json | None = Field(default=None, description="what the stage's result depends on")
    inputs_sha256: str | None = None
    rerun_reason: str | None = Field(default=None, description="why a recorded stage re-ran")
    modified_models: list[str] | None = Field(
        default=None, description="models used although their files differed from the record "
                                  "(--allow-modified)")
    warnings: list[str] = Field(default_factory=list)


class TrainingRecord(StageRecord):
    """A stage that trains and writes a model (fine-tuning, the judge, unlearning)."""

    produced: ModelFiles | None = None
    weights_sha256: str | None = None
    model_path: str | None = None
    config: Json | None = None
    steps: int | None = None
    final_loss: Number = None
    history: list[Json] | None = None
    resumed_from: int | None = None
    trainable_parameters: int | None = None
    total_parameters: int | None = None
    peak_memory: Json | Number = None
    device: str | None = None


class FinetuneRecord(TrainingRecord):
    """``finetune_<role>``: the target (forget ∪ retain) or the oracle (retain only)."""

    role: str | None = None
    split: Json | None = None
    prompt_style: str | None = None
    images_seen: int | None = None


class JudgeRecord(TrainingRecord):
    """``finetune_judge``: the diffusion judge (a classifier of generated images)."""

    split: Json | None = None
    holdout_accuracy: Number = None


class UnlearnRecord(TrainingRecord):
    """``unlearn_<method>``: one method applied to the target."""

    method: str | None = None
    paper: str | None = None
    data: dict[str, Json] | None = None
    train: Json | None = None
    lora: Json | None = None
    selection: Json | None = None
    target: str | None = None
    source: ModelFiles | None = Field(default=None, description="the target as it was read")
    target_weights_sha256: str | None = None
    manifest_sha256: str | None = None
    details: Json | None = None


class EvalRecord(StageRecord):
    """``eval_<model>``: the suites run on one model."""

    model: str | None = None
    evaluated: ModelFiles | None = None
    judge: ModelFiles | None = None
    weights_sha256: str | None = None
    summary: dict[str, Number] | None = None
    suites: list[str] | None = None
    left_out: dict[str, str] | None = Field(
        default=None, description="default suites that do not apply to the task's data -> why")
    options: Json | None = None
    samples: str | None = None


class AttackRecord(StageRecord):
    """``attack_<model>_<attack>``: one attack on one model, beside the oracle."""

    model: str | None = None
    attack: str | None = None
    attacked_model: ModelFiles | None = None
    oracle: ModelFiles | None = None
    metric: str | None = None
    plain: Number = None
    attacked: Number = None
    oracle_plain: Number = None
    oracle_attacked: Number = None
    recovery: Number = None
    config: Json | None = None


class SweepRecord(StageRecord):
    """``sweep``: a hyperparameter sweep over cells below this run."""

    cells: int | None = None
    executor: str | None = None
    ran: int | None = None
    spec: Json | None = None


class SearchRecord(StageRecord):
    """``search``: a multi-objective hyperparameter search per method below this run."""

    executor: str | None = None
    spec: Json | None = None
    trials: dict[str, int] | None = None
    hypervolume: dict[str, Number] | None = None


STAGE_KINDS: dict[str, type[StageRecord]] = {}
"""Stage-name prefix -> schema; the longest matching prefix wins (``finetune_judge`` before
``finetune_``)."""


def register_stage_kind(prefix: str, schema: type[StageRecord]) -> type[StageRecord]:
    STAGE_KINDS[prefix] = schema
    return schema


for _prefix, _schema in (("finetune_judge", JudgeRecord), ("finetune_", FinetuneRecord),
                         ("unlearn_", UnlearnRecord), ("eval_", EvalRecord),
                         ("attack_", AttackRecord), ("sweep", SweepRecord),
                         ("search", SearchRecord)):
    register_stage_kind(_prefix, _schema)


def stage_schema(name: str) -> type[StageRecord]:
    """The schema of stage ``name`` (by its kind's prefix)."""
    matches = [p for p in STAGE_KINDS if name == p or name.startswith(p)]
    if not matches:
        raise ObliviateError(f"stage {name!r}: unknown stage kind; known: "
                             f"{', '.join(sorted(STAGE_KINDS))}")
    return STAGE_KINDS[max(matches, key=len)]


def validate_stage(name: str, stage: Json, source: str = "run.json") -> Json:
    """Check ``stage`` against its kind's schema; the error names the stage and the field."""
    try:
        stage_schema(name).model_validate(stage)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ObliviateError(f"{source}: stage {name}: {where}: {first['msg']}") from None
    return stage


# -- integrity: hashing every file of a model folder ------------------------------------------
SKIPPED = {"checkpoints"}
"""Folders inside a model folder that are not part of the model (resumable training state)."""
SKIPPED_FILES = {"README.md"}
"""Files of a model folder that change no behaviour and are rewritten as results arrive (the
model card, :mod:`obliviate.core.modelcard`)."""

def model_files(folder: str | Path) -> dict[str, str]:
    """``relative path -> SHA-256`` of every file of a model folder (symlinks followed; hidden
    temporaries and resumable checkpoints left out)."""
    folder = Path(folder)
    out: dict[str, str] = {}
    if folder.is_file():
        return {folder.name: sha256_file(folder)}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not (here == folder and d in SKIPPED))
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith(".tmp") or (
                    here == folder and name in SKIPPED_FILES):
                continue
            out[(here / name).relative_to(folder).as_posix()] = sha256_file(here / name)
    return out


def relative_to_run(path: str | Path, root: str | Path) -> str:
    """``path`` relative to the run root when it lies inside the run, else absolute."""
    path, root = Path(path), Path(root)
    try:
        return Path(os.path.relpath(path.resolve(), root.resolve())).as_posix() \
            if path.resolve().is_relative_to(root.resolve()) else str(path.resolve())
    except (OSError, ValueError):
        return str(path)


def resolve_in_run(path: str, root: str | Path) -> Path:
    """A recorded path: relative ones are relative to the run root."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else Path(root) / candidate
