"""Cost measurements shared by both modalities: wall time, peak memory, parameters."""

from __future__ import annotations

import resource
import sys
from typing import Any


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_memory(device: Any = None) -> dict[str, int]:
    """Peak host memory and, on an accelerator, its peak allocated memory."""
    out = {"host_peak_rss_bytes": peak_rss_bytes()}
    torch = sys.modules.get("torch")
    if torch is not None and device is not None and getattr(device, "type", "cpu") == "cuda":
        out["device_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return out
