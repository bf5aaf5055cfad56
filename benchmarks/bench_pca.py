"""Seconds of one PCA reduction of a ResNet point ([1000, 8192] float32 features to 100 dimensions):
the former thin-SVD formula against variance_analysis.pca_reduce (eigh of the N x N Gram matrix),
and how closely the two give the same D.

    python benchmarks/bench_pca.py [--threads 1] [--repeats 5] [--n 1000] [--d 8192] [--dim 100]

Each method runs once to warm up, then --repeats times; the median is printed. The features are 10
seeded classes (centers plus noise), float32 as a network gives them; D is separation_fuzziness of
each reduction.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
import dependencies  # noqa: E402,F401  (one line, not a traceback, in a Python without the project's packages)
import cpu_kernels  # noqa: E402,F401  (before torch: the entry scripts' CPU kernels)

import torch  # noqa: E402

from variance_analysis import pca_reduce, separation_fuzziness  # noqa: E402


def svd_reduce(features: torch.Tensor, dim: int) -> torch.Tensor:
    """The former pca_reduce: U S[:dim] of the thin SVD of the centered float64 features."""
    features = features.to(torch.float64)
    centered = features - features.mean(dim=0)
    left, singular, _ = torch.linalg.svd(centered, full_matrices=False)
    return left[:, :dim] * singular[:dim]


def median_seconds(function, repeats: int) -> tuple[float, torch.Tensor]:
    """(median wall time of `repeats` calls after one warm-up call, the last result)."""
    result = function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs per method after the warm-up (default 5)")
    parser.add_argument("--n", type=int, default=1000, help="samples, 10 classes of n/10 each (default 1000)")
    parser.add_argument("--d", type=int, default=8192, help="feature width before the PCA (default 8192)")
    parser.add_argument("--dim", type=int, default=100, help="dimensions the PCA keeps (default 100)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(args.n // 10)
    features = (torch.randn(10, args.d, generator=generator)[labels]
                + torch.randn(labels.numel(), args.d, generator=generator))  # [n, d] float32

    old_seconds, old = median_seconds(lambda: svd_reduce(features, args.dim), args.repeats)
    new_seconds, new = median_seconds(lambda: pca_reduce(features, args.dim), args.repeats)
    old_d, new_d = separation_fuzziness(old, labels), separation_fuzziness(new, labels)
    gram_gap = torch.linalg.matrix_norm(new @ new.T - old @ old.T) / torch.linalg.matrix_norm(old @ old.T)
    print(f"[{args.n}, {args.d}] float32 -> {args.dim} dims, {args.threads} thread(s), "
          f"median of {args.repeats}")
    print(f"  thin SVD     {old_seconds:8.3f} s   D = {old_d:.15g}")
    print(f"  pca_reduce   {new_seconds:8.3f} s   D = {new_d:.15g}")
    print(f"  speed-up {old_seconds / new_seconds:.1f}x, D relative difference {abs(new_d - old_d) / old_d:.1e}, "
          f"P P^T relative difference {float(gram_gap):.1e}")


if __name__ == "__main__":
    main()
