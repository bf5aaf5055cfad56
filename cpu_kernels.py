"""Pin PyTorch's CPU kernels to AVX2 on x86-64, so that runs on one CPU model agree bit for bit
whether or not a machine of that model exposes AVX-512.

Import this module before torch in every entry script (it only sets environment variables, which
torch, MKL and oneDNN read at their first kernel call, and which child processes inherit).

What the pin does and does not give (measured; tests/test_bitwise.py checks both):
- Same CPU model, same torch: the same command gives the same numbers to the last bit. Without the pin
  a machine with AVX-512 takes other vector kernels than one without (after 20 epochs of the main job,
  D at the first block 24.26 against 24.01).
- Different CPU models (an AMD EPYC against an Intel Xeon) do NOT agree after training, pinned or not:
  MKL and oneDNN choose other code paths per vendor and model, float32 products differ in their last
  bits, and training amplifies them (fig1 momentum depth 18, layer 1 after 20 epochs: D 30.50 on the
  EPYC, 36.50 on the Xeon; MKL_CBWR=AVX2 changes nothing, MKL_CBWR=COMPATIBLE gives a third value).
  What does agree across them: the prepared data (bit for bit), the float64 measurement of the same
  features (1e-9), the seeded initial network's profile (2e-6) and the first epoch's loss (1e-5 for
  shallow runs, 1e-3 at depth 18). So a number is reproducible on the CPU model that made it; the
  committed tables record each run's machine.
A variable already set wins; `PIN_CPU_KERNELS=0 python ...` leaves all three alone (the CPU's widest
kernels; benchmarks/bench_cpu_kernels.py measures the speed). Other architectures are left alone.
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
