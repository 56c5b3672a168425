"""Measuring nets: parameters, multiply-adds, and the layer responses of Figure 7."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_repro.models.zoo import build, spec


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
    in the paper. Works on a model on the meta device, which costs no memory or compute.
    """
    weight = next(model.parameters())
    image = torch.zeros(1, 3, input_size, input_size, device=weight.device, dtype=weight.dtype)
    with _inference(model), FlopCounterMode(display=False) as counter:
        model(image)
    return counter.get_total_flops() // 2


def describe(name: str, **options: Any) -> dict[str, Any]:
    """`spec(name)` as a dict, plus `params` and `flops` (multiply-adds at the native input size)."""
    s = spec(name, **options)
    with torch.device("meta"):
        model = build(name, **options)
    return {**vars(s), "params": count_params(model), "flops": count_flops(model, s.input_size)}


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
