"""Atomic writes and content hashing.

Every output obliviate writes goes through :func:`atomic_write_bytes` (temporary file in the
same directory, ``fsync``, then ``os.replace``), so a crash never leaves a partly written file.
Folders written whole (a model, a checkpoint) are built in :func:`temp_dir` and renamed into
place; both follow the umask like every other output. A write that fails for a full disk is a
one-line :class:`DiskFullError` naming what was being written (:func:`writing`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from obliviate.core.errors import ObliviateError


class DiskFullError(ObliviateError, OSError):
    """A write failed because the disk (or quota) is full."""

    def __str__(self) -> str:
        return str(self.args[0])


DISK_FULL = ("No space left on device", "os error 28", "StorageFull", "Disk quota exceeded",
             "file write failed")
"""How a full disk reads in errors that carry no errno (safetensors, ``torch.save``)."""


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(sign in str(exc) for sign in DISK_FULL)


@contextlib.contextmanager
def writing(path: str | Path, what: str = "") -> Iterator[None]:
    """Turn a full disk while writing ``path`` into a one-line error naming it (the caller's
    temporary files are its own to clean up; nothing finished is touched)."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if is_disk_full(exc):
            raise DiskFullError(f"{path}: No space left on device while writing "
                                f"{what or 'it'}; free some space and re-run the same command "
                                "(finished stages are kept)") from None
        raise


def temp_dir(parent: str | Path, prefix: str) -> Path:
    """A fresh hidden folder in ``parent`` to build an output in before renaming it into place;
    its mode follows the umask (``mkdtemp`` makes 0700 folders)."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; outputs follow the umask
        with writing(path), os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    # undecodable file names (surrogate escapes) are kept as JSON \\u escapes, never a crash
    return atomic_write_bytes(path, text.encode("utf-8", "backslashreplace"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths and sets into plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(to_jsonable(v) for v in obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "model_dump"):
        return to_jsonable(obj.model_dump())
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # torch tensors, without importing torch
        return obj.tolist()
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None if obj != obj else ("inf" if obj > 0 else "-inf")
    return obj


def dumps_json(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, dumps_json(obj))


def read_json(path: str | Path) -> Any:
    """Read a JSON file, raising a one-line :class:`DataError` that names the file."""
    from obliviate.core.errors import DataError

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                        f"{exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no whitespace) used for hashing."""
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def sha256_records(records: Any) -> str:
    """Content hash of a sequence of JSON-like records (order matters)."""
    digest = hashlib.sha256()
    for record in records:
        if hasattr(record, "to_dict"):
            record = record.to_dict()
        digest.update(canonical_json(record))
        digest.update(b"\n")
    return digest.hexdigest()


_FILE_HASHES: dict[tuple[str, int, int, int], str] = {}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read once per process: the hash is kept under the file's
    path, size, modification time and inode, so the weights a run just saved and the target
    that every method of a command starts from are each hashed once (a file rewritten, even
    in place, has a new modification time)."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def sha256_dir(path: str | Path, patterns: tuple[str, ...] = ("*",)) -> str:
    """Hash of every file under ``path`` matching ``patterns`` (names and contents)."""
    digest = hashlib.sha256()
    root = Path(path)
    files = sorted({p for pat in patterns for p in root.rglob(pat) if p.is_file()})
    for file in files:
        digest.update(str(file.relative_to(root)).encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)`` for each non-empty line; errors name file and line."""
    from obliviate.core.errors import DataError

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not UTF-8 text ({exc.reason})") from None
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line.strip())
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: invalid JSON at column {exc.colno}: "
                                f"{exc.msg}") from None
