"""Residual blocks and the one network class that stacks them.

Read top to bottom: `layout` says which convolutions a block has, `make_shortcut` what runs beside
them, `Block` (He et al. 2015) and `PreActBlock` (He et al. 2016) wire the two together, and `ResNet`
stacks blocks into stages between a stem and a head. Every net of the zoo is this class with
different data; `zoo.build` turns a name into that data.
"""

from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

BlockKind = Literal["basic", "bottleneck"]
ShortcutOption = Literal["A", "B", "C"]
StridePlacement = Literal["v1", "v1.5"]
Stem = Literal["cifar", "imagenet"]

EXPANSION = {"basic": 1, "bottleneck": 4}

# (kernel size, output channels, stride) of one convolution in a block's residual branch.
ConvLayout = tuple[int, int, int]


def layout(
    kind: BlockKind, width: int, stride: int, stride_placement: StridePlacement = "v1"
) -> list[ConvLayout]:
    """The residual branch of a block as data: basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1 x4)."""
    if kind == "basic":
        return [(3, width, stride), (3, width, 1)]
    # The paper strides the first 1x1 ("v1"), which so never sees three input positions in four.
    # torchvision strides the 3x3 ("v1.5"): every position is seen, for 6% more FLOPs on ResNet-50.
    first, middle = (stride, 1) if stride_placement == "v1" else (1, stride)
    return [(1, width, first), (3, width, middle), (1, EXPANSION["bottleneck"] * width, 1)]


class PadShortcut(nn.Module):
    """Option A: identity sampled on the stride grid, new channels zero. Adds no parameters."""

    def __init__(self, extra_channels: int, stride: int):
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra_channels}, stride={self.stride}"


def make_shortcut(
    option: ShortcutOption | None, in_channels: int, out_channels: int, stride: int
) -> nn.Module | None:
    """The shortcut of one block for option A, B or C (Table 3); None builds the plain net."""
    if option is None:
        return None
    if in_channels == out_channels and stride == 1 and option != "C":
        return nn.Identity()
    if option == "A":
        return PadShortcut(out_channels - in_channels, stride)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def _convs(in_channels: int, convs: Sequence[ConvLayout]) -> nn.ModuleList:
    # No conv bias anywhere: a BN follows (or, pre-activation, precedes) every conv and has its own.
    inputs = [in_channels] + [out for _, out, _ in convs[:-1]]
    return nn.ModuleList(
        nn.Conv2d(c_in, out, kernel, stride, padding=kernel // 2, bias=False)
        for c_in, (kernel, out, stride) in zip(inputs, convs)
    )


class Block(nn.Module):
    """The original unit: conv-BN-ReLU ... conv-BN, plus the shortcut, then ReLU.

    `shortcut=None` gives the plain net's block: the same layers, hence the same parameters.
    """

    def __init__(self, in_channels: int, convs: Sequence[ConvLayout], shortcut: nn.Module | None):
        super().__init__()
        self.convs = _convs(in_channels, convs)
        self.bns = nn.ModuleList(nn.BatchNorm2d(conv.out_channels) for conv in self.convs)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            if i:
                out = F.relu(out)
            out = bn(conv(out))
        # The paper adds before the last ReLU, so the branch's last BN output is signed.
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)

    def responses(self) -> dict[str, nn.Module]:
        """Figure 7's responses: the BN after each 3x3 conv, before the ReLU or the addition."""
        pairs = enumerate(zip(self.convs, self.bns))
        return {f"bns.{i}": bn for i, (conv, bn) in pairs if conv.kernel_size == (3, 3)}

    def zero_init_residual_(self) -> None:
        # A zero last gamma makes the branch output 0, so the block starts as relu(shortcut(x)).
        nn.init.zeros_(self.bns[-1].weight)


class PreActBlock(nn.Module):
    """The pre-activation unit (He et al. 2016): BN-ReLU-conv ... BN-ReLU-conv, plus the shortcut.

    Nothing follows the addition, so the identity path carries a signal unchanged across blocks.
    """

    def __init__(self, in_channels: int, convs: Sequence[ConvLayout], shortcut: nn.Module):
        super().__init__()
        if shortcut is None:
            raise ValueError("a pre-activation block needs a shortcut; plain nets use Block")
        self.convs = _convs(in_channels, convs)
        # Each BN normalises its conv's input here, not its output.
        self.bns = nn.ModuleList(nn.BatchNorm2d(conv.in_channels) for conv in self.convs)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preactivated = F.relu(self.bns[0](x))
        out = self.convs[0](preactivated)
        for bn, conv in zip(self.bns[1:], self.convs[1:]):
            out = conv(F.relu(bn(out)))
        # As in the authors' code: an identity keeps x untouched, while a projection (or padding),
        # which changes the signal anyway, reads the shared pre-activation.
        skip = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(preactivated)
        return out + skip

    def responses(self) -> dict[str, nn.Module]:
        """Each 3x3 conv's output, the nearest to Figure 7's: here BNs come before the convs."""
        return {f"convs.{i}": conv for i, conv in enumerate(self.convs) if conv.kernel_size == (3, 3)}

    def zero_init_residual_(self) -> None:
        # The branch ends on a conv, not a BN: zeroing it makes the block start as the shortcut.
        nn.init.zeros_(self.convs[-1].weight)


def make_stem(kind: Stem, width: int, preact: bool) -> nn.Sequential:
    if kind == "cifar":
        layers = OrderedDict(conv=nn.Conv2d(3, width, 3, 1, 1, bias=False))
        if preact:
            # The first pre-activation block normalises and rectifies this conv's output itself.
            return nn.Sequential(layers)
    else:
        # Kept whole for pre-activation nets too, as in He et al. 2016's code: max-pool after BN-ReLU.
        layers = OrderedDict(conv=nn.Conv2d(3, width, 7, 2, 3, bias=False))
    layers.update(bn=nn.BatchNorm2d(width), relu=nn.ReLU())
    if kind == "imagenet":
        layers["pool"] = nn.MaxPool2d(3, 2, 1)
    return nn.Sequential(layers)


def make_head(channels: int, num_classes: int, preact: bool) -> nn.Sequential:
    layers = OrderedDict()
    if preact:
        # Pre-activation blocks end on a bare sum; the net normalises and rectifies it once here.
        layers.update(bn=nn.BatchNorm2d(channels), relu=nn.ReLU())
    layers.update(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(channels, num_classes))
    return nn.Sequential(layers)


class ResNet(nn.Sequential):
    """stem -> layer1 .. layerN -> head (pool, fc). Every plain, residual and pre-activation net.

    Stage i has `blocks_per_stage[i]` blocks of base width `widths[i]` (x4 out for bottlenecks);
    every stage after the first halves the resolution in its first block. The module names
    (`stem.conv`, `layer2.0.bns.1`, `head.fc`) are what hooks and state dicts see.
    """

    def __init__(
        self,
        *,
        stem: Stem,
        block: BlockKind,
        blocks_per_stage: Sequence[int],
        widths: Sequence[int],
        shortcut: ShortcutOption | None,
        preact: bool = False,
        stride_placement: StridePlacement = "v1",
        num_classes: int,
        zero_init_residual: bool = False,
    ):
        if preact and shortcut is None:
            raise ValueError("pre-activation nets are residual: shortcut must be 'A', 'B' or 'C'")
        if zero_init_residual and shortcut is None:
            raise ValueError("zero_init_residual needs residual blocks; a plain net would output constants")
        block_class = PreActBlock if preact else Block
        layers = OrderedDict(stem=make_stem(stem, widths[0], preact))
        channels = widths[0]
        for index, (count, width) in enumerate(zip(blocks_per_stage, widths)):
            stride = 1 if index == 0 else 2
            layers[f"layer{index + 1}"], channels = self._make_layer(
                block_class, channels, block, width, count, stride, shortcut, stride_placement
            )
        layers["head"] = make_head(channels, num_classes, preact)
        super().__init__(layers)
        self.zero_init_residual = zero_init_residual
        # A net on the meta device has no values to set: PyTorch's idiom is to build there, then
        # `to_empty(device=...)` and `reset_parameters()`. Skipping the init (Python meta kernels)
        # makes the meta builds the audit counts on over twice as fast.
        if not self.stem.conv.weight.is_meta:
            self.reset_parameters()

    @staticmethod
    def _make_layer(block_class, in_channels, block, width, count, stride, shortcut, stride_placement):
        """One stage: `count` blocks, of which only the first may change resolution or width."""
        blocks = []
        for i in range(count):
            block_stride = stride if i == 0 else 1
            convs = layout(block, width, block_stride, stride_placement)
            out_channels = convs[-1][1]
            skip = make_shortcut(shortcut, in_channels, out_channels, block_stride)
            blocks.append(block_class(in_channels, convs, skip))
            in_channels = out_channels
        return nn.Sequential(*blocks), in_channels

    def reset_parameters(self) -> None:
        """He init (normal, fan_out, as fb.resnet.torch) for convs; BN gamma 1, beta 0, running
        statistics reset; then `zero_init_residual` if the net was built with it.

        The fc keeps PyTorch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias:
        He init assumes a ReLU follows, which is not so for the classifier, and the paper is silent.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.Linear)):
                module.reset_parameters()
        # A second pass: modules() visits a block before its BNs, which the loop above resets to 1.
        if self.zero_init_residual:
            for module in self.modules():
                if isinstance(module, (Block, PreActBlock)):
                    module.zero_init_residual_()
