"""One SGD step, the one every training runs (train.loop's `fit`, the benchmarks, the CUDA check).

It imports torch and the package's torch-only modules and nothing else, so that `train.cuda_check`
can run this very step on a GPU node that has nothing but torch and torchvision installed.
"""

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

from resnet_repro.device import autocast, autocast_dtype, resolve_compile
from resnet_repro.train.distributed import Processes

ONE_PROCESS = Processes()  # not distributed


class StepSettings(Protocol):
    """The speed paths of a step: config.TrainParams has them, and so has the CUDA check's own settings."""

    @property
    def precision(self) -> str: ...
    @property
    def channels_last(self) -> bool: ...
    @property
    def compile(self) -> str | bool: ...


class TrainingStep:
    """One SGD step on a batch: forward under autocast (train.precision), backward through the gradient
    scaler (fp16 only), optimizer step, in train.channels_last and compiled if train.compile says so.
    Nothing in it reads a value back from the device (torch's fp16 GradScaler aside, which checks for
    overflow); it returns the loss and logits as device tensors. Distributed (`processes`), the step
    averages the gradients over the processes."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, train: StepSettings,
                 device: torch.device, processes: Processes = ONE_PROCESS):
        self.model, self.optimizer, self.device, self.processes = model, optimizer, device, processes
        self.dtype = autocast_dtype(train.precision, device)
        self.memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
        # `model` keeps its plain state_dict keys for checkpoints and export; the step runs `forward`, which
        # averages the gradients over the processes (DDP) and is compiled, if asked, around that.
        forward: Callable[..., torch.Tensor] = model
        if processes.distributed:
            forward = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device] if device.type == "cuda" else None)
        if resolve_compile(train.compile, device):
            forward = torch.compile(forward)
        self.forward = forward
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images = images.contiguous(memory_format=self.memory_format)  # a no-op when the loader made it so
        with autocast(self.device, self.dtype):
            logits = self.forward(images)
            loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), logits.detach()
