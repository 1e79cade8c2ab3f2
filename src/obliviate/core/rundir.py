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

from obliviate.core.io import atomic_write_json, atomic_write_text, read_json


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
    """A run directory; all paths a command writes are derived from here."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def create(self) -> RunDir:
        if self.root.exists() and not self.root.is_dir():
            from obliviate.core.errors import ObliviateError

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

    def attack(self, name: str) -> Path:
        return self.root / "attacks" / f"{name}.json"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def write_recipe(self, text: str) -> Path:
        return atomic_write_text(self.root / "recipe.yaml", text)

    def write_task(self, provenance: dict[str, Any]) -> Path:
        return atomic_write_json(self.root / "task.json", provenance)

    # -- the audit record -------------------------------------------------------------------
    def read_record(self) -> dict[str, Any]:
        if self.record_path.is_file():
            return read_json(self.record_path)
        return {"created": utc_now(), "stages": {}}

    def update_record(self, **fields: Any) -> dict[str, Any]:
        record = self.read_record()
        record.update(fields)
        record["updated"] = utc_now()
        atomic_write_json(self.record_path, record)
        return record

    def stage_done(self, name: str) -> bool:
        return self.read_record().get("stages", {}).get(name, {}).get("status") == "done"

    def record_stage(self, name: str, **info: Any) -> dict[str, Any]:
        """Merge ``info`` into the record of stage ``name`` (status, seconds, outputs, ...)."""
        record = self.read_record()
        stage = record.setdefault("stages", {}).setdefault(name, {})
        stage.update(info)
        stage["updated"] = utc_now()
        record["updated"] = utc_now()
        atomic_write_json(self.record_path, record)
        return stage


class Stopwatch:
    """Wall-clock timer: ``with Stopwatch() as sw: ...; sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
