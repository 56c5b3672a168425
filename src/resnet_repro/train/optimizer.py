"""The recipe's optimizer: SGD with momentum and weight decay (Sections 3.4 and 4.2), the one the train
stage and the benchmarks alike build."""

import torch

from resnet_repro.config import TrainParams


def parameter_groups(model: torch.nn.Module, train: TrainParams) -> list[dict]:
    """SGD parameter groups: all decayed (the paper), or, with train.no_weight_decay_on_bn_and_bias, BN
    scales/shifts and biases (every tensor of fewer than 2 dimensions) exempt from weight decay."""
    if not train.no_weight_decay_on_bn_and_bias:
        return [{"params": list(model.parameters()), "weight_decay": train.weight_decay}]
    decayed = [p for p in model.parameters() if p.ndim >= 2]
    exempt = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decayed, "weight_decay": train.weight_decay}, {"params": exempt, "weight_decay": 0.0}]


def optimizer_for(model: torch.nn.Module, train: TrainParams) -> torch.optim.SGD:
    """SGD with the lr, momentum and weight decay of `train`; the loop sets each step's lr (PaperSchedule)."""
    return torch.optim.SGD(parameter_groups(model, train), lr=train.lr, momentum=train.momentum)
