"""Measuring nets: parameters, multiply-adds, and the layer responses of Figure 7."""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_repro.models.zoo import ModelSpec, build_spec, spec


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    # Eval mode so BN uses (and does not update) its running statistics; the caller's mode returns.
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def count_flops(model: nn.Module, input_size: int) -> int:
    """Multiply-adds of one forward pass on one `input_size` x `input_size` RGB image.

    FlopCounterMode counts 2 FLOPs per multiply-add; the paper's "FLOPs" are multiply-adds, hence
    the halving. Convolutions and the fc are counted; BN, ReLU, pooling and additions are not, as
    in the paper. Works on a model on the meta device, which costs no memory and does no arithmetic.

    Running a meta tensor through BN or ReLU is still slow (their meta kernels are Python), and
    ResNet-1202 has 600 blocks that are copies of 6: so the children of an `nn.Sequential` are
    counted one by one, and a child with the configuration (its repr) and the input shape of one
    already counted is not run again. Every number still comes from FlopCounterMode.
    """
    weight = next(model.parameters())
    image = torch.zeros(1, 3, input_size, input_size, device=weight.device, dtype=weight.dtype)
    with _inference(model):
        flops, _ = _count_flops(model, image, {})
    return flops // 2


def _count_flops(module: nn.Module, x: torch.Tensor, counted: dict) -> tuple[int, torch.Tensor]:
    """FLOPs of `module(x)` and its output; `counted` holds the results by (repr, input shape)."""
    if type(module).forward is nn.Sequential.forward:  # runs its children in turn, nothing else
        total = 0
        for child in module:
            flops, x = _count_flops(child, x, counted)
            total += flops
        return total, x
    key = (repr(module), x.shape, x.dtype, x.device)
    if key not in counted:
        with FlopCounterMode(display=False) as counter:
            output = module(x)
        counted[key] = counter.get_total_flops(), output
    return counted[key]


def describe(name: str, **options: Any) -> dict[str, Any]:
    """`spec(name)` as a dict, plus `params` and `flops` (multiply-adds at the native input size)."""
    s = spec(name, **options)
    return {**vars(s), **_measure(s)}


@cache
def _measure(s: ModelSpec) -> dict[str, int]:
    # Per spec, once a process: names that are aliases (resnet20, resnet20-a) share the entry.
    with torch.device("meta"):
        model = build_spec(s)
    return {"params": count_params(model), "flops": count_flops(model, s.input_size)}


def response_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every module whose output is a 3x3 layer's response (Figure 7), by its name in `model`."""
    found = {}
    for prefix, module in model.named_modules():
        if hasattr(module, "responses"):
            found.update({f"{prefix}.{name}": m for name, m in module.responses().items()})
    return found


def layer_responses(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The response of each 3x3 layer to `images`, in forward order, from one eval-mode pass.

    Original blocks: the BN output after each 3x3 conv, before ReLU and addition (Figure 7's
    definition). Pre-activation blocks: each 3x3 conv's output. Figure 7 plots `.std()` of each.
    """
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str):
        return lambda _module, _inputs, output: captured.__setitem__(name, output)

    handles = [module.register_forward_hook(keep(name)) for name, module in response_modules(model).items()]
    try:
        with _inference(model):
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return captured
