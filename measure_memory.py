"""What measuring a model without PCA needs in memory (the one-pass float64 d x d sums) and what the
device has left: the check that refuses a one-pass measurement that would not fit, before anything of
size d x d is allocated. Part of the installed API (representation_analysis imports it): torch alone.
"""
from __future__ import annotations

import contextlib
import re

import torch


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on `device`, or None where unknown: CUDA's free memory; on a CPU
    the smaller of the kernel's MemAvailable and what a cgroup limit (a container's) leaves."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    known = []
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as meminfo:
            match = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo.read(), re.MULTILINE)
        if match:
            known.append(int(match[1]) * 1024)
    for limit, usage in (("memory.max", "memory.current"),                                   # cgroup v2
                         ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):     # cgroup v1
        limit, usage = f"/sys/fs/cgroup/{limit}", f"/sys/fs/cgroup/{usage}"
        with contextlib.suppress(OSError, ValueError):
            with open(limit) as limit_file, open(usage) as usage_file:
                known.append(int(limit_file.read()) - int(usage_file.read()))   # "max": no limit, ValueError
            break
    return min(known) if known else None


def streaming_bytes(dims: dict[str, int]) -> int:
    """Peak bytes of the float64 d x d sums of StreamingClassStatistics for points of widths `dims`: each
    point's accumulated Gram matrix, plus two more of the widest at once (x^T x of a batch, then SS_w
    formed at finalize)."""
    squares = [dim * dim for dim in dims.values()]
    return 8 * (sum(squares) + 2 * max(squares, default=0))


def check_streaming_memory(dims: dict[str, int], device: torch.device) -> None:
    """ValueError, before anything of size d x d is allocated, when streaming_bytes(dims) exceeds
    available_memory(device) (unknown: no check)."""
    needed, available = streaming_bytes(dims), available_memory(device)
    if available is None or needed <= available:
        return
    widest = max(dims, key=dims.get)
    raise ValueError(f"modules: measuring {len(dims)} point(s) without pca_dim streams d x d float64 sums "
                     f"(widest {widest!r}, d = {dims[widest]:,}): {needed / 1e9:.1f} GB, more than the "
                     f"{available / 1e9:.1f} GB available on {device}; allowed: passes=None or 2 (two passes, "
                     "O(K d) memory), pca_dim=K (features held in memory, PCA-reduced to K first) or fewer or "
                     "narrower modules")


def fits_in_memory(dims: dict[str, int], device: torch.device) -> bool:
    """Whether the one-pass d x d sums of points of widths `dims` fit in the memory available (unknown: yes)."""
    available = available_memory(device)
    return available is None or streaming_bytes(dims) <= available
