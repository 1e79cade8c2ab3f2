"""Rows of a Hugging Face hub dataset, for the loaders that read a published layout locally
and fall back to the hub when online (MUSE, WMDP)."""

from __future__ import annotations

from typing import Any

from obliviate.core.errors import DataError


def hub_rows(hub_id: str, config: str, split: str, what: str) -> list[dict[str, Any]]:
    """``datasets.load_dataset(hub_id, config, split=split)`` as a list of dicts; a missing
    ``datasets`` package or a hub error is one :class:`DataError` line naming ``what``."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise DataError(f"{what}: no local folder given and the `datasets` package is not "
                        f"installed to read {hub_id} from the hub") from None
    try:
        return list(load_dataset(hub_id, config, split=split))
    except Exception as exc:  # network and hub errors vary by version
        raise DataError(f"cannot load {hub_id} {config}/{split} from the hub: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
