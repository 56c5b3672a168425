"""The trained-model directory: the one format that training writes and evaluation and the registry read.

    model.safetensors        the state dict (tensors only: loading runs no code)
    preprocess.safetensors   `mean_image`, (3, H, W) on the 0..255 scale, for data.normalize
    model.json               arch name, number and names of classes, sha256 of both tensor files

A net is rebuilt from its arch name with `models.build`, then its tensors are loaded; the sha256 in
model.json is checked first, so a tampered or truncated file is refused.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from resnet_repro import models
from resnet_repro.io import atomic_write, file_sha256, write_json
from resnet_repro.models import weights
from resnet_repro.models.weights import DESCRIPTION, PREPROCESS, TENSOR_FILES, WEIGHTS


@dataclass
class TrainedModel:
    module: torch.nn.Module
    description: dict
    mean_image: torch.Tensor

    @property
    def class_names(self) -> list[str]:
        return self.description["class_names"]


def save_trained(directory: Path, module: torch.nn.Module, mean_image: torch.Tensor, description: dict) -> dict:
    """Write the three files; returns the description as written (with the sha256 of both tensor files)."""
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in module.state_dict().items()}
    atomic_write(directory / WEIGHTS, lambda temporary: save_file(tensors, str(temporary)))
    atomic_write(directory / PREPROCESS,
                 lambda temporary: save_file({"mean_image": mean_image.detach().float().cpu().contiguous()},
                                                   str(temporary)))
    description = {**description, **{key: file_sha256(directory / name) for name, key in TENSOR_FILES.items()}}
    write_json(directory / DESCRIPTION, description)
    return description


def verify(directory: Path, description: dict) -> None:
    for name, key in TENSOR_FILES.items():
        actual = file_sha256(directory / name)
        if actual != description[key]:
            raise ValueError(f"{directory / name}: sha256 is {actual}, but {DESCRIPTION} expects "
                             f"{description[key]}; the file was changed or damaged")


def load_trained(directory: Path, device: torch.device | str = "cpu") -> TrainedModel:
    """Rebuild, verify and load the net in `directory`; returned in eval mode on `device`."""
    directory = Path(directory)
    for name in (WEIGHTS, PREPROCESS, DESCRIPTION):
        if not (directory / name).exists():
            raise FileNotFoundError(f"{directory / name}: missing; a trained-model directory holds "
                                    f"{WEIGHTS}, {PREPROCESS} and {DESCRIPTION}")
    description = json.loads((directory / DESCRIPTION).read_text())
    verify(directory, description)
    module = models.build(description["arch"], num_classes=description["num_classes"])
    module.load_state_dict(load_file(str(directory / WEIGHTS)))
    mean_image = load_file(str(directory / PREPROCESS))["mean_image"]
    return TrainedModel(module.to(device).eval(), description, mean_image.to(device))


def load_published(ref: str, device: torch.device | str = "cpu") -> TrainedModel:
    """The published net `ref` ("MODEL:WEIGHTS", e.g. "resnet20:cifar10"; models.weights lists them),
    with the sha256 of its files checked against the ones published."""
    model, _, name = ref.partition(":")
    return load_trained(weights.lookup(model, name).files(), device)
