"""Streaming class statistics, NC1 and CDNV, and measure_separation on arbitrary models."""
import math

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from representation_analysis import measure_separation
from tests.test_variance_analysis import random_problem
from variance_analysis import (StreamingClassStatistics, class_statistics, cdnv_from_statistics,
                               fuzziness_from_statistics, nc1_from_statistics)


@pytest.mark.parametrize("batch_sizes", [[240], [1, 239], [50, 50, 50, 90], [7] * 34 + [2]])
def test_streaming_statistics_match_in_memory_to_1e10(batch_sizes):
    features, labels = random_problem(11, n_per_class=(30, 50, 20, 40, 100))
    x = torch.from_numpy(features) + 50.0  # far from the origin: the shift must prevent cancellation
    y = torch.from_numpy(labels)
    order = torch.randperm(240, generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    streaming = StreamingClassStatistics(num_classes=5)
    start = 0
    for size in batch_sizes:
        streaming.update(x[start:start + size], y[start:start + size])
        start += size
    stats = streaming.finalize()
    reference = class_statistics(x, y)
    for measure in (fuzziness_from_statistics, nc1_from_statistics, cdnv_from_statistics):
        assert measure(stats) == pytest.approx(measure(reference), rel=1e-10)
    assert stats.within_trace() == pytest.approx(reference.within_trace(), rel=1e-10)


def test_nc1_is_fuzziness_over_k_on_balanced_data():
    features, labels = random_problem(12, n_per_class=(40,) * 6)
    stats = class_statistics(torch.from_numpy(features), torch.from_numpy(labels))
    assert nc1_from_statistics(stats) == pytest.approx(fuzziness_from_statistics(stats) / 6, rel=1e-10)


def test_cdnv_matches_direct_formula():
    features, labels = random_problem(13)
    expected, pairs = 0.0, 0
    for i in range(5):
        for j in range(5):
            if i == j:
                continue
            xi, xj = features[labels == i], features[labels == j]
            var_i = np.mean(np.sum((xi - xi.mean(0)) ** 2, axis=1))
            var_j = np.mean(np.sum((xj - xj.mean(0)) ** 2, axis=1))
            expected += (var_i + var_j) / (2 * np.sum((xi.mean(0) - xj.mean(0)) ** 2))
            pairs += 1
    stats = class_statistics(torch.from_numpy(features), torch.from_numpy(labels))
    assert cdnv_from_statistics(stats) == pytest.approx(expected / pairs, rel=1e-10)


def test_api_measures_named_modules_of_a_torchvision_resnet18():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    images, labels = torch.randn(120, 3, 16, 16), torch.arange(120) % 10   # 16x16: features of <= 1024
    profile = measure_separation(net, images, labels, modules=["layer1", "layer2", "layer3", "layer4"],
                                 batch_size=40)
    assert [p["name"] for p in profile["layers"]] == ["layer1", "layer2", "layer3", "layer4"]
    assert [p["dim"] for p in profile["layers"]] == [64 * 4 * 4, 128 * 2 * 2, 256 * 1 * 1, 512]
    # the same numbers as features computed directly and measured in memory
    captured = {}
    hooks = [getattr(net, name).register_forward_hook(
        lambda _m, _i, out, name=name: captured.update({name: out.flatten(1)}))  # returns None
        for name in ("layer4",)]
    net.eval()
    with torch.no_grad():
        net(images)
    for hook in hooks:
        hook.remove()
    direct = fuzziness_from_statistics(class_statistics(captured["layer4"], labels))
    assert profile["layers"][3]["D"] == pytest.approx(direct, rel=1e-8)
    with pytest.raises(ValueError, match="runs more than once"):
        measure_separation(net, images, labels, modules=nn.ReLU, batch_size=60)


def test_api_on_a_sequential_by_type_and_with_a_dataloader():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(90, 6), torch.arange(90) % 3
    by_type = measure_separation(net, x, y, modules=nn.ReLU)
    assert [p["name"] for p in by_type["layers"]] == ["1", "3"]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    streamed = measure_separation(net, loader, modules=["1", "3"], num_classes=3)
    assert [p["D"] for p in streamed["layers"]] == pytest.approx([p["D"] for p in by_type["layers"]],
                                                                 rel=1e-10)
    assert math.isfinite(streamed["fit"]["slope"])
    nc1 = measure_separation(net, x, y, modules=nn.ReLU, measure="nc1")
    assert [p["value"] for p in nc1["layers"]] == pytest.approx([p["D"] / 3 for p in nc1["layers"]])


def test_reanalysis_reproduces_the_run_and_writes_beside_it(tmp_path):
    import json
    import subprocess
    import sys

    from tests.test_end_to_end import REPO_ROOT, results_of, run_cli

    path, original = results_of(run_cli(tmp_path, "layer_num=3", "hidden_size=20", "epochs=3"))
    before = {p.name: p.stat().st_mtime_ns for p in path.parent.iterdir() if p.is_file()}

    def reanalyze(*overrides):
        completed = subprocess.run([sys.executable, str(REPO_ROOT / "reanalyze.py"), str(path.parent),
                                    *overrides], capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-2000:]
        out = Path(completed.stdout.strip().splitlines()[-1].removeprefix("results: "))
        return out, json.loads(out.read_text())

    from pathlib import Path
    same_path, same = reanalyze()
    assert [p["D"] for p in same["layers"]] == [p["D"] for p in original["layers"]]  # exactly
    assert same_path.parent.parent == path.parent / "reanalysis"
    _, test_split = reanalyze("split=test")
    assert [p["D"] for p in test_split["layers"]] == [p["D"] for p in original["test_layers"]]
    _, nc1 = reanalyze("measure=nc1")
    assert [p["value"] for p in nc1["layers"]] == pytest.approx([p["D"] / 10 for p in original["layers"]])
    after = {p.name: p.stat().st_mtime_ns for p in path.parent.iterdir() if p.is_file()}
    assert after == before  # the original run's files are untouched


@pytest.mark.parametrize("model_overrides", [
    ("model=GResNet", "model.params.block_option=bottleneck", "model.params.feature_option=layer"),
    ("model=ResNetMixV2", "model.params.feature_option=layer"),
])
def test_api_and_command_line_measure_a_trained_residual_network_identically(compose, model_overrides, tmp_path):
    """measure_separation with the run's pca_dim gives the command line's profiles and fits (two segments
    for ResNetMixV2, taken from the model), value for value, for the training split and the test
    subset; the accuracies are train_models.accuracy's; without pca_dim the 800-wide points differ (1,000
    samples span more than the 100 kept dimensions)."""
    from experiment import measure_step, measured_test_subset, set_up, train_step
    from train_models import accuracy

    cfg = compose("data=cfm", *model_overrides, "epochs=1",
                  "analysis.test_subset_size=100", "analysis.bn_mode=eval", "progress=false", "device=cpu",
                  f"figures_dir={tmp_path}")
    run = set_up(cfg)
    train_step(cfg, run)
    command_line = measure_step(cfg, run)
    api = measure_separation(run.model, run.dataset.train_x, run.dataset.train_y,
                             pca_dim=cfg.analysis.pca_dim, batch_size=cfg.analysis.eval_batch_size)
    wide = [record["index"] for record in command_line.layers if record["dim"] > 100]
    assert cfg.analysis.pca_dim == 100 and len(wide) >= 5
    assert api["layers"] == command_line.layers and api["fit"] == command_line.fit
    assert len(api["fit"].get("segments", [])) == (2 if "ResNetMixV2" in model_overrides[0] else 0)
    # the test subset's features come out of the test-accuracy pass (batches of 1,000 test images)
    subset = measured_test_subset(cfg, run.dataset)
    api_test = measure_separation(run.model, run.dataset.test_x[subset], run.dataset.test_y[subset],
                                  pca_dim=cfg.analysis.pca_dim, batch_size=100)
    assert api_test["layers"] == command_line.test_layers and api_test["fit"] == command_line.test_fit
    assert command_line.test_accuracy == accuracy(run.model, run.dataset.test_x, run.dataset.test_y, 1000)
    assert command_line.train_accuracy == accuracy(run.model, run.dataset.train_x, run.dataset.train_y, 1000)
    without_pca = measure_separation(run.model, run.dataset.train_x, run.dataset.train_y)
    assert all(without_pca["layers"][i]["D"] != pytest.approx(command_line.layers[i]["D"], rel=1e-3)
               for i in wide if i > 0)  # the input point repeats 100 pixels 8 times: PCA keeps all of it
