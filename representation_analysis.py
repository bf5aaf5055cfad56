"""Features of a model's measured points from one hooked forward pass per batch, the separation profile
(one record per point) and its fit, for the command line (measure_profile) and for any nn.Module
(measure_separation). Measuring never changes the model: BatchNorm's train_batches mode (the paper's
protocol) works on a copy. What cannot be measured truthfully is refused in one line (TypeError or
ValueError naming the argument and what is allowed): labels that are no integer class indices or of
another length than the inputs, a single class, a bare string as modules or a name the model lacks (with
near matches), a module that runs twice per forward pass or returns no tensor, non-finite features, a
pca_dim below 1, no samples, and an iterator that would have to be read twice.

The API needs torch alone (tqdm is imported only for the command line's progress bar):
    pip install .                 # the API;  pip install .[metrics]: also separation_metric (TorchMetrics)
"""
from __future__ import annotations

import collections.abc
import contextlib
import copy
import difflib
import itertools
import logging
import math
import numbers
import warnings

import torch
from torch import nn

from measure_memory import check_streaming_memory, fits_in_memory, streaming_bytes
from variance_analysis import (MEASURES, StreamingClassStatistics, TwoPassClassStatistics, check_class_indices,
                               class_statistics, fit_log_linear, fuzziness_from_statistics, layer_ratios,
                               pca_reduce)
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
    told apart), and so is one whose output is no tensor (a tuple or dict: PickOutput picks a part)."""
    seen: set[str] = set()

    def hook_for(name):
        def hook(_module, _inputs, output):
            if name in seen:
                raise ValueError(f"module {name!r} runs more than once per forward pass (a reused module): "
                                 "its outputs cannot be told apart; measure its parent")
            if not isinstance(output, torch.Tensor):
                raise TypeError(not_a_tensor_message(name, output))
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


class PickOutput(nn.Module):
    """output[key] of a module whose output is a tuple, list or dict: nn.Sequential(module, PickOutput(0))
    has a tensor output that can be measured (name the wrapper)."""

    def __init__(self, key):
        super().__init__()
        self.key = key

    def forward(self, output):
        return output[self.key]


def not_a_tensor_message(name: str, output) -> str:
    """What a hooked module that returns no tensor is told, and how to pick one of its parts."""
    if isinstance(output, dict):
        parts, key = f"keys {list(output)}", next(iter(output), "key")
    elif isinstance(output, (tuple, list)):
        parts, key = f"{len(output)} parts", 0
    else:
        parts, key = "no tensor", None
    pick = ("" if key is None else f" or wrap it to pick one part: nn.Sequential(module, "
            f"representation_analysis.PickOutput({key!r})), and name the wrapper")
    return (f"module {name!r} returns a {type(output).__name__} ({parts}), not a tensor; allowed: modules whose "
            f"output is one tensor: name the submodule that computes the part wanted{pick}")


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
    from tqdm.auto import tqdm  # the command line's dependency, not the API's

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
    if (missing := next((name for name in modules if name not in by_name), None)) is not None:
        near = difflib.get_close_matches(missing, [name for name in by_name if name], n=5, cutoff=0.5)
        raise ValueError(f"modules: the model has no submodule {missing!r} (near matches: {near or 'none'}); "
                         f"allowed: dotted names as model.named_modules() gives them, e.g. {list(by_name)[1:4]}")
    return [(name, by_name[name]) for name in modules]


def _batches(data, labels, batch_size):
    """(inputs, labels) batches from tensors (data, labels) or from an iterable of pairs (DataLoader)."""
    if isinstance(data, torch.Tensor):
        for start in range(0, data.shape[0], batch_size):
            yield data[start:start + batch_size], labels[start:start + batch_size]
    else:
        yield from ((batch[0], batch[1]) for batch in data)


def distributed() -> bool:
    """True in a process of an initialized torch.distributed group: then measure_separation sums over processes."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def sum_across_processes(tensors: list[torch.Tensor]) -> None:
    """all_reduce(SUM) of each tensor in place under torch.distributed (nothing in one process)."""
    if distributed():
        for tensor in tensors:
            torch.distributed.all_reduce(tensor)


def check_two_classes(present: list[int]) -> None:
    """ValueError unless samples of at least two classes were seen (`present`: the classes seen)."""
    if len(present) < 2:
        raise ValueError(f"labels: {'only class ' + str(present[0]) if present else 'no class'}; allowed: samples "
                         "of at least two classes (D compares class means)")


def forward_pass(model: nn.Module, named, batches, classes: int, device, consumer_for) -> tuple[dict, torch.Tensor]:
    """One forward pass over (inputs, labels) batches, each output of `named` [B, d] (finite, else ValueError
    naming the module) passed with its batch's labels to consume(name, output, labels). consumer_for(dims,
    output_device) gives `consume` once the first batch has run (its outputs wait until then). Returns
    ({name: d}, samples per class [K] (float64, summed across processes))."""
    dims, held, current = {}, [], {"consume": None, "labels": None}
    class_counts = torch.zeros(classes, dtype=torch.float64)

    def sink(name, output):
        if not bool(output.isfinite().all()):
            raise ValueError(f"module {name!r}: its output holds NaN or infinite values; allowed: finite features "
                             "(check the model's weights and the inputs)")
        dims[name] = output.shape[1]
        if current["consume"] is None:
            held.append((name, output))
        else:
            current["consume"](name, output, current["labels"])

    with captured_outputs(model, named, sink) as forward:
        for number, (inputs, batch_labels) in enumerate(batches):
            check_class_indices(batch_labels, classes)
            if batch_labels.shape[0] != inputs.shape[0]:
                raise ValueError(f"labels: {batch_labels.shape[0]} for a batch of {inputs.shape[0]} samples; "
                                 "allowed: one label per sample")
            class_counts += torch.bincount(batch_labels.long().cpu(), minlength=classes)
            current["labels"] = batch_labels.to(device)
            forward(inputs.to(device))
            if number == 0:
                if silent := [name for name, _ in named if name not in dims]:
                    raise ValueError(f"modules: {silent} gave no output in the forward pass; allowed: "
                                     "submodules the model runs")
                current["consume"] = consumer_for(dims, held[0][1].device)
                for name, output in held:
                    current["consume"](name, output, current["labels"])
                held.clear()
    sum_across_processes([class_counts])
    return dims, class_counts


def measure_separation(model: nn.Module, data, labels: torch.Tensor | None = None, modules=None, *,
                       num_classes: int | None = None, measure: str = "within_variance",
                       batch_size: int = 500, device: torch.device | str | None = None,
                       pca_dim: int | None = None, passes: int | None = None,
                       segments: list[tuple[int, int]] | None = None) -> dict:
    """Separation profile of any nn.Module, in eval mode (restored after).

    data: an input tensor [N, ...] with `labels` [N], or an iterable of (inputs, labels) batches
    (a DataLoader); labels are integer class indices 0..K-1 (float labels are refused, not truncated).
    modules: None (the model's measured_points), a module type (e.g. nn.ReLU: every submodule of that
    type) or a list of submodule names, dotted as model.named_modules() and torchvision's
    get_graph_node_names name submodules ("layer1.0.conv1"; a bare string is refused).

    How it measures (exact in every case; D, nc1, cdnv and the traces from float64 sums):
    - pca_dim=k (an integer >= 1): features wider than k are reduced by PCA first, as the command line
      does for the models whose config sets model.pca_dim (the original's protocol); all features are
      held in memory.
    - passes=1: one pass, memory O(K d + d^2) per point whatever N (StreamingClassStatistics); refused
      (ValueError, after the first batch's forward pass, before any d x d allocation) when the sums would
      not fit in the memory available.
    - passes=2: two passes over the data (TwoPassClassStatistics): class means, then the within-class
      deviations projected on the class-mean directions; memory O(K d) per point, no d x d matrix, any
      width (a ResNet-50's conv1 at 224 x 224: d = 802,816). `data` must give the same samples twice
      (a tensor, a list of batches, a DataLoader without random augmentation; checked); an iterator,
      read once, is refused.
    - passes=None (default): one pass when its d x d sums fit in the memory available, else two.
    Under torch.distributed (initialized by the caller, e.g. torchrun) every process measures its shard
    of the data in two passes and the float64 sums are all-reduced: each process returns the profile of
    all the data. segments: [(first, last), ...] point ranges fitted separately (default: the model's
    fit_segments, if it declares them).

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
    check_passes(passes, pca_dim)
    if isinstance(data, torch.Tensor):
        if labels is None:
            raise ValueError("labels are required when data is a tensor")
        check_class_indices(labels)
        if labels.shape[0] != data.shape[0]:
            raise ValueError(f"labels: {labels.shape[0]} for {data.shape[0]} samples of data; allowed: one "
                             "label per sample")
        if labels.numel() and not distributed():   # a process's shard may hold one class
            check_two_classes(torch.unique(labels).tolist())
    if device is None:
        device = next(model.parameters(), torch.empty(0)).device
    device = torch.device(device)
    batches = _batches(data, labels, batch_size)
    if (first := next(batches, None)) is None or first[0].shape[0] == 0:
        raise ValueError("data: no samples; allowed: at least one sample per class measured")
    classes = num_classes or (int(labels.max()) + 1 if labels is not None and labels.numel() else None)
    if classes is None:
        raise ValueError("pass num_classes when data is an iterable of batches")
    if distributed() and num_classes is None:  # every process's shard: the same K
        largest = torch.tensor([classes])
        torch.distributed.all_reduce(largest, op=torch.distributed.ReduceOp.MAX)
        classes = int(largest)
    if segments is None:
        segments = getattr(model, "fit_segments", None)
    path = {}

    def consumer_for(dims, output_device):
        if pca_dim is not None:
            path["captured"] = {name: [] for name, _ in named}
            path["labels"] = []

            def hold(name, output, batch_labels):
                path["captured"][name].append(output)
                if name == named[0][0]:
                    path["labels"].append(batch_labels)
            return hold
        if passes == 1 or (passes is None and not distributed() and fits_in_memory(dims, output_device)):
            check_streaming_memory(dims, output_device)
            path["streaming"] = {name: StreamingClassStatistics(classes) for name, _ in named}
            return lambda name, output, batch_labels: path["streaming"][name].update(output, batch_labels)
        if isinstance(data, collections.abc.Iterator):
            raise ValueError(one_pass_only_message(dims, output_device))
        path["two_pass"] = {name: TwoPassClassStatistics(classes) for name, _ in named}
        return lambda name, output, batch_labels: path["two_pass"][name].add_to_means(output, batch_labels)

    dims, class_counts = forward_pass(model, named, itertools.chain([first], batches), classes, device,
                                      consumer_for)
    check_two_classes(torch.nonzero(class_counts).flatten().tolist())
    widths = [dims[name] for name, _ in named]
    if "captured" in path:
        features = {name: torch.cat(chunks) for name, chunks in path["captured"].items()}
        records = separation_profile(features, torch.cat(path["labels"]), measure, pca_dim)
    elif "streaming" in path:
        records = point_records(((name, path["streaming"][name].finalize()) for name, _ in named), widths, measure)
    else:
        records = point_records(two_pass_statistics(model, named, path["two_pass"], data, labels, batch_size,
                                                    classes, device), widths, measure)
    return {"layers": records, "fit": profile_fit(records, segments)}


def check_passes(passes, pca_dim) -> None:
    """TypeError or ValueError unless passes is None, 1 or 2, and fits pca_dim and torch.distributed."""
    if passes is None:
        return
    if not is_whole_number(passes):
        raise TypeError(f"passes={passes!r}: of type {type(passes).__name__}; allowed: None (chosen by memory), 1 or 2")
    if passes not in (1, 2):
        raise ValueError(f"passes={passes}: allowed: None (chosen by memory), 1 or 2")
    if pca_dim is not None:
        raise ValueError(f"passes={passes} with pca_dim={pca_dim}: PCA holds the features and takes one pass; "
                         "allowed: passes=None with pca_dim")
    if passes == 1 and distributed():
        raise ValueError("passes=1 under torch.distributed: the one-pass sums are not summed across processes; "
                         "allowed: passes=None or 2")


def one_pass_only_message(dims: dict[str, int], device: torch.device) -> str:
    """Why an iterator (read once) cannot be measured without pca_dim here, and what to pass instead."""
    widest = max(dims, key=dims.get)
    why = ("under torch.distributed the measurement takes two passes" if distributed() else
           f"its d x d float64 sums (widest {widest!r}, d = {dims[widest]:,}) need {streaming_bytes(dims) / 1e9:.1f} "
           f"GB, more than the memory available on {device}, so it takes two passes")
    return (f"data: an iterator, which can be read once, and {why}; allowed: data that can be iterated twice (a "
            "tensor with labels, a list of batches, a DataLoader), or pca_dim")


def two_pass_statistics(model, named, statistics: dict[str, TwoPassClassStatistics], data, labels, batch_size: int,
                        classes: int, device):
    """(name, ClassStatistics) per point from pass 1's sums in `statistics`: the second pass over the data, with
    the sums of both passes (and the basis of rank 0) shared across processes under torch.distributed."""
    for name, _ in named:
        sum_across_processes(statistics[name].first_pass_sums())
        statistics[name].start_second_pass()
        if distributed():  # the same basis in every process, whatever the SVD does on each
            torch.distributed.broadcast(statistics[name].basis, src=0)

    def consumer_for(_dims, _device):
        return lambda name, output, batch_labels: statistics[name].add_to_scatter(output, batch_labels)

    forward_pass(model, named, _batches(data, labels, batch_size), classes, device, consumer_for)
    for name, _ in named:
        sum_across_processes(statistics[name].second_pass_sums())
        yield name, statistics[name].finalize()


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


def profile_figure(profile: dict, title: str = "separation profile", path=None, label: str = "data",
                   measure: str = "within_variance"):
    """The project's profile figure (plotting.figure_profile: ln value per point, the fitted line(s), the
    legend's Pearson r and rho) of a measure_separation result; with `path`, written there (and closed).
    Needs matplotlib (pip install .[plot]). Returns the figure, or None once written."""
    from plotting import figure_profile, save_profile_figure  # matplotlib: only for figures
    from variance_analysis import MEASURE_LABELS

    profiles = [(label, profile["layers"], profile["fit"])]
    if path is None:
        return figure_profile(profiles, title, MEASURE_LABELS[measure])
    save_profile_figure(profiles, title, [path], MEASURE_LABELS[measure])
    return None
