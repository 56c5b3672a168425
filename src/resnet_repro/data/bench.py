"""Steady-state throughput of the training input pipelines: FFCV, the torch backend, and torchvision's
usual pipeline (PIL images + torchvision.transforms + DataLoader), with the same images, workers and
batch size. Only the pipelines run: no model, so the figure is the most images per second a training
could be fed.
"""

import itertools
import tempfile
import time
from collections.abc import Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

from resnet_repro.config import Params
from resnet_repro.data import cifar10, imagefolder
from resnet_repro.data.augment import Augmentation, augmentation_for
from resnet_repro.data.loading import Loader
from resnet_repro.data.stats import image_stats, mean_image_tensor
from resnet_repro.data.torch_loader import ArrayImages, FileImages, TorchLoader

CPU = torch.device("cpu")


@dataclass(frozen=True)
class BenchSettings:
    """What `bench loader` measures. Built by `from_params`: the batch and workers a training of the
    project gets, unless the command line sets them."""

    batch_size: int
    workers: int
    warmup_batches: int  # FFCV compiles its pipeline and DataLoader starts its workers here
    timed_batches: int

    @classmethod
    def from_params(cls, params: Params, *, warmup_batches: int, timed_batches: int, batch_size: int | None = None,
                    workers: int | None = None) -> Self:
        """`params`' train.batch_size and loader.num_workers, or `batch_size` and `workers` where given."""
        return cls(batch_size=params.train.batch_size if batch_size is None else batch_size,
                   workers=params.loader.num_workers if workers is None else workers,
                   warmup_batches=warmup_batches, timed_batches=timed_batches)


class DataLoaderBatches:
    """A plain torch DataLoader (torchvision's usual pipeline) as a data.loading.Loader: batches moved to
    `device`. The DataLoader shuffles each epoch its own way, so `set_epoch` has no order to set; a first
    batch other than 0 is reached by reading past the ones before it."""

    def __init__(self, loader: DataLoader, device: torch.device):
        self._loader, self._device = loader, device
        self._first_batch = 0

    @property
    def num_images(self) -> int:
        dataset = self._loader.dataset
        assert isinstance(dataset, Sized)  # torch's Dataset does not promise a length; these datasets have one
        return len(dataset)

    def __len__(self) -> int:
        return len(self._loader)

    def set_epoch(self, epoch: int, first_batch: int = 0) -> None:
        self._first_batch = first_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        skip, self._first_batch = self._first_batch, 0
        for images, labels in itertools.islice(self._loader, skip, None):
            yield images.to(self._device, non_blocking=True), labels.to(self._device, non_blocking=True)


def images_per_second(loader: Loader, settings: BenchSettings) -> float:
    """Images per second over `timed_batches` batches, after `warmup_batches`."""
    batches = _endless(loader)
    for _ in range(settings.warmup_batches):
        next(batches)
    counted, start = 0, time.perf_counter()
    for _ in range(settings.timed_batches):
        images, _ = next(batches)
        counted += len(images)
    return counted / (time.perf_counter() - start)


def _endless(loader: Loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


class PilArrays(Dataset):
    """What torchvision.datasets.CIFAR10 does per item: a PIL image from the array, then transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


# --- torchvision's usual pipeline: the baseline of `bench loader` and of `bench train` -------------

def torchvision_transforms(augmentation: Augmentation, stats: dict) -> transforms.Compose:
    """A typical PyTorch script's augmentation, at the sizes of `augmentation`: CIFAR's padded random
    crop, or ImageNet's random-resized crop, a flip, and per-channel normalisation."""
    crop = (transforms.RandomCrop(augmentation.crop_size, padding=augmentation.crop_padding)
            if augmentation.crop_padding else transforms.RandomResizedCrop(augmentation.crop_size))
    return transforms.Compose([crop, transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                               transforms.Normalize(stats["channel_mean"].tolist(), stats["channel_std"].tolist())])


def torchvision_loader(dataset: Dataset, batch_size: int, workers: int, device: torch.device) -> DataLoaderBatches:
    """A typical PyTorch script's loader over `dataset` (one of torchvision_transforms' outputs per item):
    a shuffling DataLoader, whole batches, moved to `device`."""
    return DataLoaderBatches(DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
        persistent_workers=workers > 0, pin_memory=device.type == "cuda",
        # By now this process runs FFCV's and numba's threads: forking it makes the C runtime print
        # warnings on stdout (where the JSON goes), so the workers start fresh.
        multiprocessing_context="spawn" if workers else None), device)


# --- bench loader ------------------------------------------------------------------------------------

def bench_cifar10(archive: Path, settings: BenchSettings, params: Params) -> dict:
    """The three pipelines on CIFAR-10's training set, with the augmentation of params.augment."""
    arrays = cifar10.load_archive(cifar10.fetch_archive(str(archive), Path(tempfile.gettempdir())))
    images, labels = arrays.train_images, arrays.train_labels
    stats = image_stats(images)
    augmentation = augmentation_for("cifar10", params.augment, stats)

    def write_ffcv(path: Path) -> None:
        from resnet_repro.data.ffcv_io import write_beton

        write_beton(path, images, labels)

    return _bench_all(write_ffcv, ArrayImages(images, labels, augmentation, train=True),
                      PilArrays(images, labels, torchvision_transforms(augmentation, stats)), augmentation, stats,
                      settings)


def bench_imagefolder(root: Path, settings: BenchSettings, params: Params) -> dict:
    """The three pipelines on the image folder `root` (train/<class>/*), with the augmentation of
    params.augment, written to FFCV as the ffcv stage writes it (params.data)."""
    folder = imagefolder.scan(root)
    augment, data = params.augment, params.data
    # Only readable files are benchmarked, as only they reach FFCV through the prepare stage: an
    # unreadable one makes FFCV's writer wait forever for the process it killed, and stops the
    # torch and torchvision pipelines mid-run. So every file is decoded once here, first.
    samples: list[imagefolder.Sample] = []
    views: list[np.ndarray] = []
    for sample in folder.samples["train"]:
        view, _ = imagefolder.inspect(sample, augment.crop_size, augment.eval_resize)
        if view is not None:
            samples.append(sample)
            # The statistics only shape the normalisation; a sample of views is as good as all of them.
            if len(views) < 256:
                views.append(view)
    skipped = len(folder.samples["train"]) - len(samples)
    stats = image_stats(np.stack(views))
    augmentation = augmentation_for("imagefolder", augment, stats)

    def write_ffcv(path: Path) -> None:
        from resnet_repro.data.ffcv_io import write_folder_beton

        write_folder_beton(path, samples, max_resolution=data.max_resolution, jpeg_quality=data.jpeg_quality,
                           compress_probability=data.compress_probability, num_workers=settings.workers)

    readable = {str(sample.path) for sample in samples}
    torchvision_dataset = datasets.ImageFolder(str(folder.root / "train"),
                                               transform=torchvision_transforms(augmentation, stats),
                                               is_valid_file=readable.__contains__)
    return {**_bench_all(write_ffcv, FileImages(samples, augmentation, train=True), torchvision_dataset,
                         augmentation, stats, settings), "images": len(samples), "skipped_files": skipped}


def _bench_all(write_ffcv, torch_dataset: ArrayImages | FileImages, torchvision_dataset: Dataset,
               augmentation: Augmentation, stats: dict, settings: BenchSettings) -> dict:
    from resnet_repro.data.ffcv_io import make_loader

    mean_image = mean_image_tensor(stats, size=augmentation.crop_size)
    common: dict[str, Any] = {"batch_size": settings.batch_size, "train": True, "mean_image": mean_image,
                              "device": CPU, "num_workers": settings.workers}
    with tempfile.TemporaryDirectory() as directory:
        beton = Path(directory) / "train.beton"
        write_ffcv(beton)
        ffcv = images_per_second(make_loader(beton, augmentation=augmentation, **common), settings)
    portable = images_per_second(TorchLoader(torch_dataset, **common), settings)
    torchvision = images_per_second(torchvision_loader(torchvision_dataset, settings.batch_size, settings.workers, CPU),
                                    settings)
    return {"ffcv_img_per_s": ffcv, "torch_img_per_s": portable, "torchvision_img_per_s": torchvision,
            "ffcv_over_torchvision": ffcv / torchvision, "batch_size": settings.batch_size,
            "workers": settings.workers, "timed_batches": settings.timed_batches}
