"""One run, in steps: validate the config, set up (device, data, model), train, measure, write.

representation_dynamics_terminal.py wires Hydra to run_experiment; reanalyze.py and benchmarks/ call the
steps directly. A run writes into its own directory: results.json (built by results_record),
profile.png (also copied to figures/), checkpoint.pt, training.png and history.csv (the training
curves), dynamics.png with analysis.every_n_epochs and tensorboard/ with logger=tensorboard.
"""
from __future__ import annotations

import contextlib
import logging
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy
import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from tqdm.contrib.logging import logging_redirect_tqdm

from atomic_io import atomic_torch_save, atomic_write, atomic_write_json, remove_stale_temporaries
from cpu_kernels import cpu_kernels
from config_utils import (REPO_ROOT, ConfigError, check_names, check_output_folders, check_values, identity_hash,
                          is_int, record_new_run_dirs, sweep_job_configs)
from data import (Dataset, balanced_subset, check_cache_folder, check_data, check_test_subset_of, class_counts_of,
                  input_shape_of, prepare_dataset)
from run_folder import (RUN_MARKER, RUN_OUTPUTS, RunInProgressError, check_run_dir, finished_results, publish,
                        run_lock, staging_folder, write_run_record)
from shared_training import shared_training
from representation_analysis import (BN_MODES, DynamicsRecorder, bn_mode_label, features_and_accuracy,
                                     measure_profile, profile_and_fit)
from train_models import (OPTIMIZER_STATES, TRAINING_SCHEMES, TrainResult, accuracy, build_model,
                          check_buildable, resolve_device, run_training, set_up_execution)
from training_curves import TrainingCurves, check_logger, tensorboard_writer
from variance_analysis import MEASURE_LABELS, MEASURES

log = logging.getLogger("representation_dynamics")

# ------------------------------------------------------------------------------------------ machine
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo's, with its family, model and stepping where the name alone
    does not tell two generations apart), else what platform knows."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                      if ":" in line)
    except OSError:
        return platform.processor() or platform.machine()
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    name = fields.get("model name") or platform.processor() or platform.machine()
    numbers = [f"{key} {fields[key]}" for key in ("cpu family", "model", "stepping") if key in fields]
    return f"{name} ({', '.join(numbers)})" if numbers else name


def source_commit() -> str | None:
    """The git commit of the code that runs (with -dirty when tracked files differ from it), or None
    outside a git checkout."""
    def git(*arguments):
        return subprocess.run(["git", "-C", str(REPO_ROOT), *arguments], capture_output=True, text=True,
                              timeout=30)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def machine_facts() -> dict:
    """Where a run's numbers came from: CPU model, the vector kernels torch used (cpu_kernels.py pins
    them) and the host name."""
    return {"cpu": cpu_model(), "cpu_kernels": cpu_kernels(), "host": platform.node()}


# ------------------------------------------------------------------------------------------ validation
def validate_config(cfg: DictConfig, output_keys: tuple[str, ...] = ("log_root", "figures_dir")) -> None:
    """ConfigError (naming KEY=VALUE and what is allowed) for any value a run cannot use, before anything
    is loaded or trained: the value rules, the choices, the data subsets, the device, the folders written
    (output_keys, and data_root when the cache must be built) and whether the model can be built and
    trained (train_models.check_buildable)."""
    check_values(cfg, {"measure": tuple(MEASURES), "analysis.bn_mode": BN_MODES,
                       "training.name": tuple(TRAINING_SCHEMES), "optimization.name": tuple(OPTIMIZER_STATES)})
    check_names(cfg)
    check_data(cfg.data, cfg.analysis.test_subset_size)
    check_bn_batches(cfg)
    device = resolve_device(str(cfg.device))
    check_output_folders(cfg, output_keys)
    check_cache_folder(cfg.data, Path(cfg.data_root), int(cfg.seed))
    check_buildable(cfg, input_shape_of(cfg.data), int(cfg.data.num_classes), device)
    check_logger(cfg.get("logger"))
    check_log_every(cfg.get("log_every_n_epochs"))


def check_log_every(every) -> None:
    """ConfigError unless log_every_n_epochs is an integer >= 0 (None: a config saved before the key)."""
    if every is not None and not (is_int(every) and every >= 0):
        raise ConfigError(f"log_every_n_epochs={every}: allowed: an integer >= 0 (0: no epoch lines)")


def check_bn_batches(cfg: DictConfig) -> None:
    """ConfigError when train-mode BatchNorm measuring (analysis.bn_batch_size) would end the training
    split or the test subset with a batch of one sample, which BatchNorm cannot normalize."""
    if str(cfg.analysis.bn_mode) != "train_batches":
        return
    size, classes = int(cfg.analysis.bn_batch_size), int(cfg.data.num_classes)
    test_subset = int(cfg.analysis.test_subset_size) // classes * classes   # size // K of each class
    for what, count in (("training split", sum(class_counts_of(cfg.data))),
                        ("test subset (analysis.test_subset_size)", test_subset)):
        if count % size == 1:
            raise ConfigError(f"analysis.bn_batch_size={size}: the {what} of {count} samples would end with a "
                              "batch of one sample, which train-mode BatchNorm cannot measure; allowed: a size "
                              f"that does not leave one sample over ({count} % size != 1)")


def refuse_invalid(configs: list[DictConfig], run_dirs: list[Path], run_dir_key: str) -> None:
    """Validate every config and its run directory; print one `error:` line per distinct problem and exit
    with status 2 if any is invalid (before any job of them starts)."""
    errors = []
    for config, run_dir in zip(configs, run_dirs):
        try:
            validate_config(config)
            check_run_dir(run_dir, config, run_dir_key)
        except ConfigError as error:
            if str(error) not in errors:
                errors.append(str(error))
    for message in errors:
        print(f"error: {message}", file=sys.stderr, flush=True)
    if errors:
        raise SystemExit(2)


def empty_sweeps(config: DictConfig) -> list[str]:
    """The overrides of a multirun (hydra.sweeper.params, then the command line's) that sweep over no
    value, as typed (seed=range(0))."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    task = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    return [override.input_line for override in parser.parse_overrides(params + task)
            if override.is_sweep_override() and override.is_discrete_sweep()
            and not list(override.sweep_string_iterator())]


class ValidateBeforeLaunch(Callback):
    """Hydra callback (hydra.callbacks in conf/config.yaml): validate a run, or every job of a multirun,
    before Hydra creates a directory or starts a job (a bad value in a sweep's third job stops the sweep
    before its first trains), and record the run directories the command creates, so that a failing run
    removes only a directory of its own. Acts on `config_name` (the entry's config) only."""

    def __init__(self, config_name: str = "config"):
        self.config_name = config_name

    def on_run_start(self, config: DictConfig, config_name: str | None = None, **kwargs) -> None:
        if config_name != self.config_name:
            return
        refuse_invalid([config], [Path(config.hydra.run.dir)], "hydra.run.dir")
        record_new_run_dirs([Path(config.hydra.run.dir)])

    def on_multirun_start(self, config: DictConfig, config_name: str | None = None, **kwargs) -> None:
        if config_name != self.config_name:
            return
        try:
            jobs = sweep_job_configs(config)
        except Exception:  # a job that cannot be composed: Hydra's sweeper reports it itself
            return
        if jobs is None:
            return
        if not jobs:   # a sweep over no values (seed=range(0)): Hydra launches 0 jobs with exit status 0
            sweeps = ", ".join(empty_sweeps(config)) or "the sweeps"
            print(f"error: {sweeps}: sweeps over no values, so nothing would run; allowed: a sweep of at "
                  "least one value (range(0,3), 1,2)", file=sys.stderr, flush=True)
            raise SystemExit(2)
        run_dirs = [Path(job.hydra.sweep.dir) / str(job.hydra.sweep.subdir) for job in jobs]
        refuse_invalid(jobs, run_dirs, "hydra.sweep.subdir")
        record_new_run_dirs(run_dirs)


# ------------------------------------------------------------------------------------------------ steps
@dataclass
class SetUp:
    device: torch.device
    dataset: Dataset
    model: torch.nn.Module


@dataclass
class Trained:
    outcome: TrainResult
    dynamics: dict | None
    curves: TrainingCurves
    trained_in: str | None = None    # the run that trained these weights, when not this one (shared_training)


@dataclass
class Measurement:
    layers: list[dict]
    fit: dict | None
    test_layers: list[dict]
    test_fit: dict | None
    test_samples: int
    train_accuracy: float
    test_accuracy: float


def set_up(cfg: DictConfig) -> SetUp:
    """Execution settings, the dataset on the device and the freshly seeded model."""
    device = set_up_execution(cfg)
    dataset = prepare_dataset(cfg.data, Path(cfg.data_root), int(cfg.seed), device, bool(cfg.download))
    check_test_subset_of(dataset, int(cfg.analysis.test_subset_size))  # raw files may hold fewer images
    torch.manual_seed(int(cfg.seed))
    model = build_model(cfg, dataset.input_shape, dataset.num_classes).to(device)
    return SetUp(device, dataset, model)


def measure_split(cfg: DictConfig, model, inputs: torch.Tensor, labels: torch.Tensor,
                  split: str = "train", progress: bool = False) -> tuple[list[dict], dict | None]:
    """The profile and fit of one split, measured as the config's measure and analysis keys say (with
    `progress`, a bar over the measured points)."""
    analysis = cfg.analysis
    return measure_profile(model, inputs, labels, measure=str(cfg.measure), bn_mode=str(analysis.bn_mode),
                           bn_batch_size=int(analysis.bn_batch_size),
                           eval_batch_size=int(analysis.eval_batch_size), pca_dim=analysis.pca_dim,
                           segments=model.fit_segments, split=split, progress=progress)


def measured_test_subset(cfg: DictConfig, dataset: Dataset) -> torch.Tensor:
    """Indices of the balanced, seeded test subset that is measured besides the training split."""
    return balanced_subset(dataset.test_y, int(cfg.analysis.test_subset_size), dataset.num_classes,
                           int(cfg.seed)).to(dataset.test_y.device)


def train_step(cfg: DictConfig, run: SetUp, run_dir: Path | None = None, description: str = "train") -> Trained:
    """Train the model as the training scheme says, recording the training curves (losses; accuracies
    every curves_every_n_epochs; TensorBoard scalars with logger=tensorboard into run_dir/tensorboard)
    and, with analysis.every_n_epochs, the dynamics of the separation profile."""
    dataset = run.dataset
    writer = tensorboard_writer(run_dir / "tensorboard") if cfg.get("logger") == "tensorboard" and run_dir else None
    curves = TrainingCurves(run.model, dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y,
                            int(cfg.get("curves_every_n_epochs") or 0), int(cfg.analysis.eval_batch_size),
                            writer)
    curves.start()
    recorder = None
    if int(cfg.analysis.every_n_epochs) > 0:
        recorder = DynamicsRecorder(lambda split: measure_split(cfg, run.model, dataset.train_x, dataset.train_y,
                                                                split),
                                    int(cfg.analysis.every_n_epochs),
                                    TRAINING_SCHEMES[cfg.training.name].total_epochs(cfg))
        recorder.start()

    total_epochs = TRAINING_SCHEMES[cfg.training.name].total_epochs(cfg)
    log_every = int(cfg.get("log_every_n_epochs") or 0)

    def on_epoch_end(epoch: int, loss: float, lr: float) -> None:
        curves(epoch, loss)
        if recorder:
            recorder(epoch)
        if log_every and (epoch % log_every == 0 or epoch == total_epochs):
            log.info(epoch_line(epoch, total_epochs, loss, lr, curves.accuracies_at(epoch)))

    outcome = run_training(run.model, dataset.train_x, dataset.train_y, cfg, progress=bool(cfg.progress),
                           description=description, on_epoch_end=on_epoch_end)
    if outcome.diverged:  # training stopped before the epoch's callback
        curves(outcome.epochs_completed, outcome.final_train_loss)
    curves.finish()
    return Trained(outcome, recorder.record if recorder else None, curves)


def epoch_line(epoch: int, total_epochs: int, loss: float, lr: float,
               accuracies: tuple[float, float] | None = None) -> str:
    """One line of the run log: the epoch (of all the run trains), its mean train loss and lr and, when
    measured at that epoch, the train and test accuracy, rounded for reading (results.json and
    history.csv hold every loss at full precision)."""
    line = f"epoch {epoch}/{total_epochs}: loss {loss:.4g}, lr {lr:.3g}"
    if accuracies is not None:
        line += f", accuracy train {accuracies[0]:.4f} test {accuracies[1]:.4f}"
    return line


def measure_step(cfg: DictConfig, run: SetUp) -> Measurement:
    """The training split's profile, the test subset's (analysis.test_subset_size > 0) and both
    accuracies of the trained model. In eval mode the accuracy pass over a split also yields its
    features (one forward where one serves); in train_batches mode the features need their own
    train-mode passes. With cfg.progress a bar runs over the measured points of each split."""
    model, dataset, eval_batch = run.model, run.dataset, int(cfg.analysis.eval_batch_size)
    progress = bool(cfg.progress)
    subset = measured_test_subset(cfg, dataset) if int(cfg.analysis.test_subset_size) > 0 else None
    test_layers, test_fit = [], None
    if cfg.analysis.bn_mode == "eval":
        settings = {"measure": str(cfg.measure), "pca_dim": cfg.analysis.pca_dim, "segments": model.fit_segments,
                    "progress": progress}
        features, train_accuracy = features_and_accuracy(model, dataset.train_x, dataset.train_y,
                                                         model.measured_modules(), eval_batch)
        layers, fit = profile_and_fit(features, dataset.train_y, **settings)
        if subset is None:
            test_accuracy = accuracy(model, dataset.test_x, dataset.test_y, eval_batch)
        else:
            features, test_accuracy = features_and_accuracy(model, dataset.test_x, dataset.test_y,
                                                            model.measured_modules(), eval_batch, rows=subset)
            test_layers, test_fit = profile_and_fit(features, dataset.test_y[subset], split="test", **settings)
    else:
        layers, fit = measure_split(cfg, model, dataset.train_x, dataset.train_y, progress=progress)
        if subset is not None:
            test_layers, test_fit = measure_split(cfg, model, dataset.test_x[subset], dataset.test_y[subset],
                                                  "test", progress)
        train_accuracy = accuracy(model, dataset.train_x, dataset.train_y, eval_batch)
        test_accuracy = accuracy(model, dataset.test_x, dataset.test_y, eval_batch)
    return Measurement(layers, fit, test_layers, test_fit, 0 if subset is None else subset.numel(),
                       train_accuracy, test_accuracy)


def results_record(cfg: DictConfig, run_name: str, identity: str, trained: Trained,
                   measured: Measurement | None, timings: dict, device: torch.device) -> dict:
    """The content of results.json (measured is None for a diverged run: no profile, fit or accuracy)."""
    outcome = trained.outcome
    return {"config": OmegaConf.to_container(cfg, resolve=True), "run_name": run_name,
            "identity_hash": identity, "measure": str(cfg.measure),
            "bn_mode": str(cfg.analysis.bn_mode),
            "measured_with": bn_mode_label(str(cfg.analysis.bn_mode), int(cfg.analysis.bn_batch_size)),
            "status": "diverged" if outcome.diverged else "completed",
            "layers": measured.layers if measured else [], "fit": measured.fit if measured else None,
            "test_layers": measured.test_layers if measured else [],
            "test_fit": measured.test_fit if measured else None,
            "train_accuracy": measured.train_accuracy if measured else None,
            "test_accuracy": measured.test_accuracy if measured else None,
            "final_train_loss": outcome.final_train_loss,
            "epochs_completed": outcome.epochs_completed, "diverged_epoch": outcome.diverged_epoch,
            "dynamics": trained.dynamics,
            "history": trained.curves.record, **({"trained_in": trained.trained_in} if trained.trained_in else {}),
            "wall_seconds": sum(timings.values()), "timings": timings, "device": str(device),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "numpy": numpy.__version__, "hydra": hydra.__version__},
            "machine": machine_facts(), "commit": source_commit()}


def profile_title(name: str, cfg: DictConfig, split: str | None = None) -> str:
    """A profile figure's title: the run (or reanalysis) name, then what was measured: the measure, the
    split when one split is drawn, and the BatchNorm mode (or that the model has no BatchNorm)."""
    has_batch_norm = OmegaConf.select(cfg, "model.params.batch_norm", default=True) is not False
    what = [f"measure {cfg.measure}", *([f"split {split}"] if split else []),
            bn_mode_label(str(cfg.analysis.bn_mode), int(cfg.analysis.bn_batch_size)) if has_batch_norm
            else "no BatchNorm layers"]
    return f"{name}\n{', '.join(what)}"


def write_step(cfg: DictConfig, run_dir: Path, identity: str, run: SetUp, trained: Trained,
               measured: Measurement | None, timings: dict, name: str | None = None) -> Path:
    """Checkpoint and figures of a completed run, then results.json (last: its presence means the run
    finished), into run_dir; `name` is the run's name (default: run_dir's). Returns results.json."""
    name = name or run_dir.name
    from plotting import save_dynamics_figure, save_profile_figure, save_training_figure, split_label  # matplotlib: not before

    started = time.perf_counter()
    trained.curves.write_csv(run_dir / "history.csv")
    final = None if measured is None else {"train": measured.train_accuracy, "test": measured.test_accuracy}
    save_training_figure(trained.curves.record, name, run_dir / "training.png", final)
    if measured is not None:
        atomic_torch_save({"model_state": run.model.state_dict(),
                           "config": OmegaConf.to_container(cfg, resolve=True)}, run_dir / "checkpoint.pt")
        title = profile_title(name, cfg)
        ylabel = MEASURE_LABELS[str(cfg.measure)]
        profiles = [(split_label("train", int(run.dataset.train_y.numel())), measured.layers, measured.fit)]
        if measured.test_samples:
            profiles.append((split_label("test", measured.test_samples), measured.test_layers, measured.test_fit))
        save_profile_figure(profiles, title, [run_dir / "profile.png", Path(cfg.figures_dir) / f"{name}.png"],
                            ylabel=ylabel)
        if trained.dynamics:
            save_dynamics_figure(trained.dynamics, title, run_dir / "dynamics.png", ylabel=ylabel)
    timings["write"] = time.perf_counter() - started
    results = results_record(cfg, name, identity, trained, measured, timings, run.device)
    return atomic_write_json(run_dir / "results.json", results)


# A '-' between two parts of a run name; not the '-' of an exponent ("lr1e-05").
NAME_PART_BOUNDARY = re.compile(r"(?<![0-9]e)-")


def progress_label(name: str, limit: int = 60) -> str:
    """A run name for a progress bar: whole when at most `limit` characters, else its first '-'-separated
    parts and its last (the identity hash) around '...': shortened between parts, never inside one."""
    parts = NAME_PART_BOUNDARY.split(name)
    if len(name) <= limit or len(parts) < 3:
        return name
    kept = parts[:1]
    for part in parts[1:-1]:
        if len("-".join([*kept, part, "...", parts[-1]])) > limit:
            break
        kept.append(part)
    return "-".join([*kept, "...", parts[-1]])


def fit_summary(fit: dict | None) -> str:
    """A profile's fit for a log line, rounded for reading (results.json holds it at full precision)."""
    if not fit:
        return "none (fewer than two finite points)"
    return f"pearson_r {fit['pearson_r']:.4f} rho {fit['rho']:.4f}"


def train_measure_write(cfg: DictConfig, run_dir: Path, identity: str, timings: dict, name: str | None = None
                        ) -> Path:
    """Set up, train, measure (unless training diverged) and write one run into run_dir (`name`: the
    run's name, default run_dir's); `timings` gets the seconds of each step (validation's may be in it)."""
    name = name or run_dir.name
    started = time.perf_counter()
    run = set_up(cfg)
    timings["setup"] = time.perf_counter() - started
    log.info("training %s on %s (%d samples, input %s) on %s", cfg.model.name, run.dataset.name,
             run.dataset.train_x.shape[0], run.dataset.input_shape, run.device)
    measured = None
    with (logging_redirect_tqdm() if cfg.progress else contextlib.nullcontext(),   # log lines above the bars
          shared_training(cfg, run_dir) as twin):
        started = time.perf_counter()
        trained = Trained(*twin.trained(run, cfg)) if twin else train_step(cfg, run, run_dir, progress_label(name))
        timings["train"] = time.perf_counter() - started
        if trained.outcome.diverged:
            log.warning("training diverged at epoch %d (mean loss %s): no measurement, fit or checkpoint",
                        trained.outcome.diverged_epoch, trained.outcome.final_train_loss)
        else:
            started = time.perf_counter()
            measured = measure_step(cfg, run)
            timings["measure"] = time.perf_counter() - started
            log.info("fit: %s; accuracy train %.4f test %.4f", fit_summary(measured.fit),
                     measured.train_accuracy, measured.test_accuracy)
        return write_step(cfg, run_dir, identity, run, trained, measured, timings, name)


# ---------------------------------------------------------------------------------------- one whole run
def run_experiment(cfg: DictConfig, run_dir: Path) -> Path:
    """Validate, train, measure, fit and write every output of one run into run_dir; returns the path
    of results.json. Raises ConfigError or DatasetUnavailableError before any training.

    A run whose directory already holds a finished results.json of the same configuration is skipped
    unless cfg.force is true; a forced rerun trains in a staging folder and replaces the finished
    outputs only once its own are all written (a failure leaves the finished run as it was).
    RunInProgressError when another process is running it right now.
    """
    started = time.perf_counter()
    validate_config(cfg)
    run_dir, identity = Path(run_dir), identity_hash(cfg)
    check_run_dir(run_dir, cfg)
    if not cfg.force and (previous := finished_results(run_dir, identity)) is not None:
        log.info("skipped: %s holds a finished run of this configuration (force=true reruns it)", run_dir)
        print(f"skipped: {run_dir.name}", flush=True)
        return previous
    with run_lock(run_dir) as owned:
        if not owned:
            log.warning("not run: another process is running %s", run_dir)
            raise RunInProgressError(f"another process is running {run_dir} (its .lock is held); "
                                     "this one did not run it")
        for output in RUN_OUTPUTS:  # from a run killed while writing
            remove_stale_temporaries(run_dir / output)
        atomic_write(run_dir / RUN_MARKER, lambda temporary: temporary.write_text(identity))
        timings = {"validate": time.perf_counter() - started}
        if (run_dir / "results.json").exists():
            with staging_folder(run_dir) as staging:
                write_run_record(staging, cfg)
                train_measure_write(cfg, staging, identity, timings, name=run_dir.name)
                return publish(staging, run_dir)
        for output in RUN_OUTPUTS:  # an unfinished earlier attempt's files: not beside the new ones
            (run_dir / output).unlink(missing_ok=True)
        for events in run_dir.glob("tensorboard/events.out.tfevents.*"):
            events.unlink()
        write_run_record(run_dir, cfg)
        return train_measure_write(cfg, run_dir, identity, timings)


def allocation_failure(error: BaseException) -> bool:
    """Whether `error` is PyTorch failing to allocate memory (CPU or GPU)."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and ("can't allocate memory" in str(error)
                                             or "out of memory" in str(error)))
