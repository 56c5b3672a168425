"""Published weights: nets this project trained and published in results/, loaded by name as torchvision's are.

    build("resnet20", weights="cifar10")             # models.build: the trained tensors, sha256 checked
    lookup("resnet20", "cifar10").meta               # recipe, commit, test error, parameters
    artifacts.load_published("resnet20:cifar10")     # with the mean image and class names it was trained with

Each entry of PUBLISHED names a results folder (`results/<folder>/`, written by scripts/publish_result.py,
which prints the entry's line) and pins the sha256 of its model.json, which records the sha256 of the two
tensor files (artifacts.py writes it so): one hash pins all three files. They are read from

- the checkout's own `results/<folder>/`, when this module runs from a source checkout (an editable
  install, or PYTHONPATH=src);
- else the package's `published/<folder>/` beside this module: setup.py copies the three files of every
  published folder there when it builds a wheel, so `pip install` brings them and no network is needed.

Every file is checked each time it is used; one whose sha256 differs is refused with its path. Nothing is
downloaded: the CIFAR nets are 1-4 MB each. A net too large for the wheel (an ImageNet ResNet is 100 MB or
more) would need a download from a real URL, with a timeout, and an error naming that URL.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from resnet_repro.io import file_sha256

# The files of a trained net's directory, named here alone: artifacts.py writes and reads them, a published
# folder holds them. model.json records the sha256 of each tensor file under its key.
DESCRIPTION, WEIGHTS, PREPROCESS = "model.json", "model.safetensors", "preprocess.safetensors"
TENSOR_FILES = {WEIGHTS: "weights_sha256", PREPROCESS: "preprocess_sha256"}
ALL_FILES = (DESCRIPTION, *TENSOR_FILES)
# How `resnet-repro predict --model` names published weights, MODEL:WEIGHTS (a registry reference has a
# / or an @ instead), so that it can tell them apart before it imports MLflow.
REF = re.compile(r"[\w.-]+:[\w.-]+")

_HERE = Path(__file__).resolve()
# A source checkout (src layout) has results/ beside src/: the published record, read as it is. Installed,
# the package is not under a src/ folder, and carries the files setup.py copied from results/ at build time.
CHECKOUT = _HERE.parents[2].name == "src"
IN_PACKAGE = "published"  # the folder beside this module that setup.py writes
RESULTS = _HERE.parents[3] / "results" if CHECKOUT else _HERE.with_name(IN_PACKAGE)


@dataclass(frozen=True)
class Weights:
    """One published net: what `build(model, weights=name)` loads, and where its files are."""

    model: str  # the canonical model name they load into
    name: str  # what `weights=` says, e.g. "cifar10"
    folder: str  # its folder under results/ (and under the package's published/)
    recipe: str  # the study it was trained in: `resnet-repro study select RECIPE` writes its params
    commit: str  # the commit that trained it
    test_top1_error: float  # eval.json's, on the whole test set
    parameters: int
    sha256: str  # of model.json, which holds the sha256 of the two tensor files

    @property
    def ref(self) -> str:
        """How `resnet-repro predict --model` names them: MODEL:WEIGHTS."""
        return f"{self.model}:{self.name}"

    @property
    def meta(self) -> dict:
        return {"recipe": self.recipe, "commit": self.commit, "test_top1_error": self.test_top1_error,
                "parameters": self.parameters, "readme": f"results/{self.folder}/README.md"}

    def files(self) -> Path:
        """The directory holding model.json and the two tensor files, each checked against its sha256."""
        directory = RESULTS / self.folder
        description = self._checked(directory / DESCRIPTION, self.sha256, f"the published {self.ref}")
        recorded = json.loads(description.read_text())
        for file_name, key in TENSOR_FILES.items():
            self._checked(directory / file_name, recorded[key], str(description))
        return directory

    def get_state_dict(self) -> dict[str, torch.Tensor]:
        # Imported here: building a net (models.build) needs torch alone, also where safetensors is not
        # installed (train.cuda_check on a GPU node that has nothing but torch).
        from safetensors.torch import load_file

        return load_file(str(self.files() / WEIGHTS))

    def _checked(self, path: Path, expected: str, expected_by: str) -> Path:
        """`path`; FileNotFoundError saying where it belongs if it is not there, ValueError if its sha256 differs."""
        if not path.is_file():
            if CHECKOUT:
                remedy = f"the repository publishes it there (`git checkout -- {path}` restores it)"
            else:
                remedy = (f"put the repository's results/{self.folder}/{path.name} there, or reinstall resnet-repro "
                          "(its wheel carries the file)")
            raise FileNotFoundError(f"{path}: missing; the published {self.ref} needs it: {remedy}")
        actual = file_sha256(path)
        if actual != expected:
            raise ValueError(f"{path}: sha256 is {actual}, but {expected_by} expects {expected}; the file was "
                             "changed or damaged")
        return path


def _index(*entries: Weights) -> dict[str, Weights]:
    index: dict[str, Weights] = {}
    for entry in entries:
        if entry.ref in index:
            raise ValueError(f"published weights {entry.ref} are listed twice")
        index[entry.ref] = entry
    return index


# One entry per published net: the line that scripts/publish_result.py prints for its folder.
PUBLISHED: dict[str, Weights] = _index(
    Weights("resnet20", "cifar10", "cifar10-resnet20", recipe="cifar-paper", commit="b9ab15f57cb0",
            test_top1_error=0.123, parameters=269722,
            sha256="dbbe54b0e2c6d30e300eca629c9f5a7e0f4e1e8be87c3e00383e9545c24dce9e"),
    Weights("plain20", "cifar10-8k", "cifar10-figure6-8k/plain20", recipe="cifar-figure6-8k", commit="79bb947f885b",
            test_top1_error=0.1836, parameters=269722,
            sha256="f8cf519837cc54db9f9b2da687242bb08de1574f61170939e88c6f14edcfb438"),
    Weights("plain56", "cifar10-8k", "cifar10-figure6-8k/plain56", recipe="cifar-figure6-8k", commit="79bb947f885b",
            test_top1_error=0.5005, parameters=853018,
            sha256="ccda8f44fadef9f8f90abef6e987843eb89055468404fb9e3c009b64b0d64501"),
    Weights("resnet20", "cifar10-8k", "cifar10-figure6-8k/resnet20", recipe="cifar-figure6-8k", commit="79bb947f885b",
            test_top1_error=0.1608, parameters=269722,
            sha256="addc0960627f7d795daa9463dbcdabced596193128cd6d8d725daf48a300fda0"),
    Weights("resnet56", "cifar10-8k", "cifar10-figure6-8k/resnet56", recipe="cifar-figure6-8k", commit="79bb947f885b",
            test_top1_error=0.1773, parameters=853018,
            sha256="c01a70921e8d0723d948395c6072a771507dda9a1b9ea9e900907b76f4e9334f"),
)


def lookup(model: str, name: str) -> Weights:
    """The published weights `name` of `model`; LookupError listing those that exist."""
    found = PUBLISHED.get(f"{model}:{name}")
    if found is None:
        known = ", ".join(sorted(PUBLISHED)) or "none"
        raise LookupError(f"no published weights {name!r} for {model}; published (MODEL:WEIGHTS): {known}")
    return found
