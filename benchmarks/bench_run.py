"""Wall time of the main job (make run), of the same job recording training dynamics every 50 epochs,
and of building the cfm cache from the raw files, on this machine.

    python benchmarks/bench_run.py [--repeats 3] [--skip-run]      (or: make bench)

The run is timed in-process through run_experiment (training, analysis and writing every output),
after all modules are imported, so interpreter and import start-up are excluded. The cache build reads
the raw Fashion-MNIST files (torchvision layout or /usr/share/datasets), selects the 1,000 training
images, resizes them and the 10,000 test images, and writes the cache atomically into a fresh folder.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
import dependencies  # noqa: E402,F401  (one line, not a traceback, in a Python without the project's packages)
import cpu_kernels  # noqa: E402,F401  (before torch: the entry scripts' CPU kernels)

import torch  # noqa: E402
import torch._dynamo  # noqa: E402,F401  (imported lazily by the first optimizer step: start-up cost)
from hydra import compose, initialize_config_dir  # noqa: E402

from config_utils import CONF_DIR, register_resolvers  # noqa: E402
from atomic_io import atomic_torch_save  # noqa: E402
from data import build_cache_content, load_raw, preprocessing_spec  # noqa: E402
from experiment import run_experiment  # noqa: E402

MAIN_JOB = ["data=cfm", "model=GFNN", "layer_num=6", "hidden_size=100", "optimization=adam", "lr=1e-3",
            "epochs=600", "seed=666", "analysis.bn_mode=train_batches", "threads=1", "progress=false"]


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def summary(label: str, seconds: list[float]) -> str:
    return (f"{label}: median {statistics.median(seconds):.2f} s, min {min(seconds):.2f} s "
            f"over {len(seconds)} ({', '.join(f'{s:.2f}' for s in seconds)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each measurement (default 3)")
    parser.add_argument("--skip-run", action="store_true", help="time the cache build only, not the runs")
    args = parser.parse_args()
    register_resolvers()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads by default, "
          f"{torch.cuda.device_count()} GPU(s)")

    with tempfile.TemporaryDirectory() as scratch:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=MAIN_JOB + [f"figures_dir={scratch}/figures"])
        def build_cache(target: Path) -> None:
            spec = preprocessing_spec(cfg.data, 666)
            raw = load_raw(spec["source"], Path(scratch) / "no-torchvision-layout", download=False)
            atomic_torch_save(build_cache_content(spec, raw), target)

        cache_times = [timed(lambda: build_cache(Path(scratch) / f"cache{repeat}.pt"))
                       for repeat in range(args.repeats)]
        print(summary("cfm cache build from raw files", cache_times), flush=True)

        if not args.skip_run:
            run_times = []
            for repeat in range(args.repeats):
                run_dir = Path(scratch) / f"run{repeat}"
                run_times.append(timed(lambda: run_experiment(cfg, run_dir)))
            print(summary("main job (train 600 epochs + measure + write)", run_times), flush=True)
            with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
                dynamics_cfg = compose("config", overrides=MAIN_JOB + [
                    f"figures_dir={scratch}/figures", "analysis.every_n_epochs=50"])
            dynamics_times = [timed(lambda: run_experiment(dynamics_cfg, Path(scratch) / f"dyn{repeat}"))
                              for repeat in range(args.repeats)]
            print(summary("main job with analysis.every_n_epochs=50", dynamics_times), flush=True)
            overhead = statistics.median(dynamics_times) / statistics.median(run_times) - 1
            print(f"dynamics overhead: {100 * overhead:+.1f}% (medians)", flush=True)


if __name__ == "__main__":
    main()
