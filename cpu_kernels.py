"""Pin PyTorch's CPU kernels to AVX2 so that a run gives the same numbers on every x86-64 CPU.

Import this module before torch in every entry script (it only sets environment variables, which
torch, MKL and oneDNN read at their first kernel call, and which child processes inherit). Without it a
CPU with AVX-512 takes other vector kernels than one without: the last bits of a matrix product change
and 600 epochs of training turn them into different D values (measured: after 20 epochs of the main
job, D at the first block 24.26 against 24.01). A variable already set wins; `PIN_CPU_KERNELS=0 python
...` leaves all three alone (the CPU's widest kernels: other numbers, see benchmarks/bench_cpu_kernels.py
for the speed). Other architectures are left alone.
"""
from __future__ import annotations

import os
import platform

PINNED_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def pin_cpu_kernels() -> None:
    if os.environ.get("PIN_CPU_KERNELS", "1") != "0" and platform.machine().lower() in ("x86_64", "amd64"):
        for name, value in PINNED_KERNELS.items():
            os.environ.setdefault(name, value)


def cpu_kernels() -> str:
    """The vector kernels torch's CPU operators use in this process (e.g. AVX2, AVX512)."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


pin_cpu_kernels()
