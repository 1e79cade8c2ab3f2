"""Cost measurements shared by both modalities: wall time, peak memory, parameters."""

from __future__ import annotations

import resource
import sys
from typing import Any


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since start or the last :func:`reset_peak_rss`."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux KiB, macOS bytes
    return int(peak if sys.platform == "darwin" else peak * 1024)


def reset_peak_rss() -> bool:
    """Restart the peak-memory count at the current resident size (Linux), so a stage's peak
    excludes what came before it (e.g. loading the model twice over). False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def reset_peak(device: Any = None) -> None:
    """Reset host and (on CUDA) device peak-memory counters."""
    reset_peak_rss()
    torch = sys.modules.get("torch")
    if torch is not None and _on_cuda(torch, device):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: Any = None) -> dict[str, int]:
    """Peak host memory and, on an accelerator, its peak allocated memory."""
    out = {"host_peak_rss_bytes": peak_rss_bytes()}
    torch = sys.modules.get("torch")
    if torch is not None and _on_cuda(torch, device):
        out["device_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return out


def _on_cuda(torch: Any, device: Any) -> bool:
    """Whether ``device`` is a CUDA device that torch's CUDA memory counters describe."""
    return device is not None and torch.cuda.is_available() and str(device).startswith("cuda")
