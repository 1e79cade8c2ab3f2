"""Guards against inputs that would escape the run, hang, or crash deep inside a library.

- :func:`output_name`: a model name from ``-m`` (a path outside the run, ``../x``) becomes a safe
  name inside the run's ``eval/`` and ``attacks/`` folders, never a path out of it.
- :func:`check_run_name`: a recipe ``name`` is a plain name (it becomes ``runs/<name>``).
- :func:`check_utf8_path`: paths a run records must be valid UTF-8 (run.json is UTF-8 JSON).
- :func:`check_safetensors`: a ``.safetensors`` file's header and size are consistent, so a
  truncated or bit-flipped file is a one-line error naming it, not a library traceback.
- :func:`time_limit`: a wall-clock bound on untrusted work (a model folder's chat template).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import signal
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

from obliviate.core.errors import ConfigError, DataError, ModelLoadError, ObliviateError

_PLAIN = re.compile(r"^[A-Za-z0-9_.@+= -]+$")


def printable(path: str | Path) -> str:
    """A path as text that can always be printed (undecodable bytes as ``\\xNN``)."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_utf8_path(path: str | Path, what: str) -> None:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{printable(path)}: {what} is not valid UTF-8 (the run records paths in "
                        "UTF-8 JSON); rename it") from None


def check_run_name(name: str) -> str:
    """A recipe's ``name`` names the default run directory ``runs/<name>``: no paths."""
    if name in ("", ".", "..") or not all(_PLAIN.match(part) for part in [name]):
        raise ConfigError(f"name: {name!r} is not a plain name (letters, digits, '-', '_', '.'); "
                          "it becomes runs/<name>, so it may not be a path; use --output to "
                          "choose the run directory")
    return name


def output_name(name: str) -> str:
    """The name a model's results are filed under inside the run.

    A run's own models (``target``, ``unlearned/npo``) keep their name; anything else that would
    not stay inside ``eval/`` (an absolute path, ``..``, an empty part) becomes
    ``external/<last part>-<8 hex of the full name>``, so two models never share a folder and
    nothing is written beside the model itself."""
    parts = name.replace("\\", "/").split("/")
    if not name.startswith("/") and all(p and p not in (".", "..") and _PLAIN.match(p)
                                        for p in parts):
        return name
    last = next((p for p in reversed(parts) if p and p not in (".", "..")), "model")
    last = re.sub(r"[^A-Za-z0-9_.-]", "_", last)[:40] or "model"
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"external/{last}-{digest}"


# -- safetensors ---------------------------------------------------------------------------------
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
               "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
MAX_HEADER = 100_000_000


def check_safetensors(path: str | Path) -> None:
    """Raise a one-line :class:`ModelLoadError` naming ``path`` unless its header parses and its
    tensors exactly fill the file (what a truncated or bit-flipped file breaks); a folder:
    every ``*.safetensors`` in it."""
    path = Path(path)
    if path.is_dir():
        for file in sorted(path.rglob("*.safetensors")):
            check_safetensors(file)
        return
    size = path.stat().st_size
    bad = f"{path}: corrupt safetensors file"
    hint = "restore it or re-create the model"
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ModelLoadError(f"{bad} ({size} bytes, shorter than a header); {hint}")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, MAX_HEADER):
            raise ModelLoadError(f"{bad} (header of {length} bytes in a file of {size}); "
                                 f"truncated? {hint}")
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelLoadError(f"{bad} (its header is not valid JSON); {hint}") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{bad} (its header is not an object); {hint}")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = (int(v) for v in info["data_offsets"])
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            width = DTYPE_BYTES.get(info["dtype"])
        except (KeyError, TypeError, ValueError):
            raise ModelLoadError(f"{bad} (tensor {name!r} is malformed in the header); "
                                 f"{hint}") from None
        if width is not None and stop - start != count * width or start > stop:
            raise ModelLoadError(f"{bad} (tensor {name!r} has the wrong size); {hint}")
        end = max(end, stop)
    if 8 + length + end != size:
        raise ModelLoadError(f"{bad} ({size} bytes, its header describes "
                             f"{8 + length + end}); truncated? {hint}")


# -- time limits ---------------------------------------------------------------------------------
class TimeLimitExceeded(ObliviateError):
    """Untrusted work ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float, message: str) -> Iterator[None]:
    """Raise ``TimeLimitExceeded(message)`` if the block runs longer than ``seconds``.

    Uses ``SIGALRM`` (POSIX, main thread); elsewhere the block runs unbounded."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is \
        threading.main_thread()
    if not usable:
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TimeLimitExceeded(message)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
