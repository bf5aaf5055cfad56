"""A TorchMetrics metric of the separation measures (He & Su 2023's D, and NC1, CDNV, between_variance) of
features of moderate width, in one pass: update(features, labels) per batch, compute() at the end,
reset() to start again; its states are float64 sums (counts, class sums, squared norms, the d x d Gram
matrix), summed across processes by TorchMetrics (dist_reduce_fx="sum"). Memory O(K d + d^2): for wide
layers use representation_analysis.measure_separation, which takes two passes in O(K d).

    pip install .[metrics]
    metric = SeparationFuzziness(num_classes=10, num_features=512)
    for images, labels in loader:
        metric.update(backbone(images), labels)
    metric.compute()   # D, a float64 tensor

The sums are taken around `shift` (default 0), the same in every process: for features far from the
origin pass a typical feature (a first batch's mean) so that SS_w = Gram - means does not cancel.
"""
from __future__ import annotations

import torch

try:
    from torchmetrics import Metric
except ImportError as error:  # the optional extra
    raise ImportError("separation_metric needs torchmetrics: pip install 'equi-separation[metrics]' "
                      "(or pip install torchmetrics)") from error

from variance_analysis import MEASURES, add_to_sums, checked_batch, statistics_from_sums


class SeparationFuzziness(Metric):
    """measure (default "within_variance": D = trace(SS_w pinv(SS_b))) of features [B, ...] (flattened to
    num_features) with class indices [B] in 0..num_classes-1, accumulated over update() calls."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, num_classes: int, num_features: int, measure: str = "within_variance",
                 shift: torch.Tensor | None = None, **kwargs):
        super().__init__(**kwargs)
        if measure not in MEASURES:
            raise ValueError(f"measure={measure!r}: allowed: {', '.join(MEASURES)}")
        self.num_classes, self.num_features, self.measure = num_classes, num_features, measure
        shift = torch.zeros(num_features) if shift is None else torch.as_tensor(shift).flatten()
        if shift.numel() != num_features:
            raise ValueError(f"shift: {shift.numel()} values; allowed: num_features={num_features} values")
        self.register_buffer("shift", shift.to(torch.float64))
        float64 = {"dtype": torch.float64}
        self.add_state("counts", torch.zeros(num_classes, **float64), dist_reduce_fx="sum")
        self.add_state("sums", torch.zeros(num_classes, num_features, **float64), dist_reduce_fx="sum")
        self.add_state("sq_norms", torch.zeros(num_classes, **float64), dist_reduce_fx="sum")
        self.add_state("gram", torch.zeros(num_features, num_features, **float64), dist_reduce_fx="sum")

    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        x, labels = checked_batch(features, labels, self.num_classes)
        if x.shape[1] != self.num_features:
            raise ValueError(f"features: {x.shape[1]} values per sample; allowed: num_features={self.num_features}")
        if not bool(x.isfinite().all()):
            raise ValueError("features: NaN or infinite values; allowed: finite features")
        add_to_sums(self.counts, self.sums, self.sq_norms, self.gram, x - self.shift, labels)

    def compute(self) -> torch.Tensor:
        if int((self.counts > 0).sum()) < 2:
            raise ValueError("labels: fewer than two classes seen; allowed: samples of at least two classes")
        stats = statistics_from_sums(self.counts, self.sums, self.sq_norms, self.gram, self.shift)
        return torch.tensor(MEASURES[self.measure](stats), dtype=torch.float64)
