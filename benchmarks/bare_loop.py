"""The floor a run's training is measured against: the same training as a bare PyTorch loop (same model,
data, batches, steps and fused optimizer, one thread; no schedule, no loss bookkeeping, no progress, no
callbacks), in this process or as a whole process of its own.

    python benchmarks/bare_loop.py SETTINGS.pt    # a whole bare process (bench_process.py, bench_sweep.py)

It imports torch, models.py (the architectures), train_models' one minibatch step and the cached dataset
tensors: no Hydra composition, no run machinery. bench_process.py and bench_sweep.py import it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def bare_train(model, inputs, labels, optimizer, epochs: int, batch_size: int, seed: int) -> float:
    """Seconds of `epochs` epochs of minibatch steps over a seeded per-epoch permutation (the project's
    batches, its BatchNorm guard against a last batch of one sample included)."""
    import torch

    from train_models import batch_starts, minibatch_step

    generator = torch.Generator().manual_seed(seed)
    count = inputs.shape[0]
    starts = batch_starts(count, batch_size)
    model.train()
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(count, generator=generator)
        for start in starts:
            minibatch_step(model, inputs, labels, order[start:start + batch_size], optimizer)
    return time.perf_counter() - started


def bare_run(settings: dict) -> float:
    """Build the model and optimizer of `settings` (data, model, layer_num, hidden_size, optimizer, lr,
    momentum, weight_decay, epochs, batch_size, seed, inputs and labels tensors) and train: its seconds."""
    import torch

    import models

    torch.set_num_threads(1)
    torch.manual_seed(settings["seed"])
    model = getattr(models, settings["architecture"])(tuple(settings["input_shape"]), settings["num_classes"],
                                                      **settings["params"])
    common = {"lr": settings["lr"], "weight_decay": settings["weight_decay"], "fused": True}
    if settings["optimizer"] == "adam":
        optimizer = torch.optim.Adam(model.parameters(), betas=tuple(settings["betas"]), **common)
    elif settings["optimizer"] == "momentum":
        optimizer = torch.optim.SGD(model.parameters(), momentum=settings["momentum"], **common)
    else:
        optimizer = torch.optim.SGD(model.parameters(), **common)
    return bare_train(model, settings["inputs"], settings["labels"], optimizer, settings["epochs"],
                      settings["batch_size"], settings["seed"])


def settings_of(cfg, inputs, labels) -> dict:
    """bare_run's settings from a composed run config and its training tensors."""
    from omegaconf import OmegaConf

    return {"architecture": str(cfg.model.architecture), "input_shape": tuple(inputs.shape[1:]),
            "num_classes": int(cfg.data.num_classes),
            "params": OmegaConf.to_container(cfg.model.params, resolve=True) if cfg.model.get("params") else {},
            "optimizer": str(cfg.optimization.name), "lr": float(cfg.lr), "weight_decay": float(cfg.weight_decay),
            "momentum": float(cfg.optimization.get("momentum") or 0.0),
            "betas": [float(b) for b in cfg.optimization.get("betas") or (0.9, 0.999)],
            "epochs": int(cfg.epochs), "batch_size": int(cfg.batch_size), "seed": int(cfg.seed),
            "inputs": inputs, "labels": labels}


def main(argv: list[str]) -> None:
    """A whole bare process: the settings (one, or a list: trained one after another) with the cached
    tensors are prepared by the caller and passed as one torch file (bench_process.py and bench_sweep.py
    write it), so that this process imports torch and models only. Prints each training's seconds."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", type=Path, help="the torch file of settings and tensors the caller wrote")
    settings_path = parser.parse_args(argv).settings
    sys.path.insert(0, str(REPO_ROOT))
    import cpu_kernels  # noqa: F401  (the entry scripts' CPU kernels)
    import torch

    settings = torch.load(settings_path, weights_only=True)    # plain values and tensors: nothing unpickled
    for one in settings if isinstance(settings, list) else [settings]:
        print(f"bare training: {bare_run(one):.3f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
