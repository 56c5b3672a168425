"""Prepared splits on disk: one uncompressed `<dir>/<split>.npz` per split, keys images and labels."""

import zipfile
from pathlib import Path

import numpy as np

from resnet_repro.data.errors import DataError, describe
from resnet_repro.io import atomic_write


def check_split_arrays(images: np.ndarray, labels: np.ndarray, source: str) -> None:
    """Raise DataError (naming `source`) unless images are uint8 (N, H, W, 3) with N integer labels."""
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
            and images.shape[3] == 3):
        raise DataError(f"{source}: images must be a uint8 array (N, H, W, 3), got {describe(images)}")
    if not (isinstance(labels, np.ndarray) and labels.dtype.kind in "iu" and labels.ndim == 1):
        raise DataError(f"{source}: labels must be a 1-D integer array, got {describe(labels)}")
    if len(labels) != len(images):
        raise DataError(f"{source}: {len(images)} images but {len(labels)} labels")


def split_path(directory: Path, split: str) -> Path:
    return Path(directory) / f"{split}.npz"


def write_split(directory: Path, split: str, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write one split to `<directory>/<split>.npz` (uncompressed: keys images, labels int64)."""
    path = split_path(directory, split)
    check_split_arrays(images, labels, str(path))

    def save(temporary: Path) -> None:
        # A file object, not a name: np.savez would append ".npz" to the temporary name.
        with open(temporary, "wb") as file:
            np.savez(file, images=images, labels=labels.astype(np.int64))

    atomic_write(path, save)
    return path


def read_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read `(images, labels)` written by write_split; DataError naming the file if missing or corrupt."""
    path = split_path(directory, split)
    if not path.is_file():
        raise DataError(f"{path}: prepared split {split!r} does not exist (run the prepare stage)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from error
    missing = {"images", "labels"} - arrays.keys()
    if missing:
        raise DataError(f"{path}: missing key(s) {sorted(missing)}; found {sorted(arrays)}")
    check_split_arrays(arrays["images"], arrays["labels"], str(path))
    return arrays["images"], arrays["labels"]
