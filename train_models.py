"""Execution set-up, builders (device, model, optimizer, learning-rate schedule), the training schemes and
accuracy. Training keeps the whole training set on the device and draws minibatches as index slices of a
seeded per-epoch permutation (no DataLoader). Nothing here writes files.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

import models
from config_utils import ConfigError, is_int
from models import MeasuredModel


# -------------------------------------------------------------------------------------------- builders
def resolve_device(name: str) -> torch.device:
    """device=auto picks cuda when present, else cpu; cpu, cuda and cuda:N name a device this machine
    has. Anything else (another backend, a GPU index it lacks) is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    match = re.fullmatch(r"(cpu|cuda)(?::([0-9]{1,4}))?", name, re.ASCII)
    if not match or (match[1] == "cpu" and match[2] not in (None, "0")):
        raise ConfigError(f"device={name}: not a device of this project; allowed: auto, cpu, cuda, cuda:N")
    if match[1] == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name}: no CUDA GPU is visible on this machine; allowed here: auto, cpu")
        if match[2] is not None and int(match[2]) >= torch.cuda.device_count():
            raise ConfigError(f"device={name}: this machine has {torch.cuda.device_count()} visible GPU(s); "
                              f"allowed: cuda:0 to cuda:{torch.cuda.device_count() - 1}, auto, cpu")
    return torch.device(name)


def set_up_execution(cfg: DictConfig) -> torch.device:
    """Device, CPU threads and deterministic kernels, as the execution keys say."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (before its first use)
    # torch.optim imports torch._dynamo (1.1 s on the 2-core Xeon) at the first optimizer: imported here,
    # before the data and the model are allocated, the main job's 600 epochs train in 10.7 s rather than
    # 11.3 s (the loop's allocations placed after its import), and set-up owns the cost
    # (a warm worker has it imported already)
    import torch._dynamo  # noqa: F401
    device = resolve_device(str(cfg.device))
    if int(cfg.threads) > 0:
        torch.set_num_threads(int(cfg.threads))
    # Subnormal floats (weights and Adam moments decaying towards zero) slow CPU arithmetic several
    # fold; flushing them to zero changes values below 1e-38 only.
    torch.set_flush_denormal(True)
    torch.use_deterministic_algorithms(True, warn_only=True)   # cheap once torch._dynamo is imported
    # ... but by default it also fills every new tensor's memory with NaN (a guard against kernels that
    # read memory they never wrote): 3.7% of the main job's training on the 2-core Xeon. The kernels used
    # here write what they allocate: the same numbers bit for bit (tests/test_bitwise.py).
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False
    return device


def build_model(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int) -> MeasuredModel:
    """models.<model.architecture>(input_shape, num_classes, **model.params) for inputs of
    `input_shape` (without the batch dimension)."""
    required = cfg.model.get("required_layer_num")
    if required is not None and int(cfg.layer_num) != int(required):
        raise ConfigError(f"layer_num={cfg.layer_num}: model {cfg.model.name} has a fixed depth; "
                          f"allowed: layer_num={required}")
    architecture = str(cfg.model.architecture)
    model_class = getattr(models, architecture, None)
    if not (isinstance(model_class, type) and issubclass(model_class, MeasuredModel)):
        raise ConfigError(f"model.architecture={architecture}: allowed: {', '.join(architectures())}")
    params = OmegaConf.to_container(cfg.model.params, resolve=True) if cfg.model.get("params") else {}
    return model_class(tuple(input_shape), num_classes, **params)


def architectures() -> list[str]:
    """Names of the MeasuredModel classes in models.py."""
    return sorted(name for name, value in vars(models).items() if isinstance(value, type)
                  and issubclass(value, MeasuredModel) and value is not MeasuredModel)


def check_buildable(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int,
                    device: torch.device) -> None:
    """ConfigError when the configured model cannot be trained: it fails to build (a fixed depth, a
    block count it cannot split, ...), has fewer than 3 measured points, its training state exceeds the
    device's memory, or the training scheme does not fit it. The model is built on PyTorch's meta
    device: no memory, no compute."""
    try:
        with torch.device("meta"):
            model = build_model(cfg, input_shape, num_classes)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model={cfg.model.name}: {error}") from None
    check_memory(cfg, model, device)
    points = len(model.measured_points)
    if points < 3:
        raise ConfigError(f"layer_num={cfg.layer_num}: model {cfg.model.name} then has {points} measured "
                          "points; a line fit needs at least 3")
    TRAINING_SCHEMES[cfg.training.name].check(cfg, model)


def check_memory(cfg: DictConfig, model: torch.nn.Module, device: torch.device) -> None:
    """ConfigError when the model's training state (parameters, gradients, optimizer state) exceeds
    the memory of the device it would train on: such a model could never be allocated."""
    parameters = sum(parameter.numel() for parameter in model.parameters())
    states = 2 + OPTIMIZER_STATES.get(str(cfg.optimization.get("name")), 2)
    needed = parameters * states * torch.finfo(torch.float32).bits // 8
    if device.type == "cuda":
        available = torch.cuda.get_device_properties(device).total_memory
    else:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > available:
        raise ConfigError(f"hidden_size={cfg.get('hidden_size')}: model {cfg.model.name} then has "
                          f"{parameters:,} parameters, whose training state needs {needed / 2**30:,.1f} GiB; "
                          f"allowed: a model whose training state fits in the {available / 2**30:.1f} GiB "
                          f"of {device.type} memory")


# optimization.name -> optimizer state tensors per parameter (for the memory check); build_optimizer
# builds each.
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "adam": 2}


def build_optimizer(optimization_cfg: DictConfig, parameters, lr: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """optimization.name: sgd (plain), momentum (SGD with optimization.momentum) or adam."""
    name = optimization_cfg.name
    parameters = list(parameters)
    common = {"lr": lr, "weight_decay": weight_decay, "fused": True}  # one kernel for all tensors
    if name == "sgd":
        return torch.optim.SGD(parameters, **common)
    if name == "momentum":
        return torch.optim.SGD(parameters, momentum=float(optimization_cfg.momentum), **common)
    if name == "adam":
        betas = tuple(float(b) for b in optimization_cfg.betas)
        return torch.optim.Adam(parameters, betas=betas, **common)
    raise ConfigError(f"optimization.name={name}: allowed: sgd, momentum, adam")


def learning_rate_at(epoch: int, base_lr: float, epochs: int, milestone_fractions, gamma: float) -> float:
    """Step schedule: base_lr * gamma^(number of milestones int(f * epochs) already reached)."""
    milestones = [int(fraction * epochs + 1e-9) for fraction in milestone_fractions]
    return base_lr * gamma ** sum(epoch >= milestone for milestone in milestones)


# ------------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    epochs_completed: int
    final_train_loss: float
    diverged: bool = False
    diverged_epoch: int | None = None
    loss_history: list[float] = field(default_factory=list)


def batch_starts(num_samples: int, batch_size: int) -> list[int]:
    """The first row of each minibatch of an epoch; a last batch of one sample is dropped (BatchNorm
    cannot train on one sample)."""
    starts = list(range(0, num_samples, batch_size))
    if num_samples - starts[-1] == 1 and len(starts) > 1:
        starts.pop()
    return starts


def minibatch_step(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
                   optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """One optimizer step on the rows `index`: forward, cross-entropy, backward, step; returns the loss."""
    loss = F.cross_entropy(model(inputs[index]), labels[index])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def train(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
          optimizer: torch.optim.Optimizer, *, epochs: int, batch_size: int, base_lr: float,
          schedule_cfg: DictConfig | None, seed: int, progress: bool = True,
          description: str = "train", on_epoch_end=None) -> TrainResult:
    """Minibatch training with per-epoch reshuffling on the device.

    schedule_cfg (milestone_fractions, gamma) sets the step schedule; None keeps the lr constant.
    Stops at the first epoch whose mean loss is NaN or infinite (TrainResult.diverged).
    on_epoch_end(epoch, mean_loss, lr) is called after each epoch (epoch counted from 1; lr: the
    epoch's learning rate, read from the optimizer).
    """
    device = inputs.device
    generator = torch.Generator(device=device).manual_seed(seed)
    num_samples = inputs.shape[0]
    starts = batch_starts(num_samples, batch_size)
    result = TrainResult(epochs_completed=0, final_train_loss=math.nan)
    bar = tqdm(range(epochs), desc=description, disable=not progress, leave=False,
               mininterval=0.5, dynamic_ncols=True)
    model.train()
    for epoch in bar:
        if schedule_cfg is not None:
            lr = learning_rate_at(epoch, base_lr, epochs, schedule_cfg.milestone_fractions,
                                  float(schedule_cfg.gamma))
            for group in optimizer.param_groups:
                group["lr"] = lr
        order = torch.randperm(num_samples, generator=generator, device=device)
        loss_sum = torch.zeros((), device=device)
        seen = 0
        for start in starts:
            index = order[start:start + batch_size]
            loss = minibatch_step(model, inputs, labels, index, optimizer)
            loss_sum += loss.detach() * index.numel()
            seen += index.numel()
        epoch_loss = float(loss_sum) / seen
        result.loss_history.append(epoch_loss)
        result.epochs_completed = epoch + 1
        result.final_train_loss = epoch_loss
        if not math.isfinite(epoch_loss):
            result.diverged, result.diverged_epoch = True, epoch + 1
            break
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, epoch_loss, optimizer.param_groups[0]["lr"])
        if progress and epoch % 10 == 0:
            bar.set_postfix(loss=f"{epoch_loss:.4f}", refresh=False)
    bar.close()
    return result


def set_trainable(modules, trainable: bool) -> None:
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad_(trainable)


def train_frozen(model: MeasuredModel, inputs: torch.Tensor, labels: torch.Tensor, cfg: DictConfig, *,
                 progress: bool = True, description: str = "train", on_stage_end=None,
                 on_epoch_end=None) -> TrainResult:
    """The paper's two-stage training on model.stages (blocks then classifier):

    stage 1 trains only the first training.split modules for training.stage1_epochs epochs at a
    constant lr (the rest keep their initial parameters); stage 2 freezes those and trains the
    remaining modules for `epochs` epochs with the usual schedule. Each stage has a fresh optimizer
    over its trainable parameters only, so frozen parameters are bit-identical across the stage.
    on_stage_end(stage_number) is called after each stage; on_epoch_end(epoch, mean_loss, lr) after each
    epoch, counting the epochs of both stages.
    """
    stages = list(model.stages)
    split = int(cfg.training.split)  # validated by check_frozen
    plan = [(stages[:split], stages[split:], int(cfg.training.stage1_epochs), None),
            (stages[split:], stages[:split], int(cfg.epochs), cfg.schedule)]
    combined = TrainResult(epochs_completed=0, final_train_loss=math.nan)
    for number, (trainable, frozen, epochs, schedule) in enumerate(plan, start=1):
        set_trainable(frozen, False)
        set_trainable(trainable, True)
        parameters = [p for module in trainable for p in module.parameters()]
        optimizer = build_optimizer(cfg.optimization, parameters, float(cfg.lr), float(cfg.weight_decay))
        offset = combined.epochs_completed
        stage_epoch_end = on_epoch_end and (lambda epoch, loss, lr: on_epoch_end(offset + epoch, loss, lr))
        outcome = train(model, inputs, labels, optimizer, epochs=epochs, batch_size=int(cfg.batch_size),
                        base_lr=float(cfg.lr), schedule_cfg=schedule, seed=int(cfg.seed) + number - 1,
                        progress=progress, description=f"{description} stage {number}",
                        on_epoch_end=stage_epoch_end)
        if outcome.diverged:
            combined.diverged = True
            combined.diverged_epoch = combined.epochs_completed + outcome.diverged_epoch
        combined.epochs_completed += outcome.epochs_completed
        combined.final_train_loss = outcome.final_train_loss
        combined.loss_history += outcome.loss_history
        if on_stage_end is not None:
            on_stage_end(number)
        if outcome.diverged:
            break
    set_trainable(stages, True)
    return combined


def train_standard(model: MeasuredModel, inputs: torch.Tensor, labels: torch.Tensor, cfg: DictConfig, *,
                   progress: bool = True, description: str = "train", on_epoch_end=None) -> TrainResult:
    """All parameters for `epochs` epochs with the step schedule."""
    optimizer = build_optimizer(cfg.optimization, model.parameters(), float(cfg.lr),
                                float(cfg.weight_decay))
    return train(model, inputs, labels, optimizer, epochs=int(cfg.epochs), batch_size=int(cfg.batch_size),
                 base_lr=float(cfg.lr), schedule_cfg=cfg.schedule, seed=int(cfg.seed),
                 progress=progress, description=description, on_epoch_end=on_epoch_end)


def check_frozen(cfg: DictConfig, model: MeasuredModel) -> None:
    """ConfigError unless training.split leaves modules on both sides and stage1_epochs >= 1."""
    stages = len(getattr(model, "stages", []))
    split = cfg.training.get("split")
    if not (is_int(split) and 0 < split < stages):
        raise ConfigError(f"training.split={split}: model {cfg.model.name} has {stages} trainable "
                          f"stages; allowed: 1..{max(stages - 1, 0)}")
    stage1_epochs = cfg.training.get("stage1_epochs")
    if not (is_int(stage1_epochs) and stage1_epochs >= 1):
        raise ConfigError(f"training.stage1_epochs={stage1_epochs}: allowed: an integer >= 1")


@dataclass(frozen=True)
class TrainingScheme:
    """A value of training.name (conf/training/<name>.yaml): how to train, how many epochs that makes
    in all, and the check of its own keys against the model (ConfigError)."""

    train: Callable[..., TrainResult]
    total_epochs: Callable[[DictConfig], int]
    check: Callable[[DictConfig, MeasuredModel], None] = lambda cfg, model: None


TRAINING_SCHEMES = {
    "standard": TrainingScheme(train_standard, lambda cfg: int(cfg.epochs)),
    "frozen": TrainingScheme(train_frozen, lambda cfg: int(cfg.training.stage1_epochs) + int(cfg.epochs),
                             check_frozen),
}


def run_training(model: MeasuredModel, inputs: torch.Tensor, labels: torch.Tensor, cfg: DictConfig, *,
                 progress: bool = True, description: str = "train", on_epoch_end=None) -> TrainResult:
    """Train as the scheme cfg.training.name says (TRAINING_SCHEMES)."""
    return TRAINING_SCHEMES[cfg.training.name].train(model, inputs, labels, cfg, progress=progress,
                                                     description=description, on_epoch_end=on_epoch_end)


@torch.no_grad()
def accuracy(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 2048) -> float:
    """Fraction of correct argmax predictions in eval mode (restores the previous mode)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, inputs.shape[0], batch_size):
        logits = model(inputs[start:start + batch_size])
        correct += int((logits.argmax(dim=1) == labels[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / inputs.shape[0]
