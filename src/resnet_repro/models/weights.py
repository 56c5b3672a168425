"""Published weights: nets this project trained at full length and published with their results.

`build("resnet20", weights="cifar10")` loads them, as torchvision's `weights=` does. Each entry pins
the sha256 of its files, so a changed or damaged file is refused with its name. The files live in the
repository's results folder (`results/cifar10-resnet20/`, with the run's README, metrics and curves);
outside a checkout, copy that folder into $RESNET_REPRO_WEIGHTS or $TORCH_HOME/hub/checkpoints/resnet_repro.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from resnet_repro.io import file_sha256

REPOSITORY_RESULTS = Path(__file__).resolve().parents[3] / "results"


@dataclass(frozen=True)
class PublishedWeights:
    model: str  # the canonical model name they load into
    name: str  # what `weights=` says, e.g. "cifar10"
    folder: str  # the results folder's name
    sha256: dict[str, str]  # file name -> sha256
    test_top1_error: float  # eval.json's, a fraction of the full test set
    description: str

    @property
    def ref(self) -> str:
        """How `resnet-repro predict --model` names them: MODEL:WEIGHTS."""
        return f"{self.model}:{self.name}"


PUBLISHED: dict[str, PublishedWeights] = {}


def _register(weights: PublishedWeights) -> None:
    PUBLISHED[weights.ref] = weights


def lookup(model: str, name: str) -> PublishedWeights:
    """The published weights `name` of `model`; LookupError listing those that exist."""
    found = PUBLISHED.get(f"{model}:{name}")
    if found is None:
        known = ", ".join(sorted(PUBLISHED)) or "none"
        raise LookupError(f"no published weights {name!r} for {model}; published (MODEL:WEIGHTS): {known}")
    return found


def _search_path() -> list[Path]:
    places = [REPOSITORY_RESULTS]
    if os.environ.get("RESNET_REPRO_WEIGHTS"):
        places.insert(0, Path(os.environ["RESNET_REPRO_WEIGHTS"]))
    places.append(Path(torch.hub.get_dir()) / "checkpoints" / "resnet_repro")
    return places


def folder(weights: PublishedWeights) -> Path:
    """The results folder holding `weights`, with every pinned file's sha256 checked."""
    places = [place / weights.folder for place in _search_path()]
    directory = next((place for place in places if place.is_dir()), None)
    if directory is None:
        raise FileNotFoundError(f"the files of {weights.ref} ({weights.folder}/) are in none of: "
                                f"{', '.join(map(str, places))}")
    for file_name, expected in weights.sha256.items():
        path = directory / file_name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; {weights.ref} needs it")
        actual = file_sha256(path)
        if actual != expected:
            raise ValueError(f"{path}: sha256 is {actual}, but the published {weights.ref} is {expected}; "
                             f"the file was changed or damaged")
    return directory


def load_state_dict(weights: PublishedWeights) -> dict[str, torch.Tensor]:
    return load_file(str(folder(weights) / "model.safetensors"))


_register(PublishedWeights(
    model="resnet20",
    name="cifar10",
    folder="cifar10-resnet20",
    sha256={
        "model.safetensors": "602087a1c6ded4a1845efe3a099e128e8ad6631725fa289fe8e1bb8d408d491e",
        "preprocess.safetensors": "0b25acdcd13c58ca2ef45c5dc9c646a806396f1b57a88c9452bde51207245d17",
        "model.json": "dbbe54b0e2c6d30e300eca629c9f5a7e0f4e1e8be87c3e00383e9545c24dce9e",
    },
    test_top1_error=0.123,
    description="ResNet-20 (option A shortcuts), seed 0, the CIFAR recipe of Section 4.2 at full length (64k "
                "iterations) on this project's JPEG-rebuilt CIFAR-10; 12.30% test error against the paper's "
                "8.75% (Table 6)",
))
