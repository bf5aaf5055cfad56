"""Train a network, measure its separation fuzziness D_l at every measured point, fit ln D_l against l.

    python representation_dynamics_terminal.py data=cfm model=GFNN layer_num=6 hidden_size=100 \
        optimization=adam lr=1e-3                      # the main job (make run)
    python representation_dynamics_terminal.py -m lr=3e-5,1e-4,3e-4,1e-3,3e-3   # Hydra multirun

Config: conf/config.yaml and its groups (data/, model/, optimization/, training/). Each run writes, in
its own directory logs/<run name>/ (descriptive, deterministic):
    results.json   config, status, layers (D, ratio, traces per point), fit, accuracies, timings
    profile.png    ln D_l against l with the fitted line (also copied to figures/<run name>.png)
    checkpoint.pt  model state and config
    representation_dynamics_terminal.log, .hydra/   the run log and Hydra's resolved config
The last stdout line is `results: <path to results.json>`.
"""
from __future__ import annotations

import json
import logging
import platform
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from atomic_io import atomic_torch_save, atomic_write_json
from config_utils import CONF_DIR, identity_hash, register_resolvers
from data import prepare_dataset
from plotting import save_profile_figure
from representation_analysis import measured_features, profile_values, separation_profile
from train_models import (accuracy, build_model, build_optimizer, resolve_device, train)
from variance_analysis import fit_log_linear

log = logging.getLogger("representation_dynamics")
register_resolvers()


def versions() -> dict:
    import hydra as hydra_module
    import numpy

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "hydra": hydra_module.__version__}


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


def run_experiment(cfg: DictConfig, run_dir: Path) -> Path:
    """Train, measure, fit and write every output of one run into run_dir; returns results.json.

    A run whose directory already holds a finished results.json of the same configuration is skipped
    (logged as skipped) unless cfg.force is true.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    if not cfg.force and (previous := finished_results(run_dir, cfg)) is not None:
        log.info("skipped: %s already holds a finished run of this configuration (force=true reruns)",
                 run_dir)
        print(f"skipped: {run_dir.name}", flush=True)
        return previous
    device = resolve_device(str(cfg.device))
    if int(cfg.threads) > 0:
        torch.set_num_threads(int(cfg.threads))
    # Subnormal floats (weights and Adam moments decaying towards zero) slow CPU arithmetic several
    # fold; flushing them to zero changes values below 1e-38 only.
    torch.set_flush_denormal(True)
    seed = int(cfg.seed)

    timings = {}
    dataset = prepare_dataset(cfg.data, Path(cfg.data_root), seed, device, bool(cfg.download))
    torch.manual_seed(seed)
    model = build_model(cfg, dataset.input_shape, dataset.num_classes).to(device)
    optimizer = build_optimizer(cfg.optimization, model.parameters(), float(cfg.lr),
                                float(cfg.weight_decay))
    log.info("training %s on %s (%d samples, input %s) on %s", cfg.model.name, dataset.name,
             dataset.train_x.shape[0], dataset.input_shape, device)
    outcome = train(model, dataset.train_x, dataset.train_y, optimizer, epochs=int(cfg.epochs),
                    batch_size=int(cfg.batch_size), base_lr=float(cfg.lr), schedule_cfg=cfg.schedule,
                    seed=seed, progress=bool(cfg.progress), description=run_dir.name[:40])
    status = "diverged" if outcome.diverged else "completed"
    timings["train"] = time.perf_counter() - started

    layers, fit = [], None
    train_accuracy = test_accuracy = None
    if not outcome.diverged:
        analysis = cfg.analysis
        features = measured_features(model, dataset.train_x, analysis.bn_mode,
                                     int(analysis.bn_batch_size), int(analysis.eval_batch_size))
        layers = separation_profile(features, dataset.train_y, str(cfg.measure), analysis.pca_dim)
        fit = fit_log_linear(*profile_values(layers)).as_dict()
        train_accuracy = accuracy(model, dataset.train_x, dataset.train_y, int(analysis.eval_batch_size))
        test_accuracy = accuracy(model, dataset.test_x, dataset.test_y, int(analysis.eval_batch_size))
        log.info("fit: pearson_r %.5f rho %.5f; accuracy train %.4f test %.4f", fit["pearson_r"],
                 fit["rho"], train_accuracy, test_accuracy)
    else:
        log.warning("training diverged at epoch %d (loss %s): no measurement or fit",
                    outcome.diverged_epoch, outcome.final_train_loss)

    timings["measure"] = time.perf_counter() - started - timings["train"]
    atomic_torch_save({"model_state": model.state_dict(), "measured_points": model.measured_points,
                       "config": OmegaConf.to_container(cfg, resolve=True)}, run_dir / "checkpoint.pt")
    name = run_dir.name
    if layers:
        save_profile_figure(layers, fit, name, [run_dir / "profile.png",
                                                Path(cfg.figures_dir) / f"{name}.png"],
                            ylabel="ln D" if cfg.measure == "within_variance" else f"ln {cfg.measure}")
    results = {
        "config": OmegaConf.to_container(cfg, resolve=True), "run_name": name,
        "identity_hash": identity_hash(cfg), "status": status,
        "measure": str(cfg.measure), "layers": layers, "fit": fit,
        "train_accuracy": train_accuracy, "test_accuracy": test_accuracy,
        "final_train_loss": outcome.final_train_loss, "epochs_completed": outcome.epochs_completed,
        "diverged_epoch": outcome.diverged_epoch, "wall_seconds": time.perf_counter() - started,
        "timings": timings,
        "device": str(device), "versions": versions(),
    }
    return atomic_write_json(run_dir / "results.json", results)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    results_path = run_experiment(cfg, Path(HydraConfig.get().runtime.output_dir))
    print(f"results: {results_path}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
