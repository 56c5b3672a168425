"""One way for the stages to get batches, whichever backend params.yaml names.

    loader = make_split_loader(params, layout, "train", train=True, batch_size=128,
                               mean_image=mean_image, device=device, seed=seed)

Both backends (ffcv_io.FfcvLoader, torch_loader.TorchLoader) are a `Loader`. A training loader
(train=True) shuffles, augments and drops the last partial batch of each epoch, so that every step has
a whole batch; an evaluation loader (train=False) reads the split in order, once, the last partial
batch included, so that every image is counted.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from resnet_repro.config import Params
from resnet_repro.data.augment import Augmentation, augmentation_for
from resnet_repro.data.imagefolder import read_list
from resnet_repro.data.prepared import read_split
from resnet_repro.data.stats import load_stats
from resnet_repro.layout import META, STATS, Layout, beton


@runtime_checkable
class Loader(Protocol):
    """Batches `(images, labels)`: images (N, 3, H, W) float32, (pixels - per-pixel mean) / 255, labels
    int64, both on the loader's device."""

    @property
    def num_images(self) -> int:
        """The images of the split (a training epoch yields only the whole batches of them)."""

    def __len__(self) -> int:
        """Batches in a whole epoch."""

    def set_epoch(self, epoch: int, first_batch: int = 0) -> None:
        """Make the next iteration yield epoch `epoch` (0-based) from its batch `first_batch` on (a resumed
        training); each iteration then advances the epoch by one. In training, the order of epoch e is a
        function of (seed, e) only."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of the current epoch."""


def split_names(layout: Layout) -> list[str]:
    """The splits the prepare stage wrote (train, and val and/or test), from its meta.json."""
    return list(json.loads((layout.prepared_dir / META).read_text())["sizes"])


def augmentation_from(params: Params, layout: Layout) -> Augmentation:
    return augmentation_for(params.data.dataset, params.augment, load_stats(layout.prepared_dir / STATS))


def make_split_loader(params: Params, layout: Layout, split: str, *, train: bool, batch_size: int,
                      mean_image: torch.Tensor, device: torch.device, seed: int = 0, rank: int = 0,
                      num_replicas: int = 1) -> Loader:
    """The loader of `split` for params.loader.backend: ffcv reads data/ffcv/<dataset>/<split>.beton,
    torch reads the prepared data directly. With `num_replicas` > 1 (data-parallel training) it yields
    this process's share, `rank`, of each epoch: every process the same number of batches."""
    augmentation = augmentation_from(params, layout)
    settings: dict[str, Any] = {"batch_size": batch_size, "train": train, "mean_image": mean_image, "device": device,
                                "num_workers": params.loader.num_workers, "seed": seed, "rank": rank,
                                "num_replicas": num_replicas}
    # Each backend is imported only when chosen: the torch backend must work where FFCV is not installed.
    if params.loader.backend == "ffcv":
        from resnet_repro.data.ffcv_io import make_loader

        return make_loader(layout.ffcv_dir / beton(split), augmentation=augmentation, **settings)
    from resnet_repro.data.torch_loader import ArrayImages, FileImages, TorchLoader

    dataset: ArrayImages | FileImages
    if params.data.dataset == "cifar10":
        dataset = ArrayImages(*read_split(layout.prepared_dir, split), augmentation, train)
    else:
        assert params.data.root is not None  # DataParams requires it for an image folder
        dataset = FileImages(read_list(layout.prepared_dir, split, Path(params.data.root)), augmentation, train)
    return TorchLoader(dataset, **settings)
