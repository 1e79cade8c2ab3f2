"""Crash-safe checkpoint folders shared by every training loop.

A checkpoint is a folder ``step-N`` written in a temporary folder and renamed into place, with
``state.json`` written last: a folder without it, or a temporary one left by a kill, is never
read. Older checkpoints are removed once a newer one is complete. What the folder holds
(weights, optimizer state, RNG) is the training loop's business.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from obliviate.core.io import atomic_write_json

STATE = "state.json"


def latest_checkpoint(ckpt_dir: str | Path | None) -> Path | None:
    """The complete checkpoint with the highest step in ``ckpt_dir``, or ``None``."""
    if ckpt_dir is None:
        return None
    done = [p for p in Path(ckpt_dir).glob("step-*") if (p / STATE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def write_checkpoint(ckpt_dir: str | Path, step: int, write: Callable[[Path], None],
                     state: dict[str, Any]) -> Path:
    """``write(folder)`` saves the loop's files, then ``state`` (with ``step``) completes
    ``step-<step>`` atomically; older checkpoints are dropped."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".step-", dir=ckpt_dir))
    try:
        write(tmp)
        atomic_write_json(tmp / STATE, {"step": step, **state})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = ckpt_dir / f"step-{step}"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in ckpt_dir.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final
