"""Loading torchvision ResNet state dicts into the zoo's nets.

torchvision's resnet18/34/50/101/152 are the option-B nets with stride placement "v1.5":

    model = build("resnet50", stride_placement="v1.5")
    model.load_state_dict(from_torchvision(torchvision.models.resnet50().state_dict()))

Key map (torchvision -> here; block convs and BNs are 1-based there, 0-based lists here):

    conv1.*                      stem.conv.*
    bn1.*                        stem.bn.*
    layer{s}.{b}.conv{k}.*       layer{s}.{b}.convs.{k-1}.*
    layer{s}.{b}.bn{k}.*         layer{s}.{b}.bns.{k-1}.*
    layer{s}.{b}.downsample.0.*  layer{s}.{b}.shortcut.0.*   (1x1 projection conv)
    layer{s}.{b}.downsample.1.*  layer{s}.{b}.shortcut.1.*   (its BN)
    fc.*                         head.fc.*
"""

import re

import torch

_KEY_MAP = (
    (re.compile(r"conv1\.(.+)"), lambda m: f"stem.conv.{m[1]}"),
    (re.compile(r"bn1\.(.+)"), lambda m: f"stem.bn.{m[1]}"),
    (re.compile(r"(layer\d+\.\d+)\.conv(\d)\.(.+)"), lambda m: f"{m[1]}.convs.{int(m[2]) - 1}.{m[3]}"),
    (re.compile(r"(layer\d+\.\d+)\.bn(\d)\.(.+)"), lambda m: f"{m[1]}.bns.{int(m[2]) - 1}.{m[3]}"),
    (re.compile(r"(layer\d+\.\d+)\.downsample\.([01])\.(.+)"), lambda m: f"{m[1]}.shortcut.{m[2]}.{m[3]}"),
    (re.compile(r"fc\.(.+)"), lambda m: f"head.fc.{m[1]}"),
)


def torchvision_key(key: str) -> str:
    """The name here of torchvision ResNet parameter or buffer `key`; KeyError if it has none."""
    for pattern, rename in _KEY_MAP:
        if match := pattern.fullmatch(key):
            return rename(match)
    raise KeyError(f"no counterpart for torchvision ResNet key {key!r}")


def from_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict with every key renamed by `torchvision_key`."""
    return {torchvision_key(key): value for key, value in state_dict.items()}
