"""The portable backend: a PyTorch DataLoader with albumentations, for machines without FFCV.

It reads the prepared data (CIFAR arrays or an image folder's file list) rather than the .beton
files, applies augment.albumentations_pipeline per image in worker processes, and yields what
ffcv_io.FfcvLoader yields: normalised float32 NCHW images and int64 labels on the device, with the
same epoch-order contract.
"""

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from resnet_repro.data.augment import Augmentation, albumentations_pipeline
from resnet_repro.data.imagefolder import Sample, load_rgb
from resnet_repro.data.loading import resolve_drop_last
from resnet_repro.data.normalize import normalize
from resnet_repro.data.prepared import check_split_arrays


class ArrayImages(Dataset):
    """(augmented uint8 HWC image, label) pairs from in-memory uint8 NHWC arrays (CIFAR)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, augmentation: Augmentation, train: bool):
        check_split_arrays(images, labels, "ArrayImages")
        self.images, self.labels = images, labels
        self.transform = albumentations_pipeline(augmentation, train)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.transform(image=self.images[index])["image"], int(self.labels[index])


class FileImages(Dataset):
    """(augmented uint8 HWC image, label) pairs decoded from image files (image folders)."""

    def __init__(self, samples: list[Sample], augmentation: Augmentation, train: bool):
        self.samples = samples
        self.transform = albumentations_pipeline(augmentation, train)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        sample = self.samples[index]
        return self.transform(image=load_rgb(sample.path))["image"], sample.label


class _EpochOrder(Sampler[int]):
    """Training order of epoch e: a permutation that depends only on (seed, e). Evaluation: file order."""

    def __init__(self, size: int, seed: int, shuffle: bool):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.epoch = 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.size))
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.size).tolist())


def _seed_worker_augmentation(worker_id: int) -> None:
    # Each worker starts with a copy of the same albumentations generator; without a reseed, all
    # workers would draw the same crops and flips. torch gives every worker a distinct initial seed.
    get_worker_info().dataset.transform.set_random_seed(torch.initial_seed() % 2**32)


class TorchLoader:
    """Batches `(images, labels)`: the interface and contract of ffcv_io.FfcvLoader."""

    def __init__(self, dataset: Dataset, *, batch_size: int, train: bool, mean_image: torch.Tensor,
                 device: torch.device, num_workers: int = 2, seed: int = 0, drop_last: bool | None = None):
        self._order = _EpochOrder(len(dataset), seed, shuffle=train)
        self._device = device
        self._mean_image = mean_image.to(device=device, dtype=torch.float32)
        self._loader = DataLoader(dataset, batch_size=batch_size, sampler=self._order, num_workers=num_workers,
                                  drop_last=resolve_drop_last(train, drop_last), pin_memory=device.type == "cuda",
                                  persistent_workers=num_workers > 0, worker_init_fn=_seed_worker_augmentation)

    @property
    def num_images(self) -> int:
        return self._order.size

    def __len__(self) -> int:
        return len(self._loader)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce epoch `epoch` (0-based); iterating advances it by one."""
        self._order.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = iter(self._loader)  # draws this epoch's order from the sampler
        self._order.epoch += 1
        for images, labels in batches:
            images = images.to(self._device, non_blocking=True).permute(0, 3, 1, 2)
            yield normalize(images, self._mean_image), labels.to(self._device, non_blocking=True)
