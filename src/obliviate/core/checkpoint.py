"""Crash-safe checkpoint folders shared by every training loop.

A checkpoint is a folder ``step-N`` written in a temporary folder and renamed into place, with
``state.json`` written last: a folder without it, or a temporary one left by a kill, is never
read. Older checkpoints are removed once a newer one is complete. What the folder holds
(weights, optimizer state, RNG) is the training loop's business; reading it goes through
:func:`read_checkpoint`, so a complete-looking checkpoint whose files are truncated, corrupt,
unsafe (a pickle that ``weights_only`` refuses) or missing is one line naming the file, with the
hint to delete that checkpoint, not a traceback that leaves the run stuck.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from obliviate.core.errors import ObliviateError
from obliviate.core.io import DiskFullError, atomic_write_json, temp_dir, writing

STATE = "state.json"
T = TypeVar("T")


class CheckpointError(ObliviateError):
    """A checkpoint that looks complete cannot be read."""


def read_checkpoint(path: str | Path, load: Callable[[Path], T]) -> T:
    """``load(path)``, with any failure to read the checkpoint's files turned into a one-line
    :class:`CheckpointError` naming the file and how to get going again."""
    from obliviate.core.safety import check_safetensors

    path = Path(path)
    try:
        check_safetensors(path)
        return load(path)
    except ObliviateError as exc:
        if "corrupt safetensors" in str(exc):
            raise CheckpointError(f"{str(exc).split('; restore')[0]}; delete {path} and re-run "
                                  "the same command to resume from the checkpoint before it (or "
                                  "from the start)") from None
        raise
    except Exception as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        named = re.search(r"[\w.-]+\.(?:pt|safetensors|json)", text)
        pickles = sorted(path.glob("*.pt"))
        from_torch = any(sign in type(exc).__name__ + text for sign in (
            "Unpickl", "weights_only", "PytorchStreamReader", "zip archive", "pickle"))
        where = Path(exc.filename) if isinstance(exc, OSError) and exc.filename else \
            path / Path(named.group(0)).name if named else \
            pickles[0] if from_torch and len(pickles) == 1 else path
        if isinstance(exc, FileNotFoundError):
            why = "missing (an incomplete checkpoint)"
        elif "weights_only" in text or "Unpickl" in type(exc).__name__ + text:
            why = "refused: not plain tensors (a corrupt or unsafe pickle)"
        else:
            why = f"cannot be read ({type(exc).__name__}: {text[:120]})"
        raise CheckpointError(f"{where}: {why}; delete {path} and re-run the same command to "
                              "resume from the checkpoint before it (or from the start)") from None


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
    tmp = temp_dir(ckpt_dir, ".step-")
    try:
        with writing(ckpt_dir / f"step-{step}", "a checkpoint"):
            write(tmp)
            atomic_write_json(tmp / STATE, {"step": step, **state})
    except DiskFullError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DiskFullError(str(exc).replace(str(tmp / STATE), str(ckpt_dir / f"step-{step}"))
                            ) from None
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
