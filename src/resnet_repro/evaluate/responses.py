"""Figure 7 of the paper: the standard deviation of each 3x3 layer's responses on the test set.

A response is the output of a 3x3 layer after BN, before the nonlinearity (`models.response_modules`
names them). The std is taken over every element of every test image, accumulated in float64 so
that one pass over the loader suffices.
"""

import torch

from resnet_repro.models import response_modules


@torch.no_grad()
def response_stds(model: torch.nn.Module, loader) -> list[dict]:
    """[{"layer": 1, "name": "layer1.0.bn1", "std": ...}, ...] in forward order."""
    modules = response_modules(model)
    sums = {name: torch.zeros(3, dtype=torch.float64) for name in modules}  # count, sum, sum of squares

    def accumulate(name: str):
        def hook(_module, _inputs, output: torch.Tensor) -> None:
            values = output.detach().double()
            sums[name] += torch.stack([torch.tensor(values.numel(), dtype=torch.float64),
                                       values.sum().cpu(), values.square().sum().cpu()])
        return hook

    handles = [module.register_forward_hook(accumulate(name)) for name, module in modules.items()]
    was_training = model.training
    model.eval()
    try:
        for images, _ in loader:
            model(images)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    rows = []
    for index, (name, (count, total, total_squares)) in enumerate(sums.items(), start=1):
        mean = total / count
        rows.append({"layer": index, "name": name, "std": float((total_squares / count - mean**2).clamp(min=0).sqrt())})
    return rows
