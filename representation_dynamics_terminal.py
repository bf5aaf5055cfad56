"""Train a network, measure its separation fuzziness D_l at every measured point, fit ln D_l against l.

    python representation_dynamics_terminal.py data=cfm model=GFNN layer_num=6 hidden_size=100 \
        optimization=adam lr=1e-3                      # one run (make run adds the paper's measuring mode)
    python representation_dynamics_terminal.py -m lr=3e-5,1e-4,3e-4,1e-3,3e-3   # Hydra multirun

Config: conf/config.yaml and its groups (data/, model/, optimization/, training/). Each run writes, in
its own directory logs/<run name>/ (descriptive, deterministic):
    results.json   config, status, layers (D, ratio, traces per point), fit, accuracies, timings
    profile.png    ln D_l against l with the fitted line (also copied to figures/<run name>.png)
    checkpoint.pt  model state and config
    representation_dynamics_terminal.log, .hydra/   the run log and Hydra's resolved config
The last stdout line is `results: <path to results.json>`.

Reliability: invalid values stop the run before any data loading with a one-line `error:` naming the key
(exit status 2, no run directory made; in a multirun, every job is checked before the first starts); a
run whose loss becomes NaN or infinite stops and records status "diverged" (exit status 0, so sweeps go
on); every file is written atomically, so an interrupted run leaves nothing partial and rerunning the
command redoes it; a run already finished with the same configuration is skipped unless force=true; a
run that another process is running right now is left to it (`not run: ...`, exit status 75). A failing
run removes only a run directory this command created, never one of another run.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (before CUDA starts)

import hydra  # noqa: E402
import torch  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from atomic_io import atomic_torch_save, atomic_write_json  # noqa: E402
from config_utils import (CONF_DIR, REPO_ROOT, ConfigError, created_by_this_command,  # noqa: E402
                          identity_hash, register_resolvers, validate_config)
from data import DatasetUnavailableError, balanced_subset, check_test_subset_of, prepare_dataset  # noqa: E402
from plotting import save_dynamics_figure, save_profile_figure  # noqa: E402
from representation_analysis import (bn_mode_label, measured_features, profile_fit,  # noqa: E402
                                     separation_profile)
from train_models import accuracy, build_model, resolve_device, run_training  # noqa: E402

log = logging.getLogger("representation_dynamics")
register_resolvers()

RUN_OUTPUTS = ("results.json", "profile.png", "checkpoint.pt", "dynamics.png")
EXIT_RUNNING_ELSEWHERE = os.EX_TEMPFAIL  # 75: this process did not produce the run; another one is


class RunInProgressError(RuntimeError):
    """Another process holds the run directory's lock: it is running this configuration right now."""


def versions() -> dict:
    import numpy

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "hydra": hydra.__version__}


def finished_results(run_dir: Path, cfg: DictConfig) -> Path | None:
    """results.json of an earlier run of this exact configuration that finished (completed or
    diverged), or None. Anything unreadable or of another configuration does not count."""
    path = Path(run_dir) / "results.json"
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same_config = previous.get("identity_hash") == identity_hash(cfg)
    return path if same_config and previous.get("status") in ("completed", "diverged") else None


@contextlib.contextmanager
def exclusive_run(run_dir: Path):
    """Hold run_dir/.lock for the run; yields False (without waiting) if another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def set_up_execution(cfg: DictConfig) -> torch.device:
    """Device, CPU threads and deterministic kernels, as the execution keys say."""
    device = resolve_device(str(cfg.device))
    if int(cfg.threads) > 0:
        torch.set_num_threads(int(cfg.threads))
    # Subnormal floats (weights and Adam moments decaying towards zero) slow CPU arithmetic several
    # fold; flushing them to zero changes values below 1e-38 only.
    torch.set_flush_denormal(True)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    return device


def measure(model, inputs: torch.Tensor, labels: torch.Tensor, cfg: DictConfig,
            split: str = "train") -> tuple[list[dict], dict | None]:
    """Per-point profile of one split and its fit (two fits for two-part models)."""
    analysis = cfg.analysis
    features = measured_features(model, inputs, analysis.bn_mode, int(analysis.bn_batch_size),
                                 int(analysis.eval_batch_size))
    layers = separation_profile(features, labels, str(cfg.measure), analysis.pca_dim)
    fit = profile_fit(layers, model.fit_segments)
    if fit is None:
        log.warning("%s split: fewer than two points have a finite, positive %s: no fit", split,
                    cfg.measure)
    elif fit["dropped"]:
        log.warning("%s split: the fit leaves out %d point(s) whose %s is not finite and positive",
                    split, fit["dropped"], cfg.measure)
    return layers, fit


class DynamicsRecorder:
    """Measures the training set at epoch 0 and every `every` epochs (and the last one) during
    training: the per-point values and the fit at each recorded epoch."""

    def __init__(self, model, dataset, cfg: DictConfig, every: int, last_epoch: int):
        self.model, self.dataset, self.cfg = model, dataset, cfg
        self.every, self.last_epoch = every, last_epoch
        self.record = {"epochs": [], "values": [], "fits": []}

    def __call__(self, epoch: int) -> None:
        if epoch % self.every and epoch != self.last_epoch:
            return
        layers, fit = measure(self.model, self.dataset.train_x, self.dataset.train_y, self.cfg,
                              split=f"epoch {epoch}")
        self.record["epochs"].append(epoch)
        self.record["values"].append([layer["value"] for layer in layers])
        self.record["fits"].append(fit)


def run_experiment(cfg: DictConfig, run_dir: Path) -> Path:
    """Validate, train, measure, fit and write every output of one run into run_dir; returns the path
    of results.json. Raises ConfigError or DatasetUnavailableError before any training.

    A run whose directory already holds a finished results.json of the same configuration is skipped
    unless cfg.force is true. RunInProgressError when another process is running it right now.
    """
    started = time.perf_counter()
    validate_config(cfg)
    run_dir = Path(run_dir)
    if not cfg.force and (previous := finished_results(run_dir, cfg)) is not None:
        log.info("skipped: %s holds a finished run of this configuration (force=true reruns it)", run_dir)
        print(f"skipped: {run_dir.name}", flush=True)
        return previous
    with exclusive_run(run_dir) as owned:
        if not owned:
            log.warning("not run: another process is running %s", run_dir)
            raise RunInProgressError(f"another process is running {run_dir} (its .lock is held); "
                                     "this one did not run it")
        for leftover in run_dir.glob(".*.tmp-*"):  # from a run killed while writing
            leftover.unlink()
        for output in RUN_OUTPUTS:  # a forced rerun must not leave the old outputs beside new ones
            (run_dir / output).unlink(missing_ok=True)
        return _train_measure_write(cfg, run_dir, started)


def _train_measure_write(cfg: DictConfig, run_dir: Path, started: float) -> Path:
    device = set_up_execution(cfg)
    seed = int(cfg.seed)
    timings = {}
    dataset = prepare_dataset(cfg.data, Path(cfg.data_root), seed, device, bool(cfg.download))
    check_test_subset_of(dataset, int(cfg.analysis.test_subset_size))  # raw files may hold fewer images
    timings["data"] = time.perf_counter() - started
    torch.manual_seed(seed)
    model = build_model(cfg, dataset.input_shape, dataset.num_classes).to(device)
    log.info("training %s on %s (%d samples, input %s) on %s", cfg.model.name, dataset.name,
             dataset.train_x.shape[0], dataset.input_shape, device)
    recorder = None
    if int(cfg.analysis.every_n_epochs) > 0:
        last_epoch = int(cfg.epochs) + (int(cfg.training.stage1_epochs) if cfg.training.name == "frozen" else 0)
        recorder = DynamicsRecorder(model, dataset, cfg, int(cfg.analysis.every_n_epochs), last_epoch)
        recorder(0)
    outcome = run_training(model, dataset.train_x, dataset.train_y, cfg, progress=bool(cfg.progress),
                           description=run_dir.name[:40], on_epoch_end=recorder)
    timings["train"] = time.perf_counter() - started - timings["data"]

    results = {"config": OmegaConf.to_container(cfg, resolve=True), "run_name": run_dir.name,
               "identity_hash": identity_hash(cfg), "measure": str(cfg.measure),
               "bn_mode": str(cfg.analysis.bn_mode),
               "measured_with": bn_mode_label(str(cfg.analysis.bn_mode), int(cfg.analysis.bn_batch_size)),
               "layers": [], "fit": None, "test_layers": [], "test_fit": None,
               "train_accuracy": None, "test_accuracy": None,
               "final_train_loss": outcome.final_train_loss,
               "epochs_completed": outcome.epochs_completed, "diverged_epoch": outcome.diverged_epoch,
               "dynamics": recorder.record if recorder else None,
               "history": {"epoch": list(range(1, len(outcome.loss_history) + 1)),
                           "train_loss": outcome.loss_history}}
    if outcome.diverged:
        log.warning("training diverged at epoch %d (mean loss %s): no measurement, fit or checkpoint",
                    outcome.diverged_epoch, outcome.final_train_loss)
        results["status"] = "diverged"
    else:
        results["status"] = "completed"
        results["layers"], results["fit"] = measure(model, dataset.train_x, dataset.train_y, cfg)
        profiles = [("train", results["layers"], results["fit"])]
        if int(cfg.analysis.test_subset_size) > 0:
            subset = balanced_subset(dataset.test_y, int(cfg.analysis.test_subset_size),
                                     dataset.num_classes, seed).to(dataset.test_y.device)
            results["test_layers"], results["test_fit"] = measure(
                model, dataset.test_x[subset], dataset.test_y[subset], cfg, split="test")
            profiles.append((f"test ({subset.numel()})", results["test_layers"], results["test_fit"]))
        eval_batch = int(cfg.analysis.eval_batch_size)
        results["train_accuracy"] = accuracy(model, dataset.train_x, dataset.train_y, eval_batch)
        results["test_accuracy"] = accuracy(model, dataset.test_x, dataset.test_y, eval_batch)
        timings["measure"] = time.perf_counter() - started - timings["data"] - timings["train"]
        fit = results["fit"] or {}
        log.info("fit: pearson_r %s rho %s; accuracy train %.4f test %.4f", fit.get("pearson_r"),
                 fit.get("rho"), results["train_accuracy"], results["test_accuracy"])
        atomic_torch_save({"model_state": model.state_dict(), "measured_points": model.measured_points,
                           "config": results["config"]}, run_dir / "checkpoint.pt")
        ylabel = "ln D" if cfg.measure == "within_variance" else f"ln {cfg.measure}"
        save_profile_figure(profiles, f"{run_dir.name}\n{results['measured_with']}",
                            [run_dir / "profile.png", Path(cfg.figures_dir) / f"{run_dir.name}.png"],
                            ylabel=ylabel)
        if recorder:
            save_dynamics_figure(recorder.record, f"{run_dir.name}\n{results['measured_with']}",
                                 run_dir / "dynamics.png", ylabel=ylabel)
    results.update(wall_seconds=time.perf_counter() - started, timings=timings, device=str(device),
                   versions=versions())
    return atomic_write_json(run_dir / "results.json", results)


def lock_held_elsewhere(run_dir: Path) -> bool:
    """Whether another process holds run_dir/.lock (is running that run now)."""
    lock = run_dir / ".lock"
    if not lock.is_file():
        return False
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def discard_unused_run_dir(run_dir: Path) -> None:
    """Remove the run directory of a run that failed before producing anything, if this command created
    it (config_utils.created_by_this_command) and no other process holds its lock. A directory that
    existed before -- another run's, running, finished or interrupted -- or that holds any run output
    is left alone."""
    if not (run_dir.is_dir() and created_by_this_command(run_dir)):
        return
    if any((run_dir / name).exists() for name in RUN_OUTPUTS) or lock_held_elsewhere(run_dir):
        return
    shutil.rmtree(run_dir, ignore_errors=True)


def allocation_failure(error: BaseException) -> bool:
    """Whether `error` is PyTorch failing to allocate memory (CPU or GPU)."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and ("can't allocate memory" in str(error)
                                             or "out of memory" in str(error)))


def _terminate(signal_number, _frame):
    raise SystemExit(128 + signal_number)  # unwinds: temporary files are removed on the way out


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    signal.signal(signal.SIGTERM, _terminate)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        results_path = run_experiment(cfg, run_dir)
    except RunInProgressError as error:
        print(f"not run: {error}", flush=True)
        raise SystemExit(EXIT_RUNNING_ELSEWHERE) from None
    except (ConfigError, DatasetUnavailableError) as error:
        discard_unused_run_dir(run_dir)
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except RuntimeError as error:
        if not allocation_failure(error):
            raise
        discard_unused_run_dir(run_dir)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"error: out of memory on device={cfg.device}: {first_line}; try a smaller hidden_size, "
              "batch_size or analysis.eval_batch_size", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    print(f"results: {results_path}", flush=True)


if __name__ == "__main__":
    # Hydra's joblib and submitit launchers pickle the task function for other processes: taken from
    # the importable module it pickles by reference (from __main__ it would be copied by value, which
    # fails on torch's module objects); PYTHONPATH lets those processes import it.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    from representation_dynamics_terminal import main as importable_main

    importable_main()
