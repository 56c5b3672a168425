"""Figure 7 of the paper: the standard deviation of each 3x3 layer's responses on the test set.

A response is the output of a 3x3 layer after BN, before the nonlinearity (`models.response_modules`
names them). The std is taken over every element of every test image, accumulated in float64 so
that one pass over the loader suffices: the evaluation's own pass (`LayerResponses` records while it
runs), so the test set is read once for both the errors and the figure.
"""

from typing import Self

import torch
from torch.utils.hooks import RemovableHandle

from resnet_repro.models import response_modules


class LayerResponses:
    """`with LayerResponses(model) as responses:` any forward passes, then `responses.stds()`."""

    def __init__(self, model: torch.nn.Module):
        self._modules = response_modules(model)
        self._sums = {name: torch.zeros(3, dtype=torch.float64) for name in self._modules}  # count, sum, sum of squares
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> Self:
        self._handles = [module.register_forward_hook(self._accumulator(name)) for name, module in self._modules.items()]
        return self

    def __exit__(self, *_) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _accumulator(self, name: str):
        def hook(_module, _inputs, output: torch.Tensor) -> None:
            values = output.detach().double()
            self._sums[name] += torch.stack([torch.tensor(values.numel(), dtype=torch.float64),
                                             values.sum().cpu(), values.square().sum().cpu()])
        return hook

    def stds(self) -> list[dict]:
        """[{"layer": 1, "name": "layer1.0.bn1", "std": ...}, ...] in forward order."""
        rows = []
        for index, (name, (count, total, total_squares)) in enumerate(self._sums.items(), start=1):
            if count == 0:
                raise ValueError(f"no forward pass reached {name}: nothing to take the std of")
            mean = total / count
            rows.append({"layer": index, "name": name,
                         "std": float((total_squares / count - mean**2).clamp(min=0).sqrt())})
        return rows


@torch.no_grad()
def response_stds(model: torch.nn.Module, loader) -> list[dict]:
    """The stds over one pass of `loader` in eval mode, for a net outside the evaluate stage."""
    was_training = model.training
    model.eval()
    try:
        with LayerResponses(model) as responses:
            for images, _ in loader:
                model(images)
    finally:
        model.train(was_training)
    return responses.stds()
