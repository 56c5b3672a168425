"""The recipe's optimizer: SGD with momentum and weight decay (Sections 3.4 and 4.2), the one the train
stage and the benchmarks alike build."""

from typing import Protocol

import torch


class SgdSettings(Protocol):
    """What SGD takes from the recipe: config.TrainParams has it (and so has train.cuda_check's settings,
    which is why this module does not import config and its pydantic)."""

    @property
    def lr(self) -> float: ...
    @property
    def momentum(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def no_weight_decay_on_bn_and_bias(self) -> bool: ...


def parameter_groups(model: torch.nn.Module, train: SgdSettings) -> list[dict]:
    """SGD parameter groups: all decayed (the paper), or, with train.no_weight_decay_on_bn_and_bias, BN
    scales/shifts and biases (every tensor of fewer than 2 dimensions) exempt from weight decay."""
    if not train.no_weight_decay_on_bn_and_bias:
        return [{"params": list(model.parameters()), "weight_decay": train.weight_decay}]
    decayed = [p for p in model.parameters() if p.ndim >= 2]
    exempt = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decayed, "weight_decay": train.weight_decay}, {"params": exempt, "weight_decay": 0.0}]


def optimizer_for(model: torch.nn.Module, train: SgdSettings) -> torch.optim.SGD:
    """SGD with the lr, momentum and weight decay of `train`; the loop sets each step's lr (PaperSchedule)."""
    return torch.optim.SGD(parameter_groups(model, train), lr=train.lr, momentum=train.momentum)
