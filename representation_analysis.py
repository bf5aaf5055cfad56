"""Per-layer features of a model in one forward pass, and the separation profile (D per point).

Features are captured with forward hooks on the modules a model declares in `measured_points` (or any
modules a caller names), so every point comes out of the same single pass: no per-model branches and
no re-running of the network per layer. Measurement runs under torch.no_grad() and never changes the
model: in the original's BatchNorm "train_batches" mode it works on a copy, so running statistics stay
as training left them.

BatchNorm modes (analysis.bn_mode):
    eval           BatchNorm uses its running statistics (default; deterministic, batch-independent)
    train_batches  the original code's way: train-mode BatchNorm over consecutive batches of
                   analysis.bn_batch_size (100) samples, batch statistics per batch
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from variance_analysis import (between_variance_from_statistics, class_statistics, fit_log_linear,
                               fuzziness_from_statistics, layer_ratios, pca_reduce)

# measure= choices: functions of variance_analysis.ClassStatistics
MEASURES = {"within_variance": fuzziness_from_statistics,
            "between_variance": between_variance_from_statistics}
BN_MODES = ("eval", "train_batches")


@torch.no_grad()
def collect_features(model: nn.Module, inputs: torch.Tensor, modules: list[tuple[str, nn.Module]],
                     batch_size: int, train_mode: bool = False) -> dict[str, torch.Tensor]:
    """Outputs of `modules` for all `inputs`, flattened to [N, d] per module, from one forward pass
    per batch of `batch_size` samples. Returns {name: features} in the order of `modules`."""
    captured: dict[str, list[torch.Tensor]] = {name: [] for name, _ in modules}

    def hook_for(name):
        def hook(_module, _inputs, output):
            captured[name].append(output.detach().flatten(start_dim=1))
        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules]
    was_training = model.training
    model.train(train_mode)
    try:
        for start in range(0, inputs.shape[0], batch_size):
            model(inputs[start:start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: torch.cat(chunks) for name, chunks in captured.items()}


def measured_features(model: nn.Module, inputs: torch.Tensor, bn_mode: str = "eval",
                      bn_batch_size: int = 100, eval_batch_size: int = 1000,
                      modules: list[tuple[str, nn.Module]] | None = None) -> dict[str, torch.Tensor]:
    """Features of the model's measured points (or of `modules`) in the chosen BatchNorm mode."""
    if bn_mode not in BN_MODES:
        raise ValueError(f"analysis.bn_mode={bn_mode}: allowed: {', '.join(BN_MODES)}")
    if bn_mode == "train_batches":
        names = [name for name, _ in (modules or model.measured_modules())]
        model = copy.deepcopy(model)  # train-mode BatchNorm updates running stats: spare the original
        by_name = dict(model.named_modules())
        modules = [(name, by_name[name]) for name in names]
        return collect_features(model, inputs, modules, bn_batch_size, train_mode=True)
    return collect_features(model, inputs, modules or model.measured_modules(), eval_batch_size)


def separation_profile(features: dict[str, torch.Tensor], labels: torch.Tensor,
                       measure: str = "within_variance", pca_dim: int | None = None) -> list[dict]:
    """One record per point: index, name, dim, D, the measure's value, ratio D_l / D_(l-1) and the
    traces of SS_w and SS_b. Features wider than pca_dim are first reduced to pca_dim by PCA."""
    if measure not in MEASURES:
        raise ValueError(f"measure={measure}: allowed: {', '.join(MEASURES)}")
    records = []
    for index, (name, feature) in enumerate(features.items()):
        feature = feature.to(torch.float64)
        dim = feature.shape[1]
        if pca_dim is not None and dim > pca_dim:
            feature = pca_reduce(feature, pca_dim)
        stats = class_statistics(feature, labels)
        fuzziness = fuzziness_from_statistics(stats)
        records.append({"index": index, "name": name, "dim": dim, "D": fuzziness,
                        "value": fuzziness if measure == "within_variance" else MEASURES[measure](stats),
                        "within_trace": stats.within_trace(), "between_trace": stats.between_trace()})
    for record, ratio in zip(records, layer_ratios([r["value"] for r in records])):
        record["ratio"] = ratio
    return records


def profile_values(records: list[dict]) -> tuple[list[int], list[float]]:
    """(point indices, measure values) of a profile, ready for variance_analysis.fit_log_linear."""
    return [r["index"] for r in records], [r["value"] for r in records]


def profile_fit(records: list[dict], segments: list[tuple[int, int]] | None = None) -> dict | None:
    """The line fit of ln(value) against the point index over the finite points (fit_log_linear), and
    with `segments` [(first, last), ...] one more fit per segment under "segments". None when fewer
    than two finite points remain; `dropped` counts the non-finite points left out."""
    indices, values = profile_values(records)
    try:
        fit = fit_log_linear(indices, values).as_dict()
    except ValueError:
        return None
    if segments:
        fit["segments"] = []
        for first, last in segments:
            part = fit_log_linear(indices[first:last + 1], values[first:last + 1]).as_dict()
            fit["segments"].append({"first_index": first, "last_index": last, **part})
    return fit
