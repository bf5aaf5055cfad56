"""Features of a model's measured points from one hooked forward pass per batch, the separation profile
(one record per point) and its fit, for the command line (measure_profile) and for any nn.Module
(measure_separation). Measuring never changes the model: BatchNorm's train_batches mode (the paper's
protocol) works on a copy. What cannot be measured truthfully is refused in one line (TypeError or
ValueError naming the argument and what is allowed): labels that are no integer class indices, a bare
string as modules, a pca_dim below 1, streamed d x d sums larger than the memory available.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import math
import numbers
import re
import warnings

import torch
from torch import nn
from tqdm.auto import tqdm

from variance_analysis import (MEASURES, StreamingClassStatistics, check_class_indices, class_statistics,
                               fit_log_linear, fuzziness_from_statistics, layer_ratios, pca_reduce)
BN_MODES = ("eval", "train_batches")
log = logging.getLogger("representation_dynamics")


def bn_mode_label(bn_mode: str, bn_batch_size: int) -> str:
    """How a profile was measured, in words for figure titles and reports."""
    if bn_mode == "train_batches":
        return f"BatchNorm in train mode, batches of {bn_batch_size} (the paper's protocol)"
    return "BatchNorm in eval mode (running statistics)"


@contextlib.contextmanager
def captured_outputs(model: nn.Module, modules: list[tuple[str, nn.Module]], sink, train_mode: bool = False):
    """Forward hooks on `modules` that pass each output, flattened to [batch, d], to sink(name, output),
    with the model in train or eval mode (restored afterwards). Yields `forward(inputs)`, which runs one
    batch; a module that runs more than once in one forward pass is an error (its outputs could not be
    told apart)."""
    seen: set[str] = set()

    def hook_for(name):
        def hook(_module, _inputs, output):
            if name in seen:
                raise ValueError(f"module {name!r} runs more than once per forward pass (a reused module): "
                                 "its outputs cannot be told apart; measure its parent")
            seen.add(name)
            sink(name, output.detach().flatten(start_dim=1))
        return hook

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        seen.clear()
        return model(inputs)

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules]
    was_training = model.training
    model.train(train_mode)
    try:
        with torch.no_grad():
            yield forward
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def collect_features(model: nn.Module, inputs: torch.Tensor, modules: list[tuple[str, nn.Module]],
                     batch_size: int, train_mode: bool = False) -> dict[str, torch.Tensor]:
    """Outputs of `modules` for all `inputs`, flattened to [N, d] per module, from one forward pass
    per batch of `batch_size` samples. Returns {name: features} in the order of `modules`."""
    captured: dict[str, list[torch.Tensor]] = {name: [] for name, _ in modules}
    with captured_outputs(model, modules, lambda name, output: captured[name].append(output),
                          train_mode) as forward:
        for start in range(0, inputs.shape[0], batch_size):
            forward(inputs[start:start + batch_size])
    return {name: torch.cat(chunks) for name, chunks in captured.items()}


def features_and_accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                          modules: list[tuple[str, nn.Module]], batch_size: int,
                          rows: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], float]:
    """One eval-mode pass over all `inputs` that serves twice: the features of `modules` for the samples
    `rows` (all when None; kept in the order of rows) and the accuracy over all inputs (as
    train_models.accuracy with the same batch size)."""
    order = torch.arange(inputs.shape[0], device=inputs.device) if rows is None else rows
    ascending, position = torch.sort(order)
    captured: dict[str, list[torch.Tensor]] = {name: [] for name, _ in modules}
    kept = None  # offsets within the current batch of the rows it holds

    def sink(name, output):
        captured[name].append(output[kept])

    correct = 0
    with captured_outputs(model, modules, sink) as forward:
        for start in range(0, inputs.shape[0], batch_size):
            stop = min(start + batch_size, inputs.shape[0])
            first, last = torch.searchsorted(ascending, torch.tensor([start, stop], device=inputs.device)).tolist()
            kept = ascending[first:last] - start
            logits = forward(inputs[start:stop])
            correct += int((logits.argmax(dim=1) == labels[start:stop]).sum())
    restore = torch.empty_like(position)
    restore[position] = torch.arange(position.numel(), device=position.device)
    features = {name: torch.cat(chunks)[restore] for name, chunks in captured.items()}
    return features, correct / inputs.shape[0]


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


def not_finite_on_failure(name: str, compute, *args) -> float:
    """compute(*args), or NaN with a RuntimeWarning naming the point when the linear algebra fails
    (an SVD that does not converge, e.g. on non-finite features of a very deep network): one failing
    point is recorded as not finite and the fit leaves it out, as for SS_b = 0, instead of losing the run."""
    try:
        return compute(*args)
    except torch.linalg.LinAlgError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        warnings.warn(f"point {name!r}: {reason.rstrip('.')}: recorded as not finite", RuntimeWarning, stacklevel=2)
        return math.nan


def point_records(named_statistics, dims: list[int], measure: str = "within_variance") -> list[dict]:
    """One record per point from (name, ClassStatistics) pairs: index, name, dim, D, the measure's
    value, ratio value_l / value_(l-1) and the traces of SS_w and SS_b. A point whose statistics are
    None (they could not be computed) or whose measure fails numerically gets NaN values."""
    if measure not in MEASURES:
        raise ValueError(f"measure={measure}: allowed: {', '.join(MEASURES)}")
    records = []
    for index, ((name, stats), dim) in enumerate(zip(named_statistics, dims)):
        if stats is None:
            records.append({"index": index, "name": name, "dim": dim, "D": math.nan, "value": math.nan,
                            "within_trace": math.nan, "between_trace": math.nan})
            continue
        fuzziness = not_finite_on_failure(name, fuzziness_from_statistics, stats)
        value = fuzziness if measure == "within_variance" else not_finite_on_failure(name, MEASURES[measure], stats)
        records.append({"index": index, "name": name, "dim": dim, "D": fuzziness, "value": value,
                        "within_trace": stats.within_trace(), "between_trace": stats.between_trace()})
    for record, ratio in zip(records, layer_ratios([r["value"] for r in records])):
        record["ratio"] = ratio
    return records


def separation_profile(features: dict[str, torch.Tensor], labels: torch.Tensor,
                       measure: str = "within_variance", pca_dim: int | None = None,
                       progress: bool = False, description: str = "measure") -> list[dict]:
    """Records (see point_records) of in-memory features {name: [N, d]}. Features wider than pca_dim
    are first reduced to pca_dim dimensions by PCA (`dim` stays the original width). With `progress`, a
    bar labelled `description` counts the points as they are measured."""
    check_pca_dim(pca_dim)

    def statistics(name, feature):
        if pca_dim is not None and feature.shape[1] > pca_dim:
            feature = not_finite_on_failure(name, pca_reduce, feature, pca_dim)
            if not isinstance(feature, torch.Tensor):  # the PCA's SVD failed: no statistics
                return None
        return class_statistics(feature, labels)

    points = tqdm(features.items(), total=len(features), desc=description, unit="point", disable=not progress,
                  leave=False, mininterval=0.5, dynamic_ncols=True)
    named = ((name, statistics(name, feature)) for name, feature in points)
    records = point_records(named, [feature.shape[1] for feature in features.values()], measure)
    points.close()
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
            try:
                part = fit_log_linear(indices[first:last + 1], values[first:last + 1]).as_dict()
            except ValueError:  # fewer than two finite points in this segment: a not-finite fit
                part = {key: math.nan for key in ("slope", "intercept", "rho", "pearson_r", "r2")}
            fit["segments"].append({"first_index": first, "last_index": last, **part})
    return fit


# ------------------------------------------------------------------------------------ API for any model
def is_whole_number(value) -> bool:
    """An int (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_pca_dim(pca_dim) -> None:
    """TypeError or ValueError unless pca_dim is None (no PCA) or an integer >= 1 (pca_dim=-1 kept d - 1
    components, 0 all of them)."""
    if pca_dim is None:
        return
    if not is_whole_number(pca_dim):
        raise TypeError(f"pca_dim={pca_dim!r}: of type {type(pca_dim).__name__}; allowed: None (no PCA) or an "
                        "integer >= 1, the principal components kept")
    if pca_dim < 1:
        raise ValueError(f"pca_dim={pca_dim}: allowed: None (no PCA) or an integer >= 1, the principal "
                         "components kept")


def check_count(argument: str, value, allow_none: bool = False) -> None:
    """TypeError or ValueError unless `value` is an integer >= 1 (or None with allow_none)."""
    if value is None and allow_none:
        return
    if not is_whole_number(value) or value < 1:
        raise (ValueError if is_whole_number(value) else TypeError)(
            f"{argument}={value!r}: allowed: {'None or ' if allow_none else ''}an integer >= 1")


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on `device`, or None where unknown: CUDA's free memory; on a CPU
    the smaller of the kernel's MemAvailable and what a cgroup limit (a container's) leaves."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    known = []
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as meminfo:
            match = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo.read(), re.MULTILINE)
        if match:
            known.append(int(match[1]) * 1024)
    for limit, usage in (("memory.max", "memory.current"),                                   # cgroup v2
                         ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):     # cgroup v1
        limit, usage = f"/sys/fs/cgroup/{limit}", f"/sys/fs/cgroup/{usage}"
        with contextlib.suppress(OSError, ValueError):
            with open(limit) as limit_file, open(usage) as usage_file:
                known.append(int(limit_file.read()) - int(usage_file.read()))   # "max": no limit, ValueError
            break
    return min(known) if known else None


def streaming_bytes(dims: dict[str, int]) -> int:
    """Peak bytes of the float64 d x d sums of StreamingClassStatistics for points of widths `dims`: each
    point's accumulated Gram matrix, plus two more of the widest at once (x^T x of a batch, then SS_w
    formed at finalize)."""
    squares = [dim * dim for dim in dims.values()]
    return 8 * (sum(squares) + 2 * max(squares, default=0))


def check_streaming_memory(dims: dict[str, int], device: torch.device) -> None:
    """ValueError, before anything of size d x d is allocated, when streaming_bytes(dims) exceeds
    available_memory(device) (unknown: no check)."""
    needed, available = streaming_bytes(dims), available_memory(device)
    if available is None or needed <= available:
        return
    widest = max(dims, key=dims.get)
    raise ValueError(f"modules: measuring {len(dims)} point(s) without pca_dim streams d x d float64 sums "
                     f"(widest {widest!r}, d = {dims[widest]:,}): {needed / 1e9:.1f} GB, more than the "
                     f"{available / 1e9:.1f} GB available on {device}; allowed: pca_dim=K (features held in "
                     "memory, PCA-reduced to K first) or fewer or narrower modules")


def resolve_modules(model: nn.Module, modules=None) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs to measure: the model's declared points when `modules` is None, every
    submodule of a type when it is a class (or tuple of classes), else the named submodules (a list or
    tuple of names, each once) in order. A bare string is refused (TypeError): it was read as a list of
    its characters ("13" measured modules "1" and "3")."""
    if isinstance(modules, str):
        raise TypeError(f"modules={modules!r}: a single string; allowed: None, a module type (nn.ReLU) or a "
                        f"list of submodule names ([{modules!r}])")
    if modules is None:
        if not hasattr(model, "measured_modules"):
            raise ValueError("this model declares no measured points: pass modules=[names] or a type")
        return model.measured_modules()
    if isinstance(modules, type) or (isinstance(modules, tuple) and all(isinstance(m, type) for m in modules)):
        found = [(name, module) for name, module in model.named_modules()
                 if name and isinstance(module, modules)]
        if not found:
            raise ValueError(f"the model has no submodule of type {modules}")
        return found
    if not isinstance(modules, (list, tuple)):
        raise TypeError(f"modules: of type {type(modules).__name__}; allowed: None, a module type (nn.ReLU) or a "
                        "list of submodule names")
    if not modules:
        raise ValueError("modules: an empty list; allowed: at least one submodule name")
    if (other := next((name for name in modules if not isinstance(name, str)), None)) is not None:
        raise TypeError(f"modules: {other!r} (of type {type(other).__name__}) is not a name; allowed: submodule names "
                        "as model.named_modules() gives them, or a module type")
    if (twice := next((name for name in modules if modules.count(name) > 1), None)) is not None:
        raise ValueError(f"modules: {twice!r} is listed more than once; allowed: each submodule once")
    by_name = dict(model.named_modules())
    missing = [name for name in modules if name not in by_name]
    if missing:
        raise ValueError(f"no submodule named {missing}; names look like {list(by_name)[1:6]}")
    return [(name, by_name[name]) for name in modules]


def _batches(data, labels, batch_size):
    """(inputs, labels) batches from tensors (data, labels) or from an iterable of pairs (DataLoader)."""
    if isinstance(data, torch.Tensor):
        for start in range(0, data.shape[0], batch_size):
            yield data[start:start + batch_size], labels[start:start + batch_size]
    else:
        yield from ((batch[0], batch[1]) for batch in data)


def measure_separation(model: nn.Module, data, labels: torch.Tensor | None = None, modules=None, *,
                       num_classes: int | None = None, measure: str = "within_variance",
                       batch_size: int = 500, device: torch.device | str | None = None,
                       pca_dim: int | None = None, segments: list[tuple[int, int]] | None = None) -> dict:
    """Separation profile of any nn.Module, in eval mode (restored after).

    data: an input tensor [N, ...] with `labels` [N], or an iterable of (inputs, labels) batches
    (a DataLoader); labels are integer class indices 0..K-1 (float labels are refused, not truncated).
    modules: None (the model's measured_points), a module type (e.g. nn.ReLU: every submodule of that
    type) or a list of submodule names (a bare string is refused). pca_dim: None or an integer >= 1:
    reduce features wider than this by PCA first, as the command line does for the models whose config
    sets model.pca_dim (then all features are held in memory); without it, memory per point is
    O(K d + d^2) whatever N: the float64 sums of variance_analysis.StreamingClassStatistics are updated
    batch by batch, and refused (ValueError, after the first batch's forward pass, before any d x d
    allocation) when they would not fit in the memory available. segments: [(first, last), ...] point
    ranges fitted separately (default: the model's fit_segments, if it declares them).

    Returns {"layers": [records as point_records], "fit": the line fit of ln(value) on the index}.

        import torchvision
        net = torchvision.models.resnet18(num_classes=10)        # random weights, no download
        profile = measure_separation(net, images, labels, modules=["layer1", "layer2", "layer3", "layer4"])
        profile["fit"]["pearson_r"], [r["D"] for r in profile["layers"]]
    """
    named = resolve_modules(model, modules)
    if measure not in MEASURES:
        raise ValueError(f"measure={measure!r}: allowed: {', '.join(MEASURES)}")
    check_pca_dim(pca_dim)
    check_count("batch_size", batch_size)
    check_count("num_classes", num_classes, allow_none=True)
    if isinstance(data, torch.Tensor):
        if labels is None:
            raise ValueError("labels are required when data is a tensor")
        check_class_indices(labels)
        if labels.shape[0] != data.shape[0]:
            raise ValueError(f"labels: {labels.shape[0]} for {data.shape[0]} samples of data; allowed: one "
                             "label per sample")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batches = _batches(data, labels, batch_size)
    if (first := next(batches, None)) is None or first[0].shape[0] == 0:
        raise ValueError("data: no samples; allowed: at least one sample per class measured")
    classes = num_classes or (int(labels.max()) + 1 if labels is not None and labels.numel() else None)
    if classes is None:
        raise ValueError("pass num_classes when data is an iterable of batches")
    if segments is None:
        segments = getattr(model, "fit_segments", None)
    seen_labels: list[torch.Tensor] = []
    dims: dict[str, int] = {}
    if pca_dim is None:
        statistics = {name: StreamingClassStatistics(classes) for name, _ in named}
        first_outputs: list[tuple[str, torch.Tensor]] = []   # held until the memory needed is known

        def sink(name, output):
            dims[name] = output.shape[1]
            if first_outputs is not None:
                first_outputs.append((name, output))
            else:
                statistics[name].update(output, seen_labels[-1])
    else:
        captured: dict[str, list[torch.Tensor]] = {name: [] for name, _ in named}

        def sink(name, output):
            dims[name] = output.shape[1]
            captured[name].append(output)

    with captured_outputs(model, named, sink) as forward:
        for number, (inputs, batch_labels) in enumerate(itertools.chain([first], batches)):
            check_class_indices(batch_labels, classes)
            if batch_labels.shape[0] != inputs.shape[0]:
                raise ValueError(f"labels: {batch_labels.shape[0]} for a batch of {inputs.shape[0]} samples; "
                                 "allowed: one label per sample")
            seen_labels.append(batch_labels.to(device))
            forward(inputs.to(device))
            if number == 0:
                if silent := [name for name, _ in named if name not in dims]:
                    raise ValueError(f"modules: {silent} gave no output in the forward pass; allowed: "
                                     "submodules the model runs")
                if pca_dim is None:
                    check_streaming_memory(dims, first_outputs[0][1].device)
                    for name, output in first_outputs:
                        statistics[name].update(output, seen_labels[-1])
                    first_outputs = None
    if pca_dim is None:
        records = point_records(((name, statistics[name].finalize()) for name, _ in named),
                                [dims[name] for name, _ in named], measure)
    else:
        features = {name: torch.cat(chunks) for name, chunks in captured.items()}
        records = separation_profile(features, torch.cat(seen_labels), measure, pca_dim)
    return {"layers": records, "fit": profile_fit(records, segments)}


def measure_profile(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *,
                    measure: str = "within_variance", bn_mode: str = "eval", bn_batch_size: int = 100,
                    eval_batch_size: int = 1000, pca_dim: int | None = None,
                    segments: list[tuple[int, int]] | None = None,
                    split: str = "train", progress: bool = False) -> tuple[list[dict], dict | None]:
    """The command line's measurement of one split: features of the model's measured points in the
    BatchNorm mode, PCA to pca_dim, the per-point records and their fit (with `segments`). Logs a
    warning when points are left out of the fit or no fit is possible. `progress`: a bar over the points."""
    features = measured_features(model, inputs, bn_mode, bn_batch_size, eval_batch_size)
    return profile_and_fit(features, labels, measure=measure, pca_dim=pca_dim, segments=segments, split=split,
                           progress=progress)


def profile_and_fit(features: dict[str, torch.Tensor], labels: torch.Tensor, *, measure: str = "within_variance",
                    pca_dim: int | None = None, segments: list[tuple[int, int]] | None = None,
                    split: str = "train", progress: bool = False) -> tuple[list[dict], dict | None]:
    """separation_profile and profile_fit of measured features, with measure_profile's warnings (and,
    with `progress`, a bar over the points)."""
    layers = separation_profile(features, labels, measure, pca_dim, progress, f"measure {split}")
    fit = profile_fit(layers, segments)
    if fit is None:
        log.warning("%s split: fewer than two points have a finite, positive %s: no fit", split, measure)
    elif fit["dropped"]:
        log.warning("%s split: the fit leaves out %d point(s) whose %s is not finite and positive",
                    split, fit["dropped"], measure)
    return layers, fit


class DynamicsRecorder:
    """Training dynamics: calls measure(split_label) -> (layers, fit) at epoch 0 (`start()`) and every
    `every` epochs and at `last_epoch` during training (call it after each epoch), keeping the values per
    point and the fit of each recorded epoch in `record`."""

    def __init__(self, measure, every: int, last_epoch: int):
        self.measure, self.every, self.last_epoch = measure, every, last_epoch
        self.record = {"epochs": [], "values": [], "fits": []}

    def start(self) -> None:
        self(0)

    def __call__(self, epoch: int) -> None:
        if epoch % self.every and epoch != self.last_epoch:
            return
        layers, fit = self.measure(f"epoch {epoch}")
        self.record["epochs"].append(epoch)
        self.record["values"].append([layer["value"] for layer in layers])
        self.record["fits"].append(fit)
