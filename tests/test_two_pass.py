"""Two passes (TwoPassClassStatistics, measure_separation(passes=2)) give the numbers of the in-memory and the
one-pass streaming statistics to 1e-9 relative without any d x d matrix: several widths up to 4096,
imbalanced classes, class means of rank below K - 1, features far from the origin; an iterator read once
and data that changes between the passes are refused."""
import pytest
import torch
from torch import nn

import measure_memory
from representation_analysis import measure_separation
from variance_analysis import (MEASURES, StreamingClassStatistics, TwoPassClassStatistics, class_statistics)

SIZES = (30, 55, 20, 45, 90)  # imbalanced: n_k from 20 to 90


def labelled_features(dim: int, seed: int, offset: float = 0.0, rank_two_means: bool = False,
                      sizes=SIZES) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [N, dim] (float64) of len(sizes) classes, shuffled. With rank_two_means, the five class means are
    distinct points of a plane (each class's noise is centred): SS_b of rank 2, below K - 1 = 4."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(sizes)])
    noise = torch.randn(labels.numel(), dim, generator=generator, dtype=torch.float64)
    if not rank_two_means:
        means = 1.5 * torch.randn(len(sizes), dim, generator=generator, dtype=torch.float64)
    else:
        for k in range(len(sizes)):
            noise[labels == k] -= noise[labels == k].mean(dim=0)
        weights = torch.tensor([[0, 1], [1, 0], [1, 1], [2, 1], [1, 3]], dtype=torch.float64)  # distinct, in a plane
        means = weights @ torch.randn(2, dim, generator=generator, dtype=torch.float64)
    order = torch.randperm(labels.numel(), generator=generator)
    return (noise + means[labels] + offset)[order], labels[order]


def two_pass(features, labels, num_classes, first_batch=37, second_batch=23):
    """Pass 1 and pass 2 in different batchings (and pass 2 in reverse order)."""
    stats = TwoPassClassStatistics(num_classes)
    for start in range(0, labels.numel(), first_batch):
        stats.add_to_means(features[start:start + first_batch], labels[start:start + first_batch])
    stats.start_second_pass()
    for start in reversed(range(0, labels.numel(), second_batch)):
        stats.add_to_scatter(features[start:start + second_batch], labels[start:start + second_batch])
    return stats.finalize()


def streamed(features, labels, num_classes, batch=50):
    stats = StreamingClassStatistics(num_classes)
    for start in range(0, labels.numel(), batch):
        stats.update(features[start:start + batch], labels[start:start + batch])
    return stats.finalize()


def values(stats) -> dict[str, float]:
    return {**{name: measure(stats) for name, measure in MEASURES.items()},
            "within_trace": stats.within_trace(), "between_trace": stats.between_trace()}


@pytest.mark.parametrize("dim, offset", [(3, 0.0), (64, 1e3), (1024, 1e3), (4096, 1e2)])
def test_two_passes_equal_in_memory_and_streaming_statistics(dim, offset):
    features, labels = labelled_features(dim, seed=dim, offset=offset)
    exact = values(two_pass(features, labels, 5))
    assert exact == pytest.approx(values(class_statistics(features, labels)), rel=1e-9)
    assert exact == pytest.approx(values(streamed(features, labels, 5)), rel=1e-9)
    assert 0 < exact["within_variance"] < float("inf")


@pytest.mark.parametrize("dim", [4, 300])
def test_class_means_of_rank_below_k_minus_1(dim):
    features, labels = labelled_features(dim, seed=7, rank_two_means=True)
    stats = two_pass(features, labels, 5)
    assert torch.linalg.matrix_rank(stats.between_factor()) == 2   # K - 1 = 4
    exact = values(stats)
    assert exact == pytest.approx(values(class_statistics(features, labels)), rel=1e-9)
    assert exact == pytest.approx(values(streamed(features, labels, 5)), rel=1e-9)


def test_a_class_absent_from_the_data_is_left_out_as_in_one_pass():
    features, labels = labelled_features(32, seed=3)
    kept = labels != 2
    exact = values(two_pass(features[kept], labels[kept], 6))   # classes 2 and 5 never occur
    assert exact == pytest.approx(values(class_statistics(features[kept], labels[kept])), rel=1e-9)


@pytest.fixture(scope="module")
def network_problem():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 5))
    features, labels = labelled_features(12, seed=11, offset=0.0)
    return net, features.float(), labels


def profile_values(profile) -> list[list[float]]:
    return [[record[key] for key in ("D", "value", "within_trace", "between_trace")] for record in profile["layers"]]


def test_measure_separation_in_two_passes_equals_one_pass_and_in_memory(network_problem):
    net, inputs, labels = network_problem
    for measure in ("within_variance", "nc1", "cdnv"):
        one = measure_separation(net, inputs, labels, modules=["1", "3"], measure=measure, passes=1, batch_size=64)
        two = measure_separation(net, inputs, labels, modules=["1", "3"], measure=measure, passes=2, batch_size=64)
        flat = [value for record in profile_values(two) for value in record]
        assert flat == pytest.approx([value for record in profile_values(one) for value in record], rel=1e-9)
        assert two["fit"]["slope"] == pytest.approx(one["fit"]["slope"], rel=1e-8)
    with torch.no_grad():   # the in-memory statistics of the hooked output, computed directly
        direct = MEASURES["within_variance"](class_statistics(net[:4](inputs), labels))
    assert two["layers"][1]["D"] == pytest.approx(direct, rel=1e-9)
    # a shuffling DataLoader: pass 2 sees the samples in another order and batching
    dataset = torch.utils.data.TensorDataset(inputs, labels)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    shuffled = measure_separation(net, loader, modules=["1", "3"], num_classes=5, measure="cdnv", passes=2)
    assert [r["value"] for r in shuffled["layers"]] == pytest.approx([r["value"] for r in two["layers"]], rel=1e-6)


def test_the_default_takes_two_passes_when_the_one_pass_sums_do_not_fit(monkeypatch, network_problem):
    net, inputs, labels = network_problem
    two = measure_separation(net, inputs, labels, modules=["1", "3"], passes=2)
    monkeypatch.setattr(measure_memory, "available_memory", lambda device: 8 * 64 * 64)
    chosen = measure_separation(net, inputs, labels, modules=["1", "3"])
    assert chosen == two
    with pytest.raises(ValueError, match=r"^modules: measuring 2 point\(s\) without pca_dim .* allowed: passes=None or 2"):
        measure_separation(net, inputs, labels, modules=["1", "3"], passes=1)


def test_an_iterator_read_once_is_refused_with_what_to_pass(monkeypatch, network_problem):
    net, inputs, labels = network_problem
    batches = lambda: ((inputs[i:i + 40], labels[i:i + 40]) for i in range(0, labels.numel(), 40))  # noqa: E731
    one_pass = measure_separation(net, batches(), modules=["1", "3"], num_classes=5)  # fits: one pass
    assert one_pass["layers"][0]["D"] == pytest.approx(
        measure_separation(net, list(batches()), modules=["1", "3"], num_classes=5, passes=2)["layers"][0]["D"],
        rel=1e-9)
    with pytest.raises(ValueError) as raised:
        measure_separation(net, batches(), modules=["1", "3"], num_classes=5, passes=2)
    assert str(raised.value).startswith("data: an iterator, which can be read once") and \
        "allowed: data that can be iterated twice (a tensor with labels, a list of batches, a DataLoader)" in str(raised.value)
    monkeypatch.setattr(measure_memory, "available_memory", lambda device: 1000)
    with pytest.raises(ValueError, match=r"^data: an iterator, which can be read once, and its d x d float64 sums "
                                         r"\(widest '1', d = 64\) need 0.0 GB"):
        measure_separation(net, iter(list(batches())), modules=["1", "3"], num_classes=5)


class Augmented:
    """Batches whose features change at every iteration (random augmentation), or lose samples."""

    def __init__(self, inputs, labels, drop_second: bool = False):
        self.inputs, self.labels, self.drop_second, self.epoch = inputs, labels, drop_second, 0

    def __iter__(self):
        self.epoch += 1
        count = self.labels.numel() - (40 if self.drop_second and self.epoch == 2 else 0)
        noise = torch.randn(self.inputs.shape, generator=torch.Generator().manual_seed(self.epoch))
        for start in range(0, count, 40):
            stop = min(start + 40, count)
            yield self.inputs[start:stop] + (0 if self.drop_second else noise[start:stop]), self.labels[start:stop]


def test_data_that_changes_between_the_passes_is_refused(network_problem):
    net, inputs, labels = network_problem
    with pytest.raises(ValueError, match=r"^data: the second pass moved the class means by up to .* \(random augmentation"):
        measure_separation(net, Augmented(inputs, labels), modules=["1"], num_classes=5, passes=2)
    with pytest.raises(ValueError, match=r"^data: the second pass gave 200 samples with class counts \[.*\], the first 240"):
        measure_separation(net, Augmented(inputs, labels, drop_second=True), modules=["1"], num_classes=5, passes=2)


def test_no_d_by_d_matrix_is_formed_at_a_width_of_200_000():
    """Width 200,000 (its d x d sums: 320 GB) in a few MB per point: the counts of every float64 element held."""
    features, labels = labelled_features(8, seed=5, sizes=(10, 14, 6))
    wide = torch.randn(8, 200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    stats = two_pass(features @ wide, labels, 3, first_batch=10, second_batch=10)
    held = sum(t.numel() for t in (stats.means, stats.within_basis, stats.within_projected, stats.class_sq_dev))
    assert held == 3 * 200_000 + 200_000 * 3 + 3 * 3 + 3
    # features of rank 8: the in-memory factor [30, 200,000] gives the same numbers
    assert values(stats) == pytest.approx(values(class_statistics(features @ wide, labels)), rel=1e-9)


def test_the_passes_argument_is_checked(network_problem):
    net, inputs, labels = network_problem
    for passes, error, start in ((3, ValueError, "passes=3: allowed: None"), (2.0, TypeError, "passes=2.0: of type float"),
                                 (True, TypeError, "passes=True: of type bool")):
        with pytest.raises(error, match=f"^{start}"):
            measure_separation(net, inputs, labels, modules=["1"], passes=passes)
    with pytest.raises(ValueError, match=r"^passes=2 with pca_dim=4: PCA holds the features"):
        measure_separation(net, inputs, labels, modules=["1"], passes=2, pca_dim=4)
