"""Architectures of the equi-separation experiments, each declaring its measured points.

A model lists in `measured_points` the names of its submodules whose outputs are measured, in depth
order; representation_analysis.py collects all of them in one forward pass with forward hooks. The
classifier's logits are never a measured point. Builders that turn configs into models live in
train_models.py; this file holds architectures only.

MLP family (w = hidden_size, L = layer_num; a hidden block is Linear -> BatchNorm1d -> ReLU):
    GFNN          input block (in -> w), L blocks (w -> w), linear classifier; points: input + L + 1 blocks
    GFNNNoBN      GFNN without BatchNorm          GLNN  GFNN without ReLU (linearized)
    GFNNOriginal  GFNN on the full-size flattened image
    FNNSW / FNNWS / FNNMIX  seven hidden blocks whose widths are multiples of w
"""
from __future__ import annotations

from torch import nn


class MeasuredModel(nn.Module):
    """Base class: `measured_points` names the submodules whose outputs are measured, in order."""

    measured_points: list[str]

    def measured_modules(self) -> list[tuple[str, nn.Module]]:
        modules = dict(self.named_modules())
        return [(name, modules[name]) for name in self.measured_points]


def linear_block(in_features: int, out_features: int, batch_norm: bool = True,
                 relu: bool = True) -> nn.Sequential:
    """Linear -> (BatchNorm1d) -> (ReLU)."""
    layers: list[nn.Module] = [nn.Linear(in_features, out_features)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(out_features))
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLP(MeasuredModel):
    """Flatten, then one linear block per entry of `widths`, then a linear classifier.

    Measured points: the flattened input ("flatten") and every block's output ("blocks.i"), so a
    network with L + 1 blocks has L + 2 points. `stages` (the blocks followed by the classifier) is the
    module list that staged training freezes and unfreezes.
    """

    def __init__(self, input_dim: int, widths: list[int], num_classes: int,
                 batch_norm: bool = True, relu: bool = True):
        super().__init__()
        self.flatten = nn.Flatten()
        dims = [input_dim, *widths]
        self.blocks = nn.ModuleList(linear_block(dims[i], dims[i + 1], batch_norm, relu)
                                    for i in range(len(widths)))
        self.classifier = nn.Linear(dims[-1], num_classes)
        self.measured_points = ["flatten"] + [f"blocks.{i}" for i in range(len(widths))]

    @property
    def stages(self) -> list[nn.Module]:
        return [*self.blocks, self.classifier]

    def forward(self, x):
        x = self.flatten(x)
        for block in self.blocks:
            x = block(x)
        return self.classifier(x)
