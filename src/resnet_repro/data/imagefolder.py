"""ImageNet-style image folders: `root/train/<class>/*` and `root/val/<class>/*`.

The class index is the position of the class folder's name in the sorted list of train/'s class
folders. Real photo collections hold grayscale, CMYK and palette images, PNGs behind a .JPEG name,
EXIF-rotated photos, truncated, empty and non-image files: `load_rgb` turns every readable one into
upright RGB and refuses the rest with a reason, which the prepare stage lists in its skip report.
"""

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from resnet_repro.data.errors import DataError
from resnet_repro.data.views import center_view
from resnet_repro.io import atomic_write

SPLITS = ("train", "val")
_LAYOUT_HINT = "an image folder holds train/<class>/* and val/<class>/*"


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass(frozen=True)
class ImageFolder:
    """What a walk of the folder found: the classes, every file per split, and stray files."""

    root: Path
    class_names: list[str]
    samples: dict[str, list[Sample]]  # split -> every file inside a class folder, sorted by path
    strays: list[Skipped]  # files outside any class folder


def scan(root: Path) -> ImageFolder:
    """Walk `root`; DataError for a missing root or split, a train class with no files, or a val
    class that train does not have."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{root}: image folder does not exist ({_LAYOUT_HINT})")
    for split in SPLITS:
        if not (root / split).is_dir():
            raise DataError(f"{root}: has no {split}/ folder ({_LAYOUT_HINT})")
    class_names = sorted(entry.name for entry in (root / "train").iterdir() if entry.is_dir())
    if not class_names:
        raise DataError(f"{root / 'train'}: has no class folders ({_LAYOUT_HINT})")
    unknown = sorted(entry.name for entry in (root / "val").iterdir()
                     if entry.is_dir() and entry.name not in class_names)
    if unknown:
        raise DataError(f"{root / 'val'}: class folder(s) {unknown} do not exist in {root / 'train'}")

    samples: dict[str, list[Sample]] = {}
    strays: list[Skipped] = []
    for split in SPLITS:
        samples[split] = []
        for entry in sorted((root / split).iterdir()):
            if entry.is_file():
                strays.append(Skipped(entry, "not inside a class folder"))
        for label, name in enumerate(class_names):
            class_dir = root / split / name
            files = sorted(path for path in class_dir.rglob("*") if path.is_file()) if class_dir.is_dir() else []
            if split == "train" and not files:
                raise DataError(f"{class_dir}: class folder has no files; every class needs training images")
            samples[split] += [Sample(path, label) for path in files]
    return ImageFolder(root, class_names, samples, strays)


def load_rgb(path: Path) -> np.ndarray:
    """The image at `path` as upright uint8 RGB (H, W, 3), whatever its format, mode or extension.

    The whole file is decoded, so truncation is found here, not in the middle of training.
    DataError naming the file and the reason when it is not a readable image.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    try:
        # PIL only warns about images between MAX_IMAGE_PIXELS and twice that; both are refused alike.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                upright = ImageOps.exif_transpose(image)
                # Palette transparency must go through RGBA; a direct "RGB" conversion warns and may
                # pick the wrong colours.
                if upright.mode == "P":
                    upright = upright.convert("RGBA")
                return np.asarray(upright.convert("RGB"))
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DataError(f"{path}: too large to decode safely ({error})") from None
    # PIL reports broken files as OSError ("image file is truncated"), SyntaxError, ValueError or EOFError.
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise DataError(f"{path}: truncated or corrupt image ({error})") from None


def inspect(sample: Sample, crop_size: int, resize: int) -> tuple[np.ndarray | None, str | None]:
    """(the image's centre view, None) if `sample` is readable, else (None, why not).

    What the prepare stage's worker processes do with each file: the view, not the whole image,
    travels back to the parent, which streams it into the statistics.
    """
    try:
        return center_view(load_rgb(sample.path), crop_size, resize), None
    except DataError as error:
        return None, str(error).removeprefix(f"{sample.path}: ")


# --- the prepared file lists -----------------------------------------------------------------------

_LIST_COLUMNS = ("path", "label", "size", "mtime_ns")


def list_path(directory: Path, split: str) -> Path:
    return Path(directory) / f"{split}.tsv"


def write_list(directory: Path, split: str, root: Path, samples: list[Sample]) -> Path:
    """`<directory>/<split>.tsv`: path relative to `root`, label, and the size and mtime that
    read_list checks, so a file changed after prepare is noticed before it is written to FFCV."""
    path = list_path(directory, split)

    def write(temporary: Path) -> None:
        with open(temporary, "w", newline="") as file:
            writer = csv.writer(file, delimiter="\t", lineterminator="\n")
            writer.writerow(_LIST_COLUMNS)
            for sample in samples:
                status = sample.path.stat()
                writer.writerow((sample.path.relative_to(root).as_posix(), sample.label, status.st_size,
                                 status.st_mtime_ns))

    atomic_write(path, write)
    return path


def read_list(directory: Path, split: str, root: Path) -> list[Sample]:
    """The samples write_list wrote; DataError if the list is missing or a file changed since."""
    path = list_path(directory, split)
    if not path.is_file():
        raise DataError(f"{path}: prepared list {split!r} does not exist (run the prepare stage)")
    samples = []
    with open(path, newline="") as file:
        rows = csv.reader(file, delimiter="\t")
        if next(rows, None) != list(_LIST_COLUMNS):
            raise DataError(f"{path}: not a prepared image list (expected columns {_LIST_COLUMNS})")
        for relative, label, size, mtime_ns in rows:
            image = Path(root) / relative
            status = image.stat() if image.exists() else None
            if status is None or (status.st_size, status.st_mtime_ns) != (int(size), int(mtime_ns)):
                raise DataError(f"{image}: missing or changed since the prepare stage read it; run prepare again")
            samples.append(Sample(image, int(label)))
    return samples
