"""Measuring nets: parameters, multiply-adds, and the modules whose outputs Figure 7 plots."""

from dataclasses import replace
from functools import cache
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_repro.models.resnet import ModelSpec, ResNet
from resnet_repro.models.zoo import spec


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: int) -> int:
    """Multiply-adds of one forward pass on one `input_size` x `input_size` RGB image.

    Convolutions and the fc are counted; BN, ReLU, pooling and additions are not, as in the paper.
    Works on a model on the meta device, which costs no memory and does no arithmetic.
    """
    return _flops_by_module(model, input_size)["Global"]


def _flops_by_module(model: nn.Module, input_size: int) -> dict[str, int]:
    """Multiply-adds by module, named as FlopCounterMode names them: "Global" for the whole pass,
    "ResNet.layer1.1" for the second block of a ResNet's first stage.

    FlopCounterMode counts 2 FLOPs per multiply-add; the paper's "FLOPs" are multiply-adds, hence
    the halving.
    """
    weight = next(model.parameters())
    image = torch.zeros(1, 3, input_size, input_size, device=weight.device, dtype=weight.dtype)
    was_training = model.training
    model.eval()  # BN uses (and does not update) its running statistics
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(image)
    finally:
        model.train(was_training)
    return {name: sum(counts.values()) // 2 for name, counts in counter.get_flop_counts().items()}


def describe(name: str, **options: Any) -> dict[str, Any]:
    """`spec(name)` as a dict, plus `params` and `flops` (multiply-adds at the native input size)."""
    s = spec(name, **options)
    return {**vars(s), **_measure(s)}


@cache
def _measure(s: ModelSpec) -> dict[str, int]:
    """Parameters and multiply-adds of the net `s`, measured on a copy with at most two blocks a stage.

    The blocks after the first of a stage are alike (same channels in and out, stride 1, same
    shortcut), so the full net has the copy's counts plus, for each stage, its second block's once
    per block cut. ResNet-1202's 600 blocks are so measured as 6: on the meta device, where the
    measuring runs, BN and ReLU have slow (Python) kernels. Cached per spec, once a process.
    """
    short = replace(s, blocks_per_stage=tuple(min(count, 2) for count in s.blocks_per_stage))
    with torch.device("meta"):
        model = ResNet(short)
    params = count_params(model)
    flops = _flops_by_module(model, s.input_size)
    total_flops = flops["Global"]
    for index, (count, layer) in enumerate(zip(s.blocks_per_stage, model.layers), start=1):
        if cut := count - len(layer):
            params += cut * count_params(layer[1])
            total_flops += cut * flops[f"ResNet.layer{index}.1"]
    return {"params": params, "flops": total_flops}


def response_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every module whose output is a 3x3 layer's response (Figure 7), by its name in `model`, in
    forward order: each block's `responses()`."""
    found = {}
    for prefix, module in model.named_modules():
        if hasattr(module, "responses"):
            found.update({f"{prefix}.{name}": m for name, m in module.responses().items()})
    return found
