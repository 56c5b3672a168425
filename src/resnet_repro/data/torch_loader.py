"""The portable backend: a PyTorch DataLoader with albumentations, for machines without FFCV.

It reads the prepared data (CIFAR arrays or an image folder's file list) rather than the .beton
files, applies augment.albumentations_pipeline per image in worker processes, and yields what
ffcv_io.FfcvLoader yields, with the same contract (data.loading.Loader).

Training data is a function of (seed, epoch, position) only: the order of each epoch comes from
(seed, epoch), and each image's augmentation from (seed, epoch, index), whatever the worker count. A
resumed run (`set_epoch(epoch, first_batch)`) therefore sees exactly the batches it would have seen.
"""

import atexit
import hashlib
import math
import random
import signal
import weakref
from collections.abc import Iterator
from typing import NamedTuple

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from resnet_repro.data.augment import Augmentation, albumentations_pipeline
from resnet_repro.data.imagefolder import Sample, load_rgb
from resnet_repro.data.normalize import normalize
from resnet_repro.data.prepared import check_split_arrays


class Draw(NamedTuple):
    """What the training sampler hands a dataset: which image, and the (seed, epoch) its augmentation
    is drawn from. Evaluation hands plain indices."""

    image_index: int  # not `index`, which would hide tuple.index
    seed: int
    epoch: int


class _SampleRandomness:
    """Makes an albumentations pipeline's random draws a function of (seed, epoch, index) alone.

    Every transform of the pipeline shares one numpy Generator and one random.Random, reseeded in place
    before each image: the augmentation of an image no longer depends on which worker drew it or on what
    that worker drew before, so the data of a run is the same for any worker count and after a resume.
    (albumentations' own Compose.set_random_seed builds new generators per transform: 3x the cost of
    the augmentation itself.)
    """

    def __init__(self, transform: A.Compose):
        self._bits = np.random.PCG64()
        self._python = random.Random()
        generator = np.random.Generator(self._bits)
        for step in _all_transforms(transform):
            step.random_generator, step.py_random = generator, self._python

    def reseed(self, draw: Draw) -> None:
        key = hashlib.blake2b(f"{draw.seed},{draw.epoch},{draw.image_index}".encode(), digest_size=32).digest()
        self._bits.state = {"bit_generator": "PCG64", "has_uint32": 0, "uinteger": 0,
                            "state": {"state": int.from_bytes(key[:16], "little"),
                                      "inc": int.from_bytes(key[16:], "little") | 1}}
        self._python.seed(key)


def _all_transforms(transform):
    yield transform
    for child in getattr(transform, "transforms", []):
        yield from _all_transforms(child)


class _AugmentedImages(Dataset):
    def __init__(self, augmentation: Augmentation, train: bool):
        self.transform = albumentations_pipeline(augmentation, train)
        self._randomness = _SampleRandomness(self.transform)

    def _augment(self, image: np.ndarray, key: int | Draw) -> np.ndarray:
        if isinstance(key, Draw):
            self._randomness.reseed(key)
        return self.transform(image=image)["image"]

    @staticmethod
    def _index(key: int | Draw) -> int:
        return key.image_index if isinstance(key, Draw) else key


class ArrayImages(_AugmentedImages):
    """(augmented uint8 HWC image, label) pairs from in-memory uint8 NHWC arrays (CIFAR)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, augmentation: Augmentation, train: bool):
        check_split_arrays(images, labels, "ArrayImages")
        super().__init__(augmentation, train)
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | Draw) -> tuple[np.ndarray, int]:
        index = self._index(key)
        return self._augment(self.images[index], key), int(self.labels[index])


class FileImages(_AugmentedImages):
    """(augmented uint8 HWC image, label) pairs decoded from image files (image folders)."""

    def __init__(self, samples: list[Sample], augmentation: Augmentation, train: bool):
        super().__init__(augmentation, train)
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | Draw) -> tuple[np.ndarray, int]:
        sample = self.samples[self._index(key)]
        return self._augment(load_rgb(sample.path), key), sample.label


class _EpochOrder(Sampler):
    """Training: epoch e is a permutation that depends only on (seed, e), each index paired with the
    (seed, e) its augmentation is drawn from; iteration may start `start` samples in (a resume).
    With `num_replicas` > 1 (DDP) rank r takes every num_replicas-th sample of that permutation, and
    every rank the same number (the last size % num_replicas samples are left out of the epoch).
    Evaluation: file order, plain indices."""

    def __init__(self, size: int, seed: int, shuffle: bool, rank: int = 0, num_replicas: int = 1):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.num_replicas = rank, num_replicas
        self.epoch = self.start = 0

    @property
    def share(self) -> int:
        """Samples of this rank per epoch."""
        if self.shuffle:
            return self.size // self.num_replicas
        return len(range(self.rank, self.size, self.num_replicas))

    def __len__(self) -> int:
        return self.share - self.start

    def __iter__(self) -> Iterator[int | Draw]:
        if not self.shuffle:
            return iter(range(self.rank, self.size, self.num_replicas))
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        mine = order[self.rank::self.num_replicas][self.start:self.share].tolist()
        return iter([Draw(index, self.seed, self.epoch) for index in mine])


def _worker_init(worker_id: int) -> None:
    # A cluster's SIGTERM reaches every process of the job, and Ctrl-C every process of the terminal's
    # foreground group. The workers keep serving batches so that the main process can finish its step
    # and save a checkpoint; they end when it shuts them down (below) or dies.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _shut_down_workers(loader_ref: weakref.ref) -> None:
    # At exit, multiprocessing would stop the (persistent) workers with SIGTERM, which they ignore, and
    # then wait for them forever: end them the regular way first. (atexit runs this before
    # multiprocessing's own handler, which was registered earlier.)
    loader = loader_ref()
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


class TorchLoader:
    """Batches `(images, labels)` from a Dataset of this module: a data.loading.Loader.

    On CUDA, batches are collated into pinned memory and copied with non_blocking=True, so the copy
    overlaps the previous step. `rank`/`num_replicas` shard each epoch's order for DDP: each rank gets
    batch_size images of every global batch of batch_size * num_replicas.
    """

    def __init__(self, dataset: ArrayImages | FileImages, *, batch_size: int, train: bool, mean_image: torch.Tensor,
                 device: torch.device, num_workers: int, seed: int = 0, rank: int = 0,
                 num_replicas: int = 1):
        self._order = _EpochOrder(len(dataset), seed, shuffle=train, rank=rank, num_replicas=num_replicas)
        self._device = device
        self._batch_size = batch_size
        self._drop_last = train
        self._mean_image = mean_image.to(device=device, dtype=torch.float32)
        # Its own generator: creating the workers would otherwise draw from (and so shift) the global
        # torch RNG, which a resumed run must find exactly as it was saved.
        self._loader = DataLoader(dataset, batch_size=batch_size, sampler=self._order, num_workers=num_workers,
                                  drop_last=self._drop_last, pin_memory=device.type == "cuda",
                                  persistent_workers=num_workers > 0, worker_init_fn=_worker_init,
                                  generator=torch.Generator().manual_seed(seed))
        atexit.register(_shut_down_workers, weakref.ref(self._loader))

    @property
    def num_images(self) -> int:
        return self._order.size

    def __len__(self) -> int:
        """Batches in a whole epoch (of this rank)."""
        images = self._order.share
        return images // self._batch_size if self._drop_last else math.ceil(images / self._batch_size)

    def set_epoch(self, epoch: int, first_batch: int = 0) -> None:
        # The sampler starts at the batch: the batches before it are never loaded.
        self._order.epoch, self._order.start = epoch, first_batch * self._batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        try:
            for images, labels in self._loader:  # draws this epoch's order from the sampler
                images = images.to(self._device, non_blocking=True).permute(0, 3, 1, 2)
                yield normalize(images, self._mean_image), labels.to(self._device, non_blocking=True)
        finally:  # also when the caller stops mid-epoch
            self._order.epoch += 1
            self._order.start = 0
