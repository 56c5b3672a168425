"""Images in FFCV's .beton format: writing them, and loading augmented, normalised batches on any device.

FFCV resets torch's intra-op thread count to its own worker count (to 1 on import, to num_workers
when a loader is built or an epoch starts). Left alone, CPU training would run with fewer threads
than cores, so every entry into FFCV below puts the caller's thread count back.

numba compiles FFCV's pipeline in every process. On a 2-core CPU each train@ and evaluate@ stage paid
2-4 s for it in `import ffcv` (ffcv/fields/rgb_image.py fills a numba typed Dict, which compiles numba's
dict functions), and a train@ stage 8-10 s more at its first batch (RandomTranslate and
RandomHorizontalFlip). numba can keep compiled code on disk (in a __pycache__ beside the package's
sources, or in NUMBA_CACHE_DIR), but neither FFCV 1.0.2 nor numba's dict asks it to. We ask, for the
functions of those two pinned packages only: numba checks a cached function against its own source
file, not against the files of the functions it calls, so this repository's operations (ffcv_ops),
which call data.augment, are compiled afresh in every process. Functions that call C through ctypes
(FFCV's image decoders) cannot be cached at all; numba says so with a warning, silenced below.
`resnet-repro bench startup` measures what is left.
"""

import itertools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from numba.core.dispatcher import Dispatcher
from numba.core.errors import NumbaWarning
from numba.typed import typeddict


@contextmanager
def _torch_threads_preserved() -> Iterator[None]:
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _cache_on_disk(function: Dispatcher) -> None:
    try:
        function.enable_caching()
    except RuntimeError:  # no writable cache directory: compiled in every process, as before
        pass


for _function in (typeddict._make_dict, typeddict._setitem, typeddict._getitem):  # what `import ffcv` compiles
    _cache_on_disk(_function)

with _torch_threads_preserved():
    from ffcv.fields import IntField, RGBImageField
    from ffcv.fields.decoders import CenterCropRGBImageDecoder, IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.pipeline.compiler import Compiler
    from ffcv.transforms import (
        RandomHorizontalFlip,
        RandomTranslate,
        Squeeze,
        ToDevice,
        ToTensor,
        ToTorchImage,
    )
    from ffcv.writer import DatasetWriter

    from resnet_repro.data.ffcv_ops import (
        ColorJitterOperation,
        PCALightingOperation,
        ScaleAugmentationDecoder,
    )

from resnet_repro.data.augment import Augmentation
from resnet_repro.data.errors import DataError
from resnet_repro.data.imagefolder import Sample, load_rgb
from resnet_repro.data.normalize import normalize
from resnet_repro.data.prepared import check_split_arrays
from resnet_repro.io import atomic_write

_compile_in_memory = Compiler.compile


def _compile_with_disk_cache(code, signature=None):
    """FFCV's Compiler.compile (njit, parallel where the operation allows), with numba's disk cache for
    FFCV's own functions. numba keys a cached function by its bytecode and closure, not by njit's
    options. The one option FFCV varies is parallel (with more than one worker), and the operations
    used here capture the range that goes with it (prange, else range): each variant is cached apart."""
    if not code.__module__.startswith("ffcv."):
        return _compile_in_memory(code, signature)
    compiled = _compile_in_memory(code)  # no signature yet: njit would compile before the cache is attached
    if isinstance(compiled, Dispatcher):  # (not when FFCV's compilation is switched off)
        _cache_on_disk(compiled)
        if signature is not None:  # then what njit does with one (FFCV's file reader has one)
            compiled.compile(signature)
            compiled.disable_compile()
    return compiled


Compiler.compile = staticmethod(_compile_with_disk_cache)
warnings.filterwarnings("ignore", message=".*Cannot cache compiled function", category=NumbaWarning)

# FFCV orders epoch e with the generator seeded by (its seed + e), so runs seeded 0 and 1 would see
# the same orders one epoch apart. Spreading our seeds this far apart keeps seeded runs independent.
_ORDER_SEED_STRIDE = 1 << 20


class _ImageLabelPairs:
    """The indexable (image, label) view of arrays that DatasetWriter reads from."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self._images = images
        self._labels = labels

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self._images[index], int(self._labels[index])


class _DecodedFiles:
    """The indexable (image, label) view of image files: each is decoded when its writer asks for it,
    so memory holds a chunk of images, never the dataset."""

    def __init__(self, samples: list[Sample]):
        self._samples = samples

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        sample = self._samples[index]
        return load_rgb(sample.path), sample.label


def _write(path: Path, pairs, image_field: RGBImageField, num_workers: int) -> None:
    """Write (image, label) pairs under a temporary name, renamed when complete: an interrupted write
    never leaves a `.beton` that looks finished."""
    fields = {"image": image_field, "label": IntField()}

    def write(temporary: Path) -> None:
        writer = DatasetWriter(str(temporary), fields, num_workers=num_workers)
        writer.from_indexed_dataset(pairs)

    atomic_write(Path(path), write)


def write_beton(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write uint8 NHWC `images` (stored raw, lossless) and their labels to the .beton at `path`.

    One writer process, always, which makes the file the same bytes every time: FFCV's parallel
    writers fill pages in the order they finish, so DVC's hash of the ffcv stage's output (and with it
    the train stages' lock entries and run-cache keys) would differ from clone to clone. Raw CIFAR-size
    images take seconds either way.
    """
    # Checked here because an exception inside one of FFCV's writer processes makes the parent
    # wait forever for samples that will never arrive.
    check_split_arrays(images, labels, str(path))
    _write(path, _ImageLabelPairs(images, labels), RGBImageField(write_mode="raw"), num_workers=1)


def write_folder_beton(path: Path, samples: list[Sample], *, max_resolution: int, jpeg_quality: int,
                       compress_probability: float, num_workers: int) -> None:
    """Write image files (checked readable by the prepare stage) to the .beton at `path`.

    Each image is scaled down so its longer side is at most `max_resolution`, then stored as JPEG
    at `jpeg_quality` with probability `compress_probability`, else as raw pixels.
    """
    field = RGBImageField(write_mode="proportion", max_resolution=max_resolution, jpeg_quality=jpeg_quality,
                          compress_probability=compress_probability)
    _write(path, _DecodedFiles(samples), field, num_workers)


class FfcvLoader:
    """Batches `(images, labels)` from a .beton: a data.loading.Loader.

    In training order the data order of epoch `e` depends only on (seed, e), so a resumed run sees the
    same order after `set_epoch(e, first_batch)`. The random augmentations are drawn by FFCV's compiled
    code from numba's own generator and are not reproducible.
    """

    def __init__(self, loader: Loader, mean_image: torch.Tensor):
        self._loader = loader
        self._mean_image = mean_image
        self._first_batch = 0

    @property
    def num_images(self) -> int:
        return self._loader.reader.num_samples

    def __len__(self) -> int:
        return len(self._loader)

    def set_epoch(self, epoch: int, first_batch: int = 0) -> None:
        self._loader.next_epoch = epoch
        self._first_batch = first_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        threads = torch.get_num_threads()
        # FFCV can only start an epoch at its beginning: the batches before `first_batch` are read and dropped.
        skip, self._first_batch = self._first_batch, 0
        for images, labels in itertools.islice(self._loader, skip, None):
            # FFCV's epoch thread sets the (process-wide) thread count before it queues its first
            # batch, so only once a batch has arrived can we be sure to have the last word.
            torch.set_num_threads(threads)
            # FFCV recycles its output buffers a few batches later; normalize() makes a new tensor
            # for the images, and cloning the labels keeps them valid for callers that collect them.
            yield normalize(images, self._mean_image), labels.clone()


def make_loader(
    path: Path,
    *,
    augmentation: Augmentation,
    batch_size: int,
    train: bool,
    mean_image: torch.Tensor,
    device: torch.device,
    num_workers: int,
    seed: int = 0,
    rank: int = 0,
    num_replicas: int = 1,
) -> FfcvLoader:
    """A loader over the .beton at `path`.

    train=True: random order and `augmentation`, whole batches. train=False: file order, the evaluation
    view of `augmentation`, and every image exactly once. `mean_image` is (3, H, W) on the 0..255 scale.
    num_replicas > 1: FFCV's distributed mode, which reads rank and world size from the initialised
    torch.distributed process group (a DistributedSampler of each epoch's order).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: .beton file does not exist (run the ffcv stage)")
    if num_replicas > 1:
        import torch.distributed as dist

        if not dist.is_initialized() or (dist.get_rank(), dist.get_world_size()) != (rank, num_replicas):
            raise RuntimeError(f"FFCV's distributed loading needs the process group of rank {rank} of "
                               f"{num_replicas} initialised first")
    # On CUDA, FFCV stages batches in pinned memory and copies them on side streams, hence
    # non_blocking. Each pipeline gets its own operations: FFCV keys its graph by operation object.
    pipelines = {
        "image": [*_image_operations(augmentation, train), ToTensor(), ToDevice(device, non_blocking=True),
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
            drop_last=train,
            pipelines=pipelines,
            distributed=num_replicas > 1,
        )
    return FfcvLoader(loader, mean_image.to(device=device, dtype=torch.float32))


def _image_operations(augmentation: Augmentation, train: bool) -> list:
    """Decoder and augmentation: the FFCV counterpart of augment.albumentations_pipeline."""
    crop = (augmentation.crop_size, augmentation.crop_size)
    if not train:
        if augmentation.eval_resize is None:
            return [SimpleRGBImageDecoder()]
        return [CenterCropRGBImageDecoder(crop, ratio=augmentation.crop_size / augmentation.eval_resize)]
    if augmentation.shorter_side_range is not None:
        operations = [ScaleAugmentationDecoder(augmentation.crop_size, augmentation.shorter_side_range)]
    else:
        operations = [SimpleRGBImageDecoder(), RandomTranslate(padding=augmentation.crop_padding)]
    if augmentation.flip:
        operations.append(RandomHorizontalFlip())
    if augmentation.color_jitter:
        operations.append(ColorJitterOperation(augmentation.color_jitter))
    if augmentation.lighting_std:
        operations.append(PCALightingOperation(augmentation.lighting_std, augmentation.eigval_array,
                                               augmentation.eigvec_array))
    return operations
