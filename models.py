"""Architectures of the equi-separation experiments, each declaring its measured points.

Every architecture is a class constructed as Class(input_shape, num_classes, **model.params), where
model.params comes from conf/model/NAME.yaml (it may interpolate top-level keys such as ${layer_num}).
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

import math

import torch
from torch import nn


class MeasuredModel(nn.Module):
    """Base class: `measured_points` names the submodules whose outputs are measured, in order."""

    measured_points: list[str]
    # Two-part fits (ResNetMixV2): [(first_index, last_index), ...] of measured points; None = one line.
    fit_segments: list[tuple[int, int]] | None = None

    def measured_modules(self) -> list[tuple[str, nn.Module]]:
        modules = dict(self.named_modules())
        return [(name, modules[name]) for name in self.measured_points]


class LinearBlock(nn.Module):
    """Linear -> BatchNorm1d (optional) -> ReLU (optional), as one module (one hook point, and fewer
    module calls per step than an nn.Sequential, which matters for small networks on a CPU)."""

    def __init__(self, in_features: int, out_features: int, batch_norm: bool = True, relu: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.norm = nn.BatchNorm1d(out_features) if batch_norm else nn.Identity()
        self.relu = relu

    def forward(self, x):
        x = self.norm(self.linear(x))
        return torch.relu_(x) if self.relu else x

    def extra_repr(self) -> str:
        return f"relu={self.relu}"


class MLP(MeasuredModel):
    """Flatten, an input block (in -> w_0), one linear block per further width, a linear classifier.

    widths = hidden_size * width_multipliers (L + 1 entries), or hidden_size for the input block and
    each of the layer_num hidden blocks. Measured points: the flattened input ("flatten") and every
    block's output ("blocks.i"): L + 2 points. `stages` (the blocks, then the classifier) is the module
    list that staged training freezes and unfreezes.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, layer_num: int, hidden_size: int,
                 width_multipliers: list[float] | None = None, batch_norm: bool = True,
                 relu: bool = True):
        super().__init__()
        if width_multipliers is None:
            widths = [hidden_size] * (layer_num + 1)
        else:
            widths = [int(m * hidden_size) for m in width_multipliers]
        self.flatten = nn.Flatten()
        dims = [math.prod(input_shape), *widths]
        self.blocks = nn.ModuleList(LinearBlock(dims[i], dims[i + 1], batch_norm, relu)
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
