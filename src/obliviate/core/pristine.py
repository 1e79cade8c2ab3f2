"""A model loaded once per process and handed out as fresh copies.

Several unlearning methods in one command (``obliviate unlearn -m npo -m grad_diff``), and the
cells of a sweep run in one process, each start from the same target. Every method changes the
weights it is given in place, so each needs its own copy, but reading the target from disk again
for each one repeats the load (about 2.7 s a method for SmolLM2-135M, the profile in
BENCHMARKS.md). :func:`pristine_copy` loads it once, keeps that object untouched, and gives each
caller a deep copy: the same tensors bit for bit, tied weights still tied.

One object is kept at a time (a new key drops the old one), and only when it is small beside the
machine's memory (:data:`KEEP_FRACTION`); a larger model is loaded anew each time, as before.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

KEEP_FRACTION = 0.25
"""The largest share of physical memory a kept model may take (it sits beside the working
copy)."""

_kept: dict[Hashable, Any] = {}


def tensor_bytes(value: Any) -> int:
    """Bytes of the parameters and buffers of every ``torch.nn.Module`` in ``value`` (a module,
    or a tuple/list of things some of which are modules)."""
    import torch

    if isinstance(value, (tuple, list)):
        return sum(tensor_bytes(v) for v in value)
    if isinstance(value, torch.nn.Module):
        seen = {id(t): t.numel() * t.element_size()
                for t in (*value.parameters(), *value.buffers())}
        return sum(seen.values())
    return 0


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def pristine_copy(key: Hashable, load: Callable[[], T]) -> T:
    """A deep copy of what ``load()`` returns, loaded once per process for ``key``.

    ``key`` must name everything the loaded object depends on (the path, the digest of its
    files, the loading settings): a different key loads again and forgets the object kept
    before."""
    if key in _kept:
        return copy.deepcopy(_kept[key])
    _kept.clear()
    value = load()
    memory = physical_memory()
    if memory is not None and tensor_bytes(value) <= KEEP_FRACTION * memory:
        _kept[key] = value
        return copy.deepcopy(value)
    return value


def forget() -> None:
    """Drop the kept object (its memory returns once no copy refers to it)."""
    _kept.clear()
