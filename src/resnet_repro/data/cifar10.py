"""The CIFAR-10 "python version" archive: fetch it, read it safely, split it.

The archive holds `cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`, each a
Python-2 pickle. Pickles can run arbitrary code when loaded, so they go through an unpickler that
admits only the numpy globals these files need; everything read is checked before it is used.
"""

import hashlib
import http.client
import io
import pickle
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy._core.multiarray import _reconstruct
from tqdm import tqdm

from resnet_repro.data.errors import DataError, describe
from resnet_repro.io import atomic_write

OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
CLASS_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]

_BATCH_DIR = "cifar-10-batches-py"
_TRAIN_MEMBERS = tuple(f"{_BATCH_DIR}/data_batch_{i}" for i in range(1, 6))
_TEST_MEMBER = f"{_BATCH_DIR}/test_batch"
_META_MEMBER = f"{_BATCH_DIR}/batches.meta"
_IMAGES_PER_BATCH = 10_000
_PIXELS_PER_IMAGE = 3 * 32 * 32

# Every global the real pickles reference (listed with pickletools): numpy's array reconstruction.
# numpy 2 renamed numpy.core to numpy._core, so newer pickles may name either module.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}

_DOWNLOAD_CHUNK_BYTES = 1 << 20
_DOWNLOAD_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Cifar10Arrays:
    train_images: np.ndarray  # (50000, 32, 32, 3) uint8, NHWC, RGB
    train_labels: np.ndarray  # (50000,) int64 in 0..9
    test_images: np.ndarray  # (10000, 32, 32, 3) uint8
    test_labels: np.ndarray  # (10000,) int64
    class_names: list[str]  # label -> name


def fetch_archive(source: str, raw_dir: Path, md5: str | None = OFFICIAL_MD5) -> Path:
    """Return the local path of the CIFAR-10 archive that `source` names.

    An http(s) URL is downloaded into `raw_dir`, checked against `md5` (None skips the check) and
    reused on later calls once verified. A local path is used in place, not copied; its md5 is not
    checked, because rebuilt copies of CIFAR-10 legitimately differ from the official archive:
    load_archive validates the contents instead.
    """
    if urllib.parse.urlsplit(source).scheme in ("http", "https"):
        return _download(source, Path(raw_dir), md5)
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(f"CIFAR-10 archive {path} does not exist")
    return path.resolve()


def _download(url: str, raw_dir: Path, md5: str | None) -> Path:
    destination = raw_dir / (Path(urllib.parse.urlsplit(url).path).name or "cifar-10-python.tar.gz")
    if destination.is_file() and (md5 is None or _md5_of(destination) == md5):
        return destination

    def download_verified(temporary: Path) -> None:
        actual_md5 = _stream_to_file(url, temporary)
        if md5 is not None and actual_md5 != md5:
            raise DataError(f"{url}: downloaded file has md5 {actual_md5}, expected {md5}")

    atomic_write(destination, download_verified)
    return destination


def _stream_to_file(url: str, path: Path) -> str:
    """Download `url` to `path` with a progress bar; return the md5 of what was written."""
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_SECONDS) as response:
            size = int(response.headers.get("Content-Length") or 0) or None
            with open(path, "wb") as file, tqdm(
                total=size, unit="B", unit_scale=True, desc=f"download {url}"
            ) as progress:
                while chunk := response.read(_DOWNLOAD_CHUNK_BYTES):
                    file.write(chunk)
                    digest.update(chunk)
                    progress.update(len(chunk))
    # URLError covers refused connections, DNS failures and HTTP error codes; a dropped
    # connection surfaces as an HTTPException (IncompleteRead) or an OSError (timeout, reset).
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise DataError(
            f"cannot download {url}: {error}. If this machine has no network access, download the "
            "archive elsewhere and set data.archive to its local path."
        ) from error
    return digest.hexdigest()


def _md5_of(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "md5").hexdigest()


def load_archive(path: Path) -> Cifar10Arrays:
    """Read and validate the CIFAR-10 python archive straight from the .tar.gz (nothing is extracted)."""
    path = Path(path)
    pickles = _read_members(path, {_META_MEMBER, _TEST_MEMBER, *_TRAIN_MEMBERS})
    class_names = _class_names(pickles[_META_MEMBER], path)
    train = [_batch_arrays(pickles[member], path, member) for member in _TRAIN_MEMBERS]
    test_images, test_labels = _batch_arrays(pickles[_TEST_MEMBER], path, _TEST_MEMBER)
    return Cifar10Arrays(
        train_images=np.concatenate([images for images, _ in train]),
        train_labels=np.concatenate([labels for _, labels in train]),
        test_images=test_images,
        test_labels=test_labels,
        class_names=class_names,
    )


def _read_members(path: Path, wanted: set[str]) -> dict[str, object]:
    """Unpickle the `wanted` members of the archive at `path`, keyed by member name."""
    if not path.is_file():
        raise DataError(f"CIFAR-10 archive {path} does not exist")
    contents = {}
    reading = None
    try:
        # Stream mode reads the archive once, front to back; random access would decompress the
        # gzip stream from the start again for every member.
        with tarfile.open(path, mode="r|gz") as archive:
            for member in archive:
                if member.name in wanted:
                    reading = member.name
                    member_file = archive.extractfile(member)
                    assert member_file is not None, f"{member.name} is not a regular file"
                    contents[member.name] = _unpickle(member_file.read(), path, member.name)
                    reading = None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        where = f" while reading member {reading}" if reading else ""
        raise DataError(f"{path}: not a readable .tar.gz archive{where} ({error})") from error
    missing = sorted(wanted - contents.keys())
    if missing:
        raise DataError(f"{path}: archive has no member {', '.join(missing)}")
    return contents


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles Python-2 CIFAR batches, refusing every global outside _ALLOWED_GLOBALS."""

    def __init__(self, data: bytes, archive: Path, member: str):
        # The files are Python-2 pickles: encoding="bytes" keeps their str keys as bytes (b"data").
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._where = f"{archive}: member {member}"

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._where}: refused to load global {module}.{name}; a CIFAR-10 batch only "
                "needs numpy arrays, so this file is not a genuine one"
            ) from None


def _unpickle(data: bytes, archive: Path, member: str) -> object:
    try:
        return _RestrictedUnpickler(data, archive, member).load()
    except DataError:
        raise
    # A corrupt pickle fails in many ways (UnpicklingError, EOFError, ValueError, TypeError, ...).
    except Exception as error:
        raise DataError(f"{archive}: member {member} is not a valid pickle ({error!r})") from error


def _class_names(meta: object, archive: Path) -> list[str]:
    where = f"{archive}: member {_META_MEMBER}"
    names = _required_key(meta, b"label_names", where)
    if not isinstance(names, list) or not all(isinstance(name, bytes) for name in names):
        raise DataError(f"{where}: key 'label_names' must be a list of strings, got {describe(names)}")
    decoded = [name.decode("ascii", errors="replace") for name in names]
    if decoded != CLASS_NAMES:
        raise DataError(f"{where}: key 'label_names' is {decoded}, expected CIFAR-10's {CLASS_NAMES}")
    return decoded


def _batch_arrays(batch: object, archive: Path, member: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one batch dict; return its images as (N, 32, 32, 3) NHWC and labels as int64."""
    where = f"{archive}: member {member}"
    data = _required_key(batch, b"data", where)
    expected_shape = (_IMAGES_PER_BATCH, _PIXELS_PER_IMAGE)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape == expected_shape):
        raise DataError(f"{where}: key 'data' must be a uint8 array of shape {expected_shape}, "
                        f"got {describe(data)}")
    labels = _labels_array(_required_key(batch, b"labels", where), where)
    if len(labels) != len(data):
        raise DataError(f"{where}: key 'labels' has {len(labels)} entries for {len(data)} images")
    out_of_range = np.flatnonzero((labels < 0) | (labels >= len(CLASS_NAMES)))
    if out_of_range.size:
        row = out_of_range[0]
        raise DataError(f"{where}: key 'labels' has value {labels[row]} at row {row}, "
                        f"outside 0..{len(CLASS_NAMES) - 1}")
    # Each row stores the R plane, then G, then B, each 32x32 row-major: CHW -> HWC.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def _required_key(batch: object, key: bytes, where: str) -> object:
    if not isinstance(batch, dict):
        raise DataError(f"{where}: expected a pickled dict, got {describe(batch)}")
    if key not in batch:
        present = sorted(k.decode("ascii", errors="replace") if isinstance(k, bytes) else repr(k) for k in batch)
        raise DataError(f"{where}: key {key.decode()!r} is missing (keys present: {present})")
    return batch[key]


def _labels_array(labels: object, where: str) -> np.ndarray:
    if isinstance(labels, list) and all(type(label) is int for label in labels):
        return np.array(labels, dtype=np.int64)
    raise DataError(f"{where}: key 'labels' must be a list of integers, got {describe(labels)}")


def split_indices(
    labels: np.ndarray, subset: int | None, val_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified `(train_idx, val_idx)` into `labels`, sorted, a deterministic function of `seed`.

    First `val_size` images are held out for validation, then `subset` training images are drawn
    from the rest (None keeps all of the rest). Each class contributes in proportion to its share of
    the images available; when a count does not divide evenly, the leftover images go one each to the
    classes with the largest remainders (ties to the lower label), so totals are exact. With CIFAR-10's
    balanced classes, val_size=5000 takes 500 per class, and subset=1005 takes 101 from classes 0..4
    and 100 from classes 5..9. A request that leaves some class with no images is an error.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-D integer array, got {describe(labels)}")
    if val_size < 0 or (subset is not None and subset < 1):
        raise ValueError(f"need val_size >= 0 and subset >= 1 or None, got val_size={val_size}, subset={subset}")
    requested = val_size + (subset or 0)
    if requested > len(labels):
        raise ValueError(f"subset ({subset}) + val_size ({val_size}) = {requested} exceeds the "
                         f"{len(labels)} images available")

    classes, class_sizes = np.unique(labels, return_counts=True)
    val_counts = _proportional_counts(class_sizes, val_size, "val_size")
    remaining = class_sizes - val_counts
    train_counts = remaining if subset is None else _proportional_counts(remaining, subset, "subset")

    rng = np.random.default_rng(seed)
    train_parts, val_parts = [], []
    for label, n_val, n_train in zip(classes, val_counts, train_counts):
        shuffled = rng.permutation(np.flatnonzero(labels == label))
        val_parts.append(shuffled[:n_val])
        train_parts.append(shuffled[n_val:n_val + n_train])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(val_parts))


def _proportional_counts(available: np.ndarray, total: int, name: str) -> np.ndarray:
    """Split `total` over classes in proportion to `available` (largest remainder, in integers)."""
    scaled = total * available
    counts, remainders = np.divmod(scaled, available.sum())
    leftover = total - counts.sum()
    largest_remainders_first = np.argsort(-remainders, kind="stable")
    counts[largest_remainders_first[:leftover]] += 1
    if total > 0 and (counts == 0).any():
        raise ValueError(f"{name}={total} is too small to give each of the {len(available)} classes "
                         "at least one image")
    return counts
