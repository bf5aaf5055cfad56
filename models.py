"""Architectures, each built as Class(input_shape, num_classes, **model.params) (conf/model/NAME.yaml)
and declaring in `measured_points` the submodules whose outputs are measured, in depth order: the MLP
family (GFNN and its variants), PlainCNN (VGG13, AlexNet) and ResidualNet (GResNet, ResNetMixV2).
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


class NormReluBlock(nn.Module):
    """A layer -> normalization -> ReLU (optional) block as one module: one hook point, and fewer
    module calls per step than an nn.Sequential, which matters for small networks on a CPU. The ReLU
    runs in place on the fresh normalization output, never on a tensor a hook already holds.
    Subclasses set `self.norm` and define `transform` (the linear or conv layer)."""

    def __init__(self, relu: bool):
        super().__init__()
        self.relu = relu

    def transform(self, x):
        raise NotImplementedError

    def forward(self, x):
        x = self.norm(self.transform(x))
        return torch.relu_(x) if self.relu else x

    def extra_repr(self) -> str:
        return f"relu={self.relu}"


class LinearBlock(NormReluBlock):
    """Linear -> BatchNorm1d (optional) -> ReLU (optional)."""

    def __init__(self, in_features: int, out_features: int, batch_norm: bool = True, relu: bool = True):
        super().__init__(relu)
        self.linear = nn.Linear(in_features, out_features)
        self.norm = nn.BatchNorm1d(out_features) if batch_norm else nn.Identity()

    def transform(self, x):
        return self.linear(x)


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


# ------------------------------------------------------------------------------- convolutional networks
def _output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """Spatial size after a conv or pooling window (no dilation)."""
    return (size + 2 * padding - kernel_size) // stride + 1


class ChannelRepeat(nn.Module):
    """[N, C, H, W] -> [N, C * repeats, H, W]: the original fed its CNNs channel-repeated images. A
    module of its own so that the repeated input is a hooked measured point (point 0)."""

    def __init__(self, repeats: int):
        super().__init__()
        self.repeats = int(repeats)

    def forward(self, x):
        return x.repeat(1, self.repeats, 1, 1)

    def extra_repr(self) -> str:
        return f"repeats={self.repeats}"


class ConvBlock(NormReluBlock):
    """Conv2d (stride 1) -> BatchNorm2d (optional) -> ReLU (optional)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int,
                 bias: bool = True, batch_norm: bool = True, relu: bool = True):
        super().__init__(relu)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self.norm = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()

    def transform(self, x):
        return self.conv(x)


class PlainCNN(MeasuredModel):
    """Channel repeat, a conv plan of conv blocks and max-pools, flatten, FC blocks, linear classifier.

    conv_plan entries: an int c is a ConvBlock to c channels (kernel_size, padding, stride 1); "M" is
    MaxPool2d(pool_kernel_size, pool_stride, pool_padding). fc_widths are the LinearBlocks
    (Linear -> BatchNorm1d -> ReLU) after the flatten, whose width follows from input_shape.
    Measured points: the repeated input ("repeat"), every conv block after its ReLU and before any
    pooling ("features.i"), every FC block ("fc.j"). The subclasses only name the architecture; its
    numbers come from conf/model/*.yaml.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channel_repeat: int,
                 conv_plan: list, kernel_size: int, padding: int, pool_kernel_size: int,
                 pool_stride: int, pool_padding: int, fc_widths: list[int], batch_norm: bool = True):
        super().__init__()
        channels, height, width = input_shape
        self.repeat = ChannelRepeat(channel_repeat)
        channels *= channel_repeat
        layers: list[nn.Module] = []
        for entry in conv_plan:
            if entry == "M":
                layers.append(nn.MaxPool2d(pool_kernel_size, pool_stride, pool_padding))
                height, width = (_output_size(size, pool_kernel_size, pool_stride, pool_padding)
                                 for size in (height, width))
            elif isinstance(entry, int) and not isinstance(entry, bool) and entry > 0:
                layers.append(ConvBlock(channels, entry, kernel_size, padding, batch_norm=batch_norm))
                channels = entry
                height, width = (_output_size(size, kernel_size, 1, padding) for size in (height, width))
            else:
                raise ValueError(f"model.params.conv_plan entry {entry!r}: allowed: a positive channel "
                                 "count or M (max-pool)")
            if height < 1 or width < 1:
                raise ValueError(f"model.params.conv_plan shrinks the {input_shape[1]}x{input_shape[2]} "
                                 "input to nothing; use larger inputs or fewer pools")
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        dims = [channels * height * width, *fc_widths]
        self.fc = nn.ModuleList(LinearBlock(dims[i], dims[i + 1], batch_norm)
                                for i in range(len(fc_widths)))
        self.classifier = nn.Linear(dims[-1], num_classes)
        self.measured_points = (["repeat"]
                                + [f"features.{i}" for i, layer in enumerate(layers)
                                   if isinstance(layer, ConvBlock)]
                                + [f"fc.{j}" for j in range(len(fc_widths))])

    def forward(self, x):
        x = self.flatten(self.features(self.repeat(x)))
        for block in self.fc:
            x = block(x)
        return self.classifier(x)


class VGG(PlainCNN):
    """VGG13 as the paper used it (conf/model/VGG13.yaml): inputs repeated 16 times, conv plan
    64,64,M,128,128,M,256,256,M,512,512,M,512,512,M of 5x5 convs (padding 2), 2x2 max-pools,
    FC 512 -> 4096 -> 4096, classifier. 13 measured points."""


class AlexNet(PlainCNN):
    """AlexNet for 32x32 inputs as the paper used it (conf/model/AlexNet.yaml): inputs repeated 32
    times, 5x5 convs (padding 2) of 64,192,384,256,256 channels with 3x3 stride-2 padding-1 max-pools
    after the 1st, 2nd and 5th, FC 256*4*4 -> 4096 -> 4096, classifier. 8 measured points."""


# ------------------------------------------------------------------------------------ residual networks
class ResidualBlock(nn.Module):
    """One stride-1 residual block of len(kernel_sizes) bias-free convs with 'same' padding.

    Every conv but the last is a ConvBlock (conv -> BN -> ReLU) in `convs`; the last (`last`) is
    conv -> BN, then the shortcut is added and ReLU applied: that is the block's output. The shortcut
    is the identity, or a 1x1 conv + BN projection when in_channels != channels.
    basicblock = kernel_sizes [3, 3]; bottleneck (expansion 1) = [5, 5, 5].
    """

    def __init__(self, in_channels: int, channels: int, kernel_sizes: list[int]):
        super().__init__()
        if not kernel_sizes or any(int(k) % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"block kernel sizes {kernel_sizes}: allowed: a non-empty list of odd "
                             "sizes (stride-1 'same' convs keep the map size for the residual add)")
        convs, width = [], in_channels
        for kernel_size in kernel_sizes[:-1]:
            convs.append(ConvBlock(width, channels, kernel_size, kernel_size // 2, bias=False))
            width = channels
        self.convs = nn.ModuleList(convs)
        self.last = ConvBlock(width, channels, kernel_sizes[-1], kernel_sizes[-1] // 2, bias=False,
                              relu=False)
        self.shortcut = (nn.Identity() if in_channels == channels else
                         nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False),
                                       nn.BatchNorm2d(channels)))

    def forward(self, x):
        out = x
        for conv in self.convs:
            out = conv(out)
        return torch.relu_(self.last(out) + self.shortcut(x))  # the sum is a fresh tensor


class ResidualNet(MeasuredModel):
    """Channel repeat, one stage of residual blocks (block_types[i] names the kernel sizes of block i
    in block_kernel_sizes), flatten, linear classifier on the channels x H x W map.

    The stage is `channels` wide. When the repeated input is wider (3-channel data repeated 8 times is
    24 channels), the first block's first conv maps it to `channels` and its shortcut is a 1x1 conv +
    BN projection; with 1-channel data repeated 8 times every shortcut is the identity, as in the
    original.

    feature_option=block: points = repeated input ("repeat") + each block output ("blocks.j").
    feature_option=layer: the repeated input + every conv of every block ("blocks.j.convs.i"), the last
    conv of a block measured after the residual add and ReLU ("blocks.j").
    `block_output_points[j]` is the point index of block j's output.
    """

    FEATURE_OPTIONS = ("block", "layer")

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, block_types: list[str],
                 feature_option: str, channel_repeat: int, channels: int,
                 block_kernel_sizes: dict[str, list[int]]):
        super().__init__()
        if feature_option not in self.FEATURE_OPTIONS:
            raise ValueError(f"feature_option={feature_option}: allowed: "
                             f"{', '.join(self.FEATURE_OPTIONS)}")
        in_channels, height, width = input_shape
        self.repeat = ChannelRepeat(channel_repeat)
        widths = [in_channels * channel_repeat] + [channels] * len(block_types)
        self.blocks = nn.ModuleList(ResidualBlock(widths[j], channels, list(block_kernel_sizes[kind]))
                                    for j, kind in enumerate(block_types))
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels * height * width, num_classes)
        self.measured_points = ["repeat"]
        self.block_output_points = []
        for j, block in enumerate(self.blocks):
            if feature_option == "layer":
                self.measured_points += [f"blocks.{j}.convs.{i}" for i in range(len(block.convs))]
            self.measured_points.append(f"blocks.{j}")
            self.block_output_points.append(len(self.measured_points) - 1)

    def forward(self, x):
        x = self.repeat(x)
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.flatten(x))


def _check_block_option(block_option: str, block_kernel_sizes: dict) -> None:
    if block_option not in block_kernel_sizes:
        raise ValueError(f"block_option={block_option}: allowed: {', '.join(block_kernel_sizes)}")


class GResNet(ResidualNet):
    """block_num residual blocks of one kind (block_option: basicblock | bottleneck)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, block_option: str, block_num: int,
                 feature_option: str, channel_repeat: int, channels: int,
                 block_kernel_sizes: dict[str, list[int]]):
        _check_block_option(block_option, block_kernel_sizes)
        if block_num < 1:
            raise ValueError(f"block_num={block_num}: allowed: an integer >= 1")
        super().__init__(input_shape, num_classes, [block_option] * block_num, feature_option,
                         channel_repeat, channels, block_kernel_sizes)


class ResNetMixV2(ResidualNet):
    """block_num/2 blocks of kind mix[0] (bottleneck), then block_num/2 of kind mix[1] (basicblock).

    fit_segments = [(0, b), (b, last point)], b = the output point of the last block of the first
    half, shared by both segments: one line over each part.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, block_num: int,
                 feature_option: str, channel_repeat: int, channels: int,
                 block_kernel_sizes: dict[str, list[int]], mix: list[str], block_option: str = "MIX"):
        if block_option != "MIX":
            raise ValueError(f"block_option={block_option}: ResNetMixV2 mixes {' and '.join(mix)} "
                             "blocks; allowed: MIX")
        if len(mix) != 2:
            raise ValueError(f"model.params.mix={mix}: allowed: two block kinds (first half, then "
                             "second half)")
        for kind in mix:
            _check_block_option(kind, block_kernel_sizes)
        if block_num < 2 or block_num % 2:
            raise ValueError(f"block_num={block_num}: ResNetMixV2 splits its blocks in two halves; "
                             "allowed: an even number >= 2")
        half = block_num // 2
        super().__init__(input_shape, num_classes, [mix[0]] * half + [mix[1]] * half, feature_option,
                         channel_repeat, channels, block_kernel_sizes)
        boundary = self.block_output_points[half - 1]
        self.fit_segments = [(0, boundary), (boundary, len(self.measured_points) - 1)]
