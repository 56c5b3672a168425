"""Published weights: nets this project trained and published in results/, loaded by name as torchvision's are.

    build("resnet20", weights="cifar10")             # models.build: the trained tensors, sha256 checked
    lookup("resnet20", "cifar10").meta               # recipe, commit, test error, parameters
    artifacts.load_published("resnet20:cifar10")     # with the mean image and class names it was trained with

Each entry of PUBLISHED names a results folder (`results/<folder>/`, written by scripts/publish_result.py,
which prints the entry's line) and pins the sha256 of its model.json, which records the sha256 of the two
tensor files (artifacts.py writes it so): one hash pins all three files. The files are taken from

1. the source checkout's own `results/<folder>/`, when this module runs from one (works offline);
2. else torch.hub's download cache, `$TORCH_HOME/hub/checkpoints/resnet_repro/<folder>-<sha256[:8]>/` (the
   hash prefix in the name, as torchvision's file names have, keeps a republished folder apart);
3. else they are downloaded there (torch.hub.download_url_to_file) from `<base URL>/<folder>/<file>`: the
   repository's raw files, or a copy of results/ served elsewhere, given by $RESNET_REPRO_WEIGHTS_URL.

Every file is checked each time it is used, wherever it came from, and a download is checked before it
is kept. A file whose sha256 differs is refused with its path; nothing is downloaded over it.
"""

import http.client
import json
import os
import sys
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch

from resnet_repro.io import file_sha256

# The repository's raw files. It is not public yet: until it is, this answers 404, and the files come from
# a checkout, the cache (put there by hand) or a mirror given by $RESNET_REPRO_WEIGHTS_URL.
BASE_URL = "https://raw.githubusercontent.com/OWNER/resnet-repro/main/results"
# Read here rather than in config.py: config.py sits above models/ in the layers (it builds nets to check
# study.variants), so this module cannot import it; layout.py's RESNET_REPRO_CHECKPOINTS is the same case.
BASE_URL_ENV = "RESNET_REPRO_WEIGHTS_URL"

# The trained-model directory of artifacts.py: model.json records the sha256 of the tensor files under these keys.
DESCRIPTION = "model.json"
TENSOR_FILES = {"model.safetensors": "weights_sha256", "preprocess.safetensors": "preprocess_sha256"}
ALL_FILES = (DESCRIPTION, *TENSOR_FILES)

_HERE = Path(__file__).resolve()
# A source checkout (src layout) has results/ beside src/; an installed package is not under a src/ folder.
CHECKOUT_RESULTS = _HERE.parents[3] / "results" if _HERE.parents[2].name == "src" else None


def base_url() -> str:
    return os.environ.get(BASE_URL_ENV, "").rstrip("/") or BASE_URL


@dataclass(frozen=True)
class Weights:
    """One published net: what `build(model, weights=name)` loads, and where its files are."""

    model: str  # the canonical model name they load into
    name: str  # what `weights=` says, e.g. "cifar10"
    folder: str  # its folder under results/ (and under the base URL)
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
    def url(self) -> str:
        """Where the weights file is downloaded from (model.json and preprocess.safetensors sit beside it)."""
        return self._url("model.safetensors")

    @property
    def meta(self) -> dict:
        return {"recipe": self.recipe, "commit": self.commit, "test_top1_error": self.test_top1_error,
                "parameters": self.parameters, "readme": self._url("README.md")}

    @property
    def cache_dir(self) -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints" / "resnet_repro" / f"{self.folder}-{self.sha256[:8]}"

    def files(self, progress: bool = True) -> Path:
        """The directory holding model.json and the two tensor files, each checked against its sha256:
        the checkout's results folder, else the cache, downloading there what it lacks."""
        checkout = CHECKOUT_RESULTS / self.folder if CHECKOUT_RESULTS else None
        from_checkout = checkout is not None and checkout.is_dir()
        directory = checkout if from_checkout else self.cache_dir
        description = self._checked(directory / DESCRIPTION, self.sha256, f"the published {self.ref}",
                                    not from_checkout, progress)
        recorded = json.loads(description.read_text())
        for file_name, key in TENSOR_FILES.items():
            self._checked(directory / file_name, recorded[key], str(description), not from_checkout, progress)
        return directory

    def get_state_dict(self, progress: bool = True) -> dict[str, torch.Tensor]:
        # Imported here: building a net (models.build) needs torch alone, also where safetensors is not
        # installed (train.cuda_check on a GPU node that has nothing but torch).
        from safetensors.torch import load_file

        return load_file(str(self.files(progress) / "model.safetensors"))

    def _url(self, file_name: str) -> str:
        return f"{base_url()}/{self.folder}/{file_name}"

    def _checked(self, path: Path, expected: str, expected_by: str, in_cache: bool, progress: bool) -> Path:
        """`path`, downloaded first if it is a cached file not there yet; ValueError if its sha256 differs."""
        if not path.is_file():
            if not in_cache:
                raise FileNotFoundError(f"{path}: missing; {self.ref} needs it")
            self._download(path, expected, expected_by, progress)
        actual = file_sha256(path)
        if actual != expected:
            remedy = "; delete it to download it again" if in_cache else ""
            raise ValueError(f"{path}: sha256 is {actual}, but {expected_by} expects {expected}; the file was "
                             f"changed or damaged{remedy}")
        return path

    def _download(self, path: Path, expected: str, expected_by: str, progress: bool) -> None:
        url = self._url(path.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f'Downloading: "{url}" to {path}', file=sys.stderr)  # as torch.hub's own downloads say
        try:
            # Written under a temporary name, renamed once whole and checked: no partial file is ever kept.
            torch.hub.download_url_to_file(url, str(path), hash_prefix=expected, progress=progress)
        except RuntimeError as error:  # torch.hub's "invalid hash value (expected ..., got ...)"
            raise ValueError(f"{url}: {error}, as {expected_by} expects; the file was not kept. Does "
                             f"{base_url()} serve this version's results/?") from None
        except (OSError, http.client.HTTPException) as error:  # urllib's URLError and HTTPError are OSErrors
            reason = (f"HTTP {error.code} {error.reason}" if isinstance(error, urllib.error.HTTPError)
                      else getattr(error, "reason", None) or error)
            raise ConnectionError(f"{url}: cannot download it ({reason}). Put the files of the repository's "
                                  f"results/{self.folder}/ ({', '.join(ALL_FILES)}) into {path.parent} by hand, "
                                  f"or set {BASE_URL_ENV} to a server of a copy of results/") from None


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
