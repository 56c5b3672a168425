"""The one network class, `ResNet`, its two blocks, and the `ModelSpec` it is built from.

Read top to bottom: `ModelSpec` is the data that tells one net from another (`zoo.spec` turns a name
into one), `make_shortcut` builds what runs beside a block's convolutions, `Block` (He et al. 2015)
and `PreActBlock` (He et al. 2016) are the units, and `ResNet(spec)` stacks them into stages between
a stem and a classifier. Module names are torchvision's (`conv1`, `layer2.0.bn1`, `layer2.0.downsample.0`,
`fc`), so torchvision's ResNet state dicts load as they are.
"""

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

Family = Literal["plain", "residual", "preact"]
Dataset = Literal["cifar10", "imagenet"]
BlockKind = Literal["basic", "bottleneck"]
ShortcutOption = Literal["A", "B", "C"]
StridePlacement = Literal["v1", "v1.5"]

EXPANSION = {"basic": 1, "bottleneck": 4}  # a block's output channels over its base width


@dataclass(frozen=True)
class ModelSpec:
    """Everything that tells one net of the papers from another; `ResNet(spec)` builds it."""

    name: str  # canonical, see zoo.spec
    family: Family
    dataset: Dataset  # decides the stem: 3x3 conv (Section 4.2) or 7x7 + max-pool (Table 1)
    depth: int  # weighted layers: convs and the fc, shortcuts not counted
    block: BlockKind
    shortcut: ShortcutOption | None  # option of Table 3; None for plain nets
    stride_placement: StridePlacement  # only bottlenecks differ: stride on the 1x1 / the 3x3
    num_classes: int
    input_size: int  # native square input, 32 or 224
    blocks_per_stage: tuple[int, ...]
    widths: tuple[int, ...]  # base channels per stage; bottlenecks output 4x
    zero_init_residual: bool = False

    @property
    def imagenet_stages(self) -> bool:
        """Table 1's four stages of 64 to 512 base channels: the ImageNet nets, and their `-cifar`
        versions (zoo), which have the CIFAR stem instead of the 7x7 conv and max-pool."""
        return len(self.widths) == 4


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    # No bias: a BN follows (or, pre-activation, precedes) every conv and has its own.
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False)


class PadShortcut(nn.Module):
    """Option A (Section 3.3): the identity sampled on the stride grid, new channels zero. No parameters."""

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
    """A block's `downsample` for shortcut option A, B or C (Table 3): None is the identity.

    A pads where the shape changes, B projects (1x1 conv + BN, torchvision's layout) where it changes,
    C projects everywhere. Plain nets (`option` None) have no shortcut at all.
    """
    if option is None or (in_channels == out_channels and stride == 1 and option != "C"):
        return None
    if option == "A":
        return PadShortcut(out_channels - in_channels, stride)
    return nn.Sequential(conv(in_channels, out_channels, 1, stride), nn.BatchNorm2d(out_channels))


def branch_convs(
    in_channels: int, width: int, stride: int, bottleneck: bool, stride_placement: StridePlacement
) -> tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d | None]:
    """A block's convolutions (Figure 5): basic 3x3, 3x3 (and None); bottleneck 1x1, 3x3, 1x1 to 4x width."""
    if not bottleneck:
        return conv(in_channels, width, 3, stride), conv(width, width, 3), None
    # The paper strides the first 1x1 ("v1"), which so never reads three input positions in four.
    # torchvision strides the 3x3 ("v1.5"): every position is read, for 6% more FLOPs on ResNet-50.
    first, middle = (stride, 1) if stride_placement == "v1" else (1, stride)
    return (
        conv(in_channels, width, 1, first),
        conv(width, width, 3, middle),
        conv(width, EXPANSION["bottleneck"] * width, 1),
    )


class Block(nn.Module):
    """The original unit (Section 3): conv-BN-ReLU ... conv-BN, plus the shortcut, then ReLU.

    Basic blocks have conv1/bn1 and conv2/bn2, bottlenecks add conv3/bn3. `downsample` is the shortcut
    where it is not the identity (None). `residual=False` is the plain net's block: the same layers,
    hence the same parameters, and no shortcut.
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        *,
        bottleneck: bool = False,
        stride_placement: StridePlacement = "v1",
        downsample: nn.Module | None = None,
        residual: bool = True,
    ):
        super().__init__()
        if downsample is not None and not residual:
            raise ValueError("a plain block (residual=False) has no shortcut, so no downsample")
        conv1, conv2, conv3 = branch_convs(in_channels, width, stride, bottleneck, stride_placement)
        self.conv1, self.bn1 = conv1, nn.BatchNorm2d(conv1.out_channels)
        self.conv2, self.bn2 = conv2, nn.BatchNorm2d(conv2.out_channels)
        self.conv3, self.bn3 = conv3, (nn.BatchNorm2d(conv3.out_channels) if conv3 is not None else None)
        self.downsample = downsample
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.conv3 is not None and self.bn3 is not None:  # a bottleneck, which has both
            out = self.bn3(self.conv3(F.relu(out)))
        # The paper adds before the last ReLU, so the branch's last BN output is signed.
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(out)

    def responses(self) -> dict[str, nn.Module]:
        """Figure 7's responses: the BN after each 3x3 conv, before the ReLU or the addition."""
        if self.conv3 is None:
            return {"bn1": self.bn1, "bn2": self.bn2}
        return {"bn2": self.bn2}  # a bottleneck's only 3x3

    def zero_init_residual_(self) -> None:
        # A zero last gamma makes the branch output 0, so the block starts as relu(shortcut(x)).
        nn.init.zeros_(self.bn2.weight if self.bn3 is None else self.bn3.weight)

    def extra_repr(self) -> str:
        return "" if self.residual else "residual=False"


class PreActBlock(nn.Module):
    """The pre-activation unit (He et al. 2016): BN-ReLU-conv ... BN-ReLU-conv, plus the shortcut.

    Here `bn<k>` normalises the input of `conv<k>`, so it comes first. Nothing follows the addition,
    so the identity path carries a signal unchanged across blocks.
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        *,
        bottleneck: bool = False,
        stride_placement: StridePlacement = "v1",
        downsample: nn.Module | None = None,
    ):
        super().__init__()
        conv1, conv2, conv3 = branch_convs(in_channels, width, stride, bottleneck, stride_placement)
        self.bn1, self.conv1 = nn.BatchNorm2d(conv1.in_channels), conv1
        self.bn2, self.conv2 = nn.BatchNorm2d(conv2.in_channels), conv2
        self.bn3, self.conv3 = (nn.BatchNorm2d(conv3.in_channels) if conv3 is not None else None), conv3
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preactivated = F.relu(self.bn1(x))
        out = self.conv1(preactivated)
        out = self.conv2(F.relu(self.bn2(out)))
        if self.conv3 is not None and self.bn3 is not None:  # a bottleneck, which has both
            out = self.conv3(F.relu(self.bn3(out)))
        # As in the authors' code: the identity keeps x untouched, while a projection (or padding),
        # which changes the signal anyway, reads the shared pre-activation.
        return out + (x if self.downsample is None else self.downsample(preactivated))

    def responses(self) -> dict[str, nn.Module]:
        """Each 3x3 conv's output, the nearest to Figure 7's: here BNs come before the convs."""
        if self.conv3 is None:
            return {"conv1": self.conv1, "conv2": self.conv2}
        return {"conv2": self.conv2}

    def zero_init_residual_(self) -> None:
        # The branch ends on a conv, not a BN: zeroing it makes the block start as the shortcut.
        nn.init.zeros_(self.conv2.weight if self.conv3 is None else self.conv3.weight)


class ResNet(nn.Module):
    """conv1 -> bn1 -> relu [-> maxpool] -> layer1 .. layerN -> avgpool -> fc: every net of the zoo.

    ImageNet nets (Table 1) have a 7x7 stride-2 conv1 and a max-pool, and four stages; CIFAR-10 nets
    (Section 4.2) a 3x3 conv1, no max-pool, and three (the `-cifar` nets: Table 1's four). Stage i has
    `blocks_per_stage[i]` blocks of base width `widths[i]`; every stage after the first halves the
    resolution in its first block.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        if (spec.family == "plain") != (spec.shortcut is None):
            raise ValueError(f"{spec.name}: plain nets have no shortcut, residual and preact nets need one")
        if spec.zero_init_residual and spec.family == "plain":
            raise ValueError(f"{spec.name}: zero_init_residual needs shortcuts, which plain nets lack")
        self.spec = spec
        imagenet, preact = spec.dataset == "imagenet", spec.family == "preact"
        channels = spec.widths[0]
        self.conv1 = conv(3, channels, 7, 2) if imagenet else conv(3, channels, 3)
        # A CIFAR pre-activation net's first block normalises and rectifies conv1's output itself. The
        # ImageNet ones keep BN-ReLU-max-pool here, as in He et al. 2016's code.
        self.bn1 = None if preact and not imagenet else nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1) if imagenet else None
        for index, (count, width) in enumerate(zip(spec.blocks_per_stage, spec.widths)):
            layer, channels = self._make_layer(channels, width, count, stride=1 if index == 0 else 2)
            self.add_module(f"layer{index + 1}", layer)
        # Pre-activation blocks end on a bare sum: the net normalises and rectifies it once, before
        # pooling (He et al. 2016). torchvision has no such layer, hence a name of its own.
        self.final_bn = nn.BatchNorm2d(channels) if preact else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, spec.num_classes)
        # A net on the meta device has no values to set: PyTorch's idiom is to build there, then
        # `to_empty(device=...)` and `reset_parameters()`. Skipping the init (Python meta kernels)
        # makes the meta builds the audit counts on over twice as fast.
        if not self.conv1.weight.is_meta:
            self.reset_parameters()

    def _make_layer(self, in_channels: int, width: int, count: int, stride: int) -> tuple[nn.Sequential, int]:
        """One stage: `count` blocks, of which only the first may change resolution or width."""
        s = self.spec
        out_channels = EXPANSION[s.block] * width
        block_class = PreActBlock if s.family == "preact" else Block
        options: dict[str, Any] = {"bottleneck": s.block == "bottleneck", "stride_placement": s.stride_placement}
        if block_class is Block:
            options["residual"] = s.family == "residual"  # a plain net's block has no shortcut
        blocks = []
        for i in range(count):
            block_stride = stride if i == 0 else 1
            downsample = make_shortcut(s.shortcut, in_channels, out_channels, block_stride)
            blocks.append(block_class(in_channels, width, block_stride, downsample=downsample, **options))
            in_channels = out_channels
        return nn.Sequential(*blocks), out_channels

    @property
    def layers(self) -> list[nn.Sequential]:
        """The stages, layer1 .. layerN."""
        return [module for name, module in self.named_children()
                if name.startswith("layer") and isinstance(module, nn.Sequential)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if self.bn1 is not None:
            x = self.relu(self.bn1(x))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for layer in self.layers:
            x = layer(x)
        if self.final_bn is not None:
            x = self.relu(self.final_bn(x))
        x = self.avgpool(x)
        return self.fc(torch.flatten(x, 1))

    def reset_parameters(self) -> None:
        """He init (normal, fan_out, as fb.resnet.torch) for convs; BN gamma 1, beta 0, running
        statistics reset; then `zero_init_residual` if the spec asks for it.

        The fc keeps PyTorch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias:
        He init assumes a ReLU follows, which is not so for the classifier, and the paper is silent.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.Linear)):
                module.reset_parameters()
        # A second pass: modules() visits a block before its BNs, which the loop above resets to 1.
        if self.spec.zero_init_residual:
            for module in self.modules():
                if isinstance(module, (Block, PreActBlock)):
                    module.zero_init_residual_()
