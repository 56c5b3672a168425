"""CIFAR images in FFCV's .beton format: writing them, and loading normalised batches on any device.

FFCV resets torch's intra-op thread count to its own worker count (to 1 on import, to num_workers
when a loader is built or an epoch starts). Left alone, CPU training would run with fewer threads
than cores, so every entry into FFCV below puts the caller's thread count back.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch


@contextmanager
def _torch_threads_preserved() -> Iterator[None]:
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


with _torch_threads_preserved():
    from ffcv.fields import IntField, RGBImageField
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, RandomTranslate, Squeeze, ToDevice, ToTensor, ToTorchImage
    from ffcv.writer import DatasetWriter

from resnet_repro.data.errors import DataError  # noqa: E402 (after the guarded ffcv import)
from resnet_repro.data.normalize import normalize  # noqa: E402
from resnet_repro.data.prepared import check_split_arrays  # noqa: E402
from resnet_repro.io import atomic_write  # noqa: E402

# The paper's CIFAR augmentation: 4 pixels of zero padding on each side, then a random 32x32 crop.
_CROP_PADDING = 4
# FFCV orders epoch e with the generator seeded by (its seed + e), so runs seeded 0 and 1 would see
# the same orders one epoch apart. Spreading our seeds this far apart keeps seeded runs independent.
_ORDER_SEED_STRIDE = 1 << 20


class _ImageLabelPairs:
    """The indexable (image, label) view that DatasetWriter reads from."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self._images = images
        self._labels = labels

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self._images[index], int(self._labels[index])


def write_beton(path: Path, images: np.ndarray, labels: np.ndarray, num_workers: int = 2) -> None:
    """Write uint8 NHWC `images` (stored raw, lossless) and their labels to the .beton at `path`.

    The file is written under a temporary name and renamed when complete, so an interrupted write
    never leaves a `.beton` that looks finished.
    """
    # Checked here because an exception inside one of FFCV's writer processes makes the parent
    # wait forever for samples that will never arrive.
    check_split_arrays(images, labels, str(path))
    fields = {"image": RGBImageField(write_mode="raw"), "label": IntField()}

    def write(temporary: Path) -> None:
        writer = DatasetWriter(str(temporary), fields, num_workers=num_workers)
        writer.from_indexed_dataset(_ImageLabelPairs(images, labels))

    atomic_write(Path(path), write)


class CifarLoader:
    """Batches `(images, labels)` from a .beton: images normalised float32 NCHW, labels int64.

    Both are on the loader's device. In training order the data order of epoch `e` depends only on
    (seed, e), so a resumed run sees the same order after `set_epoch(e)`. The random crops and flips
    are drawn by FFCV's compiled code from numba's own generator and are not reproducible.
    """

    def __init__(self, loader: Loader, mean_image: torch.Tensor):
        self._loader = loader
        self._mean_image = mean_image

    @property
    def num_images(self) -> int:
        """Images in the .beton (with drop_last, an epoch yields only the full batches of them)."""
        return self._loader.reader.num_samples

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self._loader)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce epoch `epoch` (0-based); iterating advances it by one."""
        self._loader.next_epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        threads = torch.get_num_threads()
        for images, labels in self._loader:
            # FFCV's epoch thread sets the (process-wide) thread count before it queues its first
            # batch, so only once a batch has arrived can we be sure to have the last word.
            torch.set_num_threads(threads)
            # FFCV recycles its output buffers a few batches later; normalize() makes a new tensor
            # for the images, and cloning the labels keeps them valid for callers that collect them.
            yield normalize(images, self._mean_image), labels.clone()


def make_loader(
    path: Path,
    *,
    batch_size: int,
    train: bool,
    mean_image: torch.Tensor,
    device: torch.device,
    num_workers: int = 2,
    seed: int = 0,
    drop_last: bool | None = None,
) -> CifarLoader:
    """A loader over the .beton at `path`.

    train=True: random order, zero-padded random 32x32 crop and random horizontal flip; drops the
    last partial batch unless drop_last=False. train=False: file order, no augmentation, and every
    image exactly once (drop_last=True is refused). `mean_image` is (3, H, W) on the 0..255 scale.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: .beton file does not exist (run the ffcv stage)")
    if drop_last is None:
        drop_last = train
    elif drop_last and not train:
        raise ValueError("drop_last=True would leave evaluation images uncounted")

    augmentation = [RandomHorizontalFlip(), RandomTranslate(padding=_CROP_PADDING)] if train else []
    # On CUDA, FFCV stages batches in pinned memory and copies them on side streams, hence
    # non_blocking. Each pipeline gets its own operations: FFCV keys its graph by operation object.
    pipelines = {
        "image": [SimpleRGBImageDecoder(), *augmentation, ToTensor(), ToDevice(device, non_blocking=True),
                  ToTorchImage()],
        # Squeeze only dim 1: squeezing all size-1 dims would turn a final batch of one into a scalar.
        "label": [IntDecoder(), ToTensor(), ToDevice(device, non_blocking=True), Squeeze(1)],
    }
    with _torch_threads_preserved():
        loader = Loader(
            str(path),
            batch_size=batch_size,
            num_workers=num_workers,
            order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL,
            seed=seed * _ORDER_SEED_STRIDE,
            drop_last=drop_last,
            pipelines=pipelines,
        )
    return CifarLoader(loader, mean_image.to(device=device, dtype=torch.float32))
