"""One run-directory layout, used by every command.

::

    RUN_DIR/
      recipe.yaml             the resolved recipe (after CLI overrides)
      run.json                the audit record: command, config, provenance, stages, status
      task.json               task provenance: split names, sizes, content hashes, seed
      models/<name>/          trained or unlearned weights (safetensors / LoRA adapter)
      checkpoints/<name>/     resumable training state, removed once the stage completes
      eval/<name>.json        evaluation results, one file per model
      attacks/<name>.json     attack results
      report/                 report.html, report.json
      run.lock, locks/        the run's file locks (run.json updates; one stage at a time)

Every update of ``run.json`` happens under ``run.lock`` (the ``filelock`` package), so two
commands on one run never lose each other's records. A stage being run holds
``locks/<stage>.lock`` from its ``running`` record to its ``done`` or ``failed`` one: a second
command that would run the same stage is refused in one line, while commands on other stages
proceed. The locks are operating-system locks, released when a process dies (``kill -9``
included), so a stage left ``running`` by a dead process can be resumed at once.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from obliviate.core.errors import ObliviateError
from obliviate.core.integrity import integrity_fields
from obliviate.core.io import atomic_write_json, atomic_write_text, read_json, to_jsonable
from obliviate.core.record import validate_stage

LOCK_TIMEOUT = 120.0
"""Seconds a command waits for another one's ``run.json`` update before giving up."""

_CLAIMS: dict[tuple[str, str], FileLock] = {}
"""Stage locks this process holds: (run root, stage) -> lock (see :func:`fail_claimed`)."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def environment_info() -> dict[str, Any]:
    """Package versions and machine facts recorded in every run."""
    import obliviate

    info: dict[str, Any] = {
        "obliviate": obliviate.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
    }
    for module in ("torch", "transformers", "peft", "accelerate", "diffusers"):
        mod = sys.modules.get(module)
        if mod is not None:
            info[module] = getattr(mod, "__version__", "unknown")
    return info


@dataclass
class RunDir:
    """A run directory; all paths a command writes are derived from here.

    ``force`` (re-run the stages a command covers even where their record is current) and
    ``allow_modified`` (use models whose files differ from the record, saying so in the
    record) are the command's options, set by :func:`obliviate.core.stages.open_run`.
    """

    root: Path
    force: bool = False
    allow_modified: bool = False

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self._lock: FileLock | None = None
        self.finished: set[str] = set()  # stages this command ran (--force re-runs them once)
        self.modified: dict[str, list[str]] = {}  # models used although modified
        self._rerun_reason: dict[str, str] = {}
        self._pending_inputs: dict[str, Any] = {}  # from stage_done, recorded when it starts

    def create(self) -> RunDir:
        from obliviate.core.safety import check_utf8_path

        check_utf8_path(self.root, "the run directory (--output)")
        if self.root.exists() and not self.root.is_dir():
            raise ObliviateError(f"{self.root}: exists and is not a folder (choose another "
                                 "--output)")
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def record_path(self) -> Path:
        return self.root / "run.json"

    def model(self, name: str) -> Path:
        return self.root / "models" / name

    def checkpoints(self, name: str) -> Path:
        return self.root / "checkpoints" / name

    def eval(self, name: str) -> Path:
        return self.root / "eval" / f"{name}.json"

    def eval_dir(self, name: str) -> Path:
        """Where the evaluation of model ``name`` goes: inside ``eval/`` whatever the name (a
        path outside the run gets a derived name, see :func:`output_name`)."""
        from obliviate.core.safety import output_name

        return self.root / "eval" / output_name(name)

    def attack(self, name: str) -> Path:
        return self.root / "attacks" / f"{name}.json"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def write_recipe(self, text: str) -> Path:
        return atomic_write_text(self.root / "recipe.yaml", text)

    def write_task(self, provenance: dict[str, Any]) -> Path:
        return atomic_write_json(self.root / "task.json", provenance)

    # -- locks ------------------------------------------------------------------------------
    def lock(self) -> FileLock:
        """The run's lock (reentrant): hold it around every read-modify-write of ``run.json``."""
        if self._lock is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(str(self.root / "run.lock"), timeout=LOCK_TIMEOUT)
        return self._lock

    def _claim(self, stage: str) -> None:
        key = (str(self.root.resolve()), stage)
        if key in _CLAIMS:
            return
        folder = self.root / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / f"{stage.replace('/', '__')}.lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise ObliviateError(f"{self.root}: stage {stage} is being run by another command "
                                 "right now; wait for it to finish, or use another "
                                 "--output") from None
        _CLAIMS[key] = lock

    def _release(self, stage: str) -> None:
        lock = _CLAIMS.pop((str(self.root.resolve()), stage), None)
        if lock is not None:
            lock.release()

    # -- the audit record -------------------------------------------------------------------
    def read_record(self) -> dict[str, Any]:
        if not self.record_path.is_file():
            return {"created": utc_now(), "stages": {}}
        record = read_json(self.record_path)
        fix = "move it away or use a new --output"
        if not isinstance(record, dict):
            raise ObliviateError(f"{self.record_path}: not a run record (a JSON object), got "
                                 f"{type(record).__name__}; {fix}")
        stages = record.setdefault("stages", {})
        if not isinstance(stages, dict):
            raise ObliviateError(f"{self.record_path}: 'stages' must be an object, got "
                                 f"{type(stages).__name__}; {fix}")
        for name, stage in stages.items():
            if not isinstance(stage, dict):
                raise ObliviateError(f"{self.record_path}: stage {name} must be an object, got "
                                     f"{type(stage).__name__}; {fix}")
        return record

    def update_record(self, **fields: Any) -> dict[str, Any]:
        with self.lock():
            record = self.read_record()
            record.update(to_jsonable(fields))
            record["updated"] = utc_now()
            atomic_write_json(self.record_path, record)
        return record

    def stage_done(self, name: str, inputs: Any = None,
                   checkpoints: str | Path | None = None) -> bool:
        """Whether stage ``name`` is done and can be reused as it is: not when the command
        forces a re-run (``--force``, once per command), nor when ``inputs`` (what its result
        depends on) differ from those it recorded; the stage's record then says why it re-ran.

        ``checkpoints``: the stage's resumable state, removed when the stage must start afresh
        (forced, or its inputs changed since the checkpoint was written) so that it is never
        resumed from another configuration's training."""
        stage = self.read_record().get("stages", {}).get(name, {})
        if inputs is not None:
            self._pending_inputs[name] = to_jsonable(inputs)
        reason = None
        if self.force and name not in self.finished:
            reason = "--force"
        elif inputs is not None and stage.get("inputs_sha256") not in (None,
                                                                       inputs_sha256(inputs)):
            reason = f"changed: {diff_inputs(stage.get('inputs') or {}, to_jsonable(inputs))}"
        if reason is None and stage.get("status") == "done":
            return True
        if inputs is not None:  # the caller runs the stage now: take its lock before any write
            self._claim(name)
        if reason is None:
            return False
        if stage:
            self._rerun_reason[name] = reason
        if checkpoints is not None and Path(checkpoints).is_dir():
            import shutil

            shutil.rmtree(checkpoints, ignore_errors=True)
        return False

    def record_stage(self, name: str, **info: Any) -> dict[str, Any]:
        """Merge ``info`` into the record of stage ``name`` (status, seconds, outputs, ...),
        validated against the stage kind's schema (:mod:`obliviate.core.record`).

        ``status="running"`` starts the record afresh and takes the stage's lock (refused in
        one line while another command runs it); ``done`` and ``failed`` release it. A done
        stage gains the integrity data of the models it wrote, evaluated or attacked."""
        status = info.get("status")
        if status == "running" and info.get("inputs") is None and name in self._pending_inputs:
            info["inputs"] = self._pending_inputs[name]
        if "inputs" in info and info["inputs"] is not None:
            info["inputs"] = to_jsonable(info["inputs"])
            info["inputs_sha256"] = inputs_sha256(info["inputs"])
        if status == "done":
            info = {**integrity_fields(self, name, info), **info}
        if self.modified:
            info.setdefault("modified_models", [f"{m}: {', '.join(p)}"
                                                for m, p in self.modified.items()])
        if status == "running":
            self._claim(name)
        try:
            with self.lock():
                record = self.read_record()
                stages = record["stages"]
                stage = {"started": utc_now()} if status == "running" else \
                    dict(stages.get(name, {}))
                reason = self._rerun_reason.get(name)
                if status == "running" and reason:
                    stage["rerun_reason"] = reason
                stage.update(to_jsonable(info))
                stage["updated"] = utc_now()
                validate_stage(name, stage, source=str(self.record_path))
                stages[name] = stage
                record["updated"] = utc_now()
                atomic_write_json(self.record_path, record)
        except BaseException:
            if status == "running":
                self._release(name)
            raise
        if status in ("done", "failed"):
            if status == "done":
                self.finished.add(name)
            self._release(name)
        return stage


def inputs_sha256(inputs: Any) -> str:
    import hashlib

    from obliviate.core.io import canonical_json

    return hashlib.sha256(canonical_json(inputs)).hexdigest()


def diff_inputs(before: Any, after: Any, prefix: str = "") -> str:
    """The first differences between two JSON-like values, as ``key: old -> new``."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in [*a, *(k for k in b if k not in a)]:  # in the order they are written
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        elif a != b:
            out.append(f"{path or 'value'}: {_short(a)} -> {_short(b)}")

    walk(before, after, prefix)
    return "; ".join(out[:3]) + (f" (+{len(out) - 3} more)" if len(out) > 3 else "")


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def fail_claimed(error: str) -> None:
    """Record every stage this process is running as failed with ``error`` and release it: the
    CLI calls this on any error, so no stage stays ``running`` after its command died of an
    error (a killed process leaves ``running``, and its lock is released by the system)."""
    for (root, stage) in list(_CLAIMS):
        try:
            RunDir(Path(root)).record_stage(stage, status="failed", error=error)
        except Exception:  # the record itself is what failed: release the lock all the same
            lock = _CLAIMS.pop((root, stage), None)
            if lock is not None:
                lock.release()


class Stopwatch:
    """Wall-clock timer: ``with Stopwatch() as sw: ...; sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
