"""Runs that differ only in what they measure train one network: the second measures the first's weights.

MEASUREMENT_ONLY_KEYS are the config keys that choose only what is measured (a model's measured points,
the measure, how the profile is taken); PLACE_KEYS say only where a run writes and what it prints. Two
runs whose resolved configs agree in every other key train the very same network, so a run first looks
in its log folder for a finished twin (TRAINED_INDEX/<training_key>: the twin's run folder name) and, when
the twin's results.json (read checked, its config compared key by key) and checkpoint.pt (loaded with
weights_only=True into a model of the same shape) are there, takes its trained weights and training
record instead of training; results.json then names the twin in "trained_in". Its numbers are those of a
run trained by itself on the same machine (tests/test_shared_training.py). The lock of a training key
(LOCKS/<training_key>.lock) is held from that look-up until the run is written, so a twin started beside
it waits and measures the weights this one writes.

Never shared: force=true runs (they retrain by definition), runs whose training also records what is
measured (analysis.every_n_epochs > 0) or writes TensorBoard events (logger), and diverged runs.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from atomic_io import atomic_write, file_lock, read_small_text
from config_utils import MAX_RUN_NAME, name_problem
from run_records import BadFile, read_json, restore_non_finite

log = logging.getLogger("representation_dynamics")

MEASUREMENT_ONLY_KEYS = ("model.params.feature_option", "model.tag", "model.pca_dim", "measure",
                         "analysis.bn_mode", "analysis.bn_batch_size", "analysis.pca_dim",
                         "analysis.test_subset_size")
PLACE_KEYS = ("hydra", "log_root", "figures_dir", "force", "progress", "log_every_n_epochs")
TRAINED_INDEX = ".trained"     # in a log folder: one file per training key, naming the run that trained it
LOCKS = ".training-locks"


def training_view(cfg: DictConfig | dict) -> dict:
    """The resolved config without MEASUREMENT_ONLY_KEYS and PLACE_KEYS: what decides the trained network."""
    view = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg))
    for dotted in (*MEASUREMENT_ONLY_KEYS, *PLACE_KEYS):
        *parents, leaf = dotted.split(".")
        node = view
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return view


def training_key(cfg: DictConfig | dict) -> str:
    return hashlib.sha256(json.dumps(training_view(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


def shareable(cfg: DictConfig) -> bool:
    """Whether a run of `cfg` may measure a twin's weights (and a later twin its own)."""
    return not cfg.force and int(cfg.analysis.every_n_epochs) == 0 and cfg.get("logger") in (None, "none")


@dataclass
class Twin:
    name: str                  # the run folder that trained the network
    results: dict              # its results.json
    state: dict                # its trained weights

    def trained(self, run, cfg: DictConfig) -> tuple:
        """The fields of experiment.Trained for `run` (outcome, dynamics, curves, trained_in), its model
        given the twin's trained weights and its curves the twin's training record."""
        from train_models import TrainResult
        from training_curves import TrainingCurves

        run.model.load_state_dict(self.state)
        dataset = run.dataset
        curves = TrainingCurves(run.model, dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y,
                                int(cfg.get("curves_every_n_epochs") or 0), int(cfg.analysis.eval_batch_size))
        curves.history = {key: list(self.results["history"][key]) for key in curves.history}
        outcome = TrainResult(int(self.results["epochs_completed"]), float(self.results["final_train_loss"]),
                              loss_history=list(curves.history["train_loss"]))
        return outcome, None, curves, self.name


def find_twin(cfg: DictConfig, folder: Path, key: str) -> Twin | None:
    """The finished run of `folder` that trained the network of `cfg` (TRAINED_INDEX/key), else None. Its
    name, results.json and checkpoint are untrusted: a name that is no plain folder name, a record that is
    not a completed run of the same training view, or a checkpoint that is not a state dict of tensors is
    passed over with one warning line (the run then trains)."""
    import torch

    index = folder / TRAINED_INDEX / key
    if not index.is_file():
        return None
    try:
        name = read_small_text(index, 256)
        if (problem := name_problem(name, MAX_RUN_NAME)) is not None:
            raise BadFile(index, problem)
        results = restore_non_finite(read_json(folder / name / "results.json"))
        if results.get("status") != "completed" or training_view(results.get("config") or {}) != training_view(cfg):
            raise BadFile(folder / name / "results.json", "not a completed run of this training")
        checkpoint = torch.load(folder / name / "checkpoint.pt", weights_only=True, map_location="cpu")
        state = checkpoint.get("model_state") if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
            raise BadFile(folder / name / "checkpoint.pt", "no model_state of tensors")
    except (BadFile, OSError, ValueError, RuntimeError, KeyError, TypeError) as error:
        log.warning("not measuring the trained network of %s (%s): training it", index, error)
        return None
    return Twin(name, results, state)


@contextlib.contextmanager
def shared_training(cfg: DictConfig, run_dir: Path):
    """For the with-block that trains (or not), measures and writes one run: yields its Twin when a run of
    its log folder trained the same network, else None; the training key's lock is held throughout, and a
    run that trained and finished is indexed for the runs after it."""
    if not shareable(cfg):
        yield None
        return
    folder, key = Path(run_dir).parent, training_key(cfg)
    with file_lock(folder / LOCKS / f"{key}.lock"):
        twin = find_twin(cfg, folder, key)
        if twin is not None:
            log.info("measuring the network %s trained (same config but what is measured)", twin.name)
        yield twin
        if twin is None and (Path(run_dir) / "checkpoint.pt").is_file():
            atomic_write(folder / TRAINED_INDEX / key, lambda temporary: temporary.write_text(Path(run_dir).name))
