"""Variants of the paper: frozen two-stage training, imbalanced data and its weighted D, two-part fits,
BatchNorm measuring modes."""
import numpy as np
import pytest
import torch

from data import class_counts_of, imbalanced_class_counts, prepare_dataset
from representation_analysis import measured_features, profile_fit
from train_models import build_model, train_frozen
from variance_analysis import separation_fuzziness


def parameters_of(modules):
    return [p.detach().clone() for module in modules for p in module.parameters()]


def identical(first, second):
    return all(torch.equal(a, b) for a, b in zip(first, second))


def test_frozen_training_keeps_frozen_parameters_bit_identical(compose):
    cfg = compose("data=cfm", "layer_num=18", "hidden_size=12", "training=frozen", "epochs=2",
                  "training.stage1_epochs=2", "data.sample_size_per_class=10")
    torch.manual_seed(0)
    model = build_model(cfg, (1, 10, 10), 10)
    stages = model.stages
    assert len(stages) == 20  # input block + 18 hidden blocks + classifier
    first, second = stages[:10], stages[10:]
    initial_first, initial_second = parameters_of(first), parameters_of(second)
    snapshots = {}
    x, y = torch.randn(100, 1, 10, 10), torch.arange(100) % 10
    outcome = train_frozen(model, x, y, cfg, progress=False,
                           on_stage_end=lambda n: snapshots.update({n: (parameters_of(first),
                                                                        parameters_of(second))}))
    assert outcome.epochs_completed == 4 and not outcome.diverged
    after1_first, after1_second = snapshots[1]
    assert identical(after1_second, initial_second)  # stage 1: the rest stays at initialization
    assert not identical(after1_first, initial_first)
    after2_first, after2_second = snapshots[2]
    assert identical(after2_first, after1_first)  # stage 2: the first ten are frozen
    assert not identical(after2_second, after1_second)
    assert all(p.requires_grad for p in model.parameters())  # restored afterwards


def test_imbalanced_subset_has_the_stated_class_counts(compose, tmp_path):
    from tests.test_data import require_fashion_mnist

    require_fashion_mnist()
    cfg = compose("data=imbalanced_cfm")
    assert class_counts_of(cfg.data) == [500] * 5 + [100] * 5
    dataset = prepare_dataset(cfg.data, tmp_path, 666, download=False)
    assert torch.bincount(dataset.train_y).tolist() == [500] * 5 + [100] * 5
    assert imbalanced_class_counts(4, [1, 3], 7, 2) == [2, 7, 2, 7]
    with pytest.raises(ValueError, match="majority_classes=.*allowed: 0..3"):
        imbalanced_class_counts(4, [5], 7, 2)


def balanced_fuzziness(features: np.ndarray, labels: np.ndarray) -> float:
    """The balanced-data formula with unweighted class averages: Sigma_B = mean_k (m_k - m)(m_k - m)^T
    and Sigma_W = mean_k Cov_k, written independently of the n_k-weighted implementation."""
    classes = np.unique(labels)
    means = np.stack([features[labels == k].mean(0) for k in classes])
    centered = means - means.mean(0)
    sigma_b = centered.T @ centered / len(classes)
    sigma_w = np.mean([np.cov(features[labels == k].T, bias=True) for k in classes], axis=0)
    return float(np.trace(sigma_w @ np.linalg.pinv(sigma_b)))


def test_weighted_fuzziness_equals_balanced_formula_on_balanced_data():
    generator = np.random.default_rng(3)
    labels = np.repeat(np.arange(6), 25)
    features = generator.normal(size=(6, 9))[labels] * 2 + generator.normal(size=(150, 9))
    got = separation_fuzziness(torch.from_numpy(features), torch.from_numpy(labels))
    assert got == pytest.approx(balanced_fuzziness(features, labels), rel=1e-9)


def test_two_segment_fit_shares_the_boundary_point():
    values = [100.0 * 0.5 ** l for l in range(4)] + [12.5 * 0.9 ** l for l in range(1, 4)]
    layers = [{"index": i, "value": v} for i, v in enumerate(values)]
    fit = profile_fit(layers, segments=[(0, 3), (3, 6)])
    first, second = fit["segments"]
    assert (first["first_index"], first["last_index"], second["first_index"]) == (0, 3, 3)
    assert first["rho"] == pytest.approx(0.5, rel=1e-12) and second["rho"] == pytest.approx(0.9, rel=1e-12)
    assert first["pearson_r"] == pytest.approx(-1.0) and second["pearson_r"] == pytest.approx(-1.0)
    assert fit["pearson_r"] > -1.0  # the single line does not fit both parts exactly


def test_train_batches_mode_leaves_the_model_untouched(compose):
    cfg = compose("layer_num=2", "hidden_size=8")
    torch.manual_seed(0)
    model = build_model(cfg, (1, 10, 10), 10)
    model.train()
    for _ in range(3):
        model(torch.randn(50, 1, 10, 10))
    buffers = [b.clone() for b in model.buffers()]
    x = torch.randn(300, 1, 10, 10)
    eval_features = measured_features(model, x, "eval")
    batch_features = measured_features(model, x, "train_batches", bn_batch_size=100)
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))
    assert model.training
    assert torch.equal(eval_features["flatten"], batch_features["flatten"])
    assert not torch.allclose(eval_features["blocks.1"], batch_features["blocks.1"])
    # train-mode BatchNorm normalizes each batch of 100 by its own statistics: before the ReLU every
    # batch has mean beta = 0 and variance gamma^2 = 1 per unit
    block = model.blocks[0]
    with torch.no_grad():
        pre_relu = torch.cat([torch.nn.functional.batch_norm(block.linear(x[i:i + 100].flatten(1)), None,
                                                             None, training=True) for i in (0, 100, 200)])
    assert torch.allclose(pre_relu[:100].mean(0), torch.zeros(8), atol=1e-5)
    assert torch.allclose(batch_features["blocks.0"], pre_relu.clamp_min(0), atol=1e-6)
