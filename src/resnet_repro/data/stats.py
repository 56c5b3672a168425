"""Training-set statistics: the per-pixel mean the paper subtracts, and the RGB PCA of its lighting noise."""

import json
from pathlib import Path

import numpy as np
import torch

from resnet_repro.data.errors import DataError, describe
from resnet_repro.io import write_json

_ARRAY_KEYS = ("mean_image", "channel_mean", "channel_std", "rgb_cov", "eigval", "eigvec")
_PIXEL_MAX = 255.0


class StatsAccumulator:
    """Streams uint8 NHWC RGB batches of one fixed size into float64 sums; memory does not grow with N.

    `result()` returns numpy values:
      num_images    int
      mean_image    (H, W, 3), 0..255 scale: the per-pixel mean that normalize() subtracts
      channel_mean  (3,), [0, 1] scale
      channel_std   (3,), [0, 1] scale, population std over all pixels
      rgb_cov       (3, 3), [0, 1] scale, covariance of RGB values over all pixels
      eigval        (3,), eigenvalues of rgb_cov, descending
      eigvec        (3, 3), the matching eigenvectors as columns (the PCA lighting convention)
    """

    def __init__(self) -> None:
        self.num_images = 0
        self._pixel_sums: np.ndarray | None = None
        self._rgb_products = np.zeros((3, 3), dtype=np.float64)

    def add(self, images: np.ndarray) -> None:
        if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
                and images.shape[3] == 3):
            raise ValueError(f"images must be a uint8 array (N, H, W, 3), got {describe(images)}")
        if self._pixel_sums is None:
            self._pixel_sums = np.zeros(images.shape[1:], dtype=np.float64)
        elif images.shape[1:] != self._pixel_sums.shape:
            raise ValueError(f"images of shape {images.shape[1:]} after images of shape {self._pixel_sums.shape}")
        as_float = images.astype(np.float64)
        self._pixel_sums += as_float.sum(axis=0)
        rgb = as_float.reshape(-1, 3)
        self._rgb_products += rgb.T @ rgb
        self.num_images += len(images)

    def result(self) -> dict:
        if not self.num_images:
            raise ValueError("no images were added")
        assert self._pixel_sums is not None  # the first `add` made it
        height, width, _ = self._pixel_sums.shape
        mean_image = self._pixel_sums / self.num_images
        channel_mean = mean_image.mean(axis=(0, 1)) / _PIXEL_MAX
        # E[x x^T] - E[x] E[x]^T cancels nothing that matters: the sums above are of integers and
        # stay below 2**53 (exact in float64) up to ~1e8 CIFAR-sized or ~2.7e6 224x224 images.
        num_pixels = self.num_images * height * width
        rgb_cov = self._rgb_products / (num_pixels * _PIXEL_MAX**2) - np.outer(channel_mean, channel_mean)
        eigval, eigvec = np.linalg.eigh(rgb_cov)
        descending = np.argsort(eigval)[::-1]
        return {
            "num_images": self.num_images,
            "mean_image": mean_image,
            "channel_mean": channel_mean,
            "channel_std": np.sqrt(np.diag(rgb_cov)),
            "rgb_cov": rgb_cov,
            "eigval": eigval[descending],
            "eigvec": eigvec[:, descending],
        }


def image_stats(images: np.ndarray, batch: int = 4096) -> dict:
    """StatsAccumulator.result() for a non-empty uint8 NHWC array, streamed `batch` images at a time."""
    if not (isinstance(images, np.ndarray) and len(images) > 0):
        raise ValueError(f"images must be a non-empty uint8 array (N, H, W, 3), got {describe(images)}")
    accumulator = StatsAccumulator()
    for start in range(0, len(images), batch):
        accumulator.add(images[start:start + batch])
    return accumulator.result()


def save_stats(path: Path, stats: dict) -> None:
    """Write the result of image_stats to `path` as JSON (arrays as nested lists), atomically."""
    write_json(path, {key: value.tolist() if isinstance(value, np.ndarray) else value
                      for key, value in stats.items()})


def load_stats(path: Path) -> dict:
    """Read statistics written by save_stats, with arrays back as float64 numpy arrays."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read statistics ({error})") from error
    missing = [key for key in ("num_images", *_ARRAY_KEYS) if key not in raw]
    if missing:
        raise DataError(f"{path}: statistics lack key(s) {missing}")
    stats = dict(raw)
    for key in _ARRAY_KEYS:
        try:
            stats[key] = np.asarray(raw[key], dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise DataError(f"{path}: key {key!r} is not a numeric array ({error})") from error
    if stats["mean_image"].ndim != 3 or stats["mean_image"].shape[2] != 3:
        raise DataError(f"{path}: key 'mean_image' must have shape (H, W, 3), "
                        f"got {stats['mean_image'].shape}")
    return stats


def mean_image_tensor(stats: dict, size: int | None = None) -> torch.Tensor:
    """The per-pixel mean as the (3, H, W) float32 tensor that normalize() takes.

    `size`: the net's input size, when it differs from the statistics' (an image folder's mean is
    taken at 224x224): the mean is area-resized, as the images themselves are scaled to that crop.
    """
    mean = torch.from_numpy(np.ascontiguousarray(stats["mean_image"].transpose(2, 0, 1))).float()
    if size is None or mean.shape[-2:] == (size, size):
        return mean
    return torch.nn.functional.interpolate(mean[None], size=(size, size), mode="area")[0]
