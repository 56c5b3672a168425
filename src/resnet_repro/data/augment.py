"""Training augmentations with one meaning for both loader backends.

`Augmentation` says what training does to each image and how evaluation crops it. `ffcv_ops` turns
it into FFCV operations, `albumentations_pipeline` below into an albumentations pipeline. The
arithmetic both need (the scale-augmentation crop box, PCA lighting, colour jitter) is written once,
as numba functions: FFCV compiles them into its pipelines and the albumentations transforms call
them directly, so the two backends cannot drift apart.

All of it works on uint8 HWC RGB images and returns uint8: the per-pixel mean is subtracted later,
on the whole batch, by data.normalize.
"""

from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
from numba import njit

from resnet_repro.config import AugmentParams
from resnet_repro.data.views import center_view, resize_square

# fb.resnet.torch's PCA of ImageNet RGB on the [0, 1] scale (AlexNet's lighting noise): eigenvalues, and the
# eigenvectors as columns.
IMAGENET_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
IMAGENET_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]])
# ITU-R 601 luma, the grey that fb.resnet.torch's contrast and saturation jitter blend towards.
_LUMA = (0.299, 0.587, 0.114)
_PIXEL_MAX = 255.0


@dataclass(frozen=True)
class Augmentation:
    """What a training pipeline does to each image, and the single view evaluation takes.

    Exactly one of the two random crops applies: `crop_padding` > 0 is CIFAR's (zero-pad, then a
    random `crop_size` crop), `shorter_side_range` the paper's ImageNet scale augmentation (shorter
    side resized to a random size in the range, then a random `crop_size` crop). `eval_resize` None
    evaluates images as stored (CIFAR); else the shorter side is resized to it and the centre
    `crop_size` crop is taken. The PCA eigen-decomposition is on the [0, 1] scale, eigenvectors as
    columns.
    """

    crop_size: int
    crop_padding: int = 0
    shorter_side_range: tuple[int, int] | None = None
    flip: bool = True
    color_jitter: float = 0.0
    lighting_std: float = 0.0
    eigval: tuple[float, ...] = tuple(IMAGENET_EIGVAL)
    eigvec: tuple[tuple[float, ...], ...] = tuple(map(tuple, IMAGENET_EIGVEC))
    eval_resize: int | None = None

    def __post_init__(self) -> None:
        if (self.crop_padding > 0) == (self.shorter_side_range is not None):
            raise ValueError("an Augmentation has either crop_padding (CIFAR) or shorter_side_range (ImageNet)")

    @property
    def eigval_array(self) -> np.ndarray:
        return np.asarray(self.eigval, dtype=np.float64)

    @property
    def eigvec_array(self) -> np.ndarray:
        return np.asarray(self.eigvec, dtype=np.float64)


def augmentation_for(dataset: str, params: AugmentParams, stats: dict) -> Augmentation:
    """The Augmentation that `params` configure for `dataset` ("cifar10" or "imagefolder").

    `stats` is the training split's statistics (data.stats); its eigen-decomposition drives the
    lighting noise unless params.lighting_eigen asks for the published ImageNet constants.
    """
    if params.lighting_eigen == "dataset":
        eigval, eigvec = stats["eigval"], stats["eigvec"]
    else:
        eigval, eigvec = IMAGENET_EIGVAL, IMAGENET_EIGVEC
    common: dict[str, Any] = {"flip": params.flip, "color_jitter": params.color_jitter,
                              "lighting_std": params.lighting_std, "eigval": tuple(np.asarray(eigval, dtype=float)),
                              "eigvec": tuple(map(tuple, np.asarray(eigvec, dtype=float)))}
    if dataset == "cifar10":
        height = stats["mean_image"].shape[0]
        return Augmentation(crop_size=height, crop_padding=params.crop_padding, **common)
    return Augmentation(crop_size=params.crop_size, shorter_side_range=params.scale_range,
                        eval_resize=params.eval_resize, **common)


# --- the shared arithmetic (numba: compiled into FFCV pipelines, called directly by albumentations) ---

@njit(cache=True)
def scale_crop_box(height: int, width: int, shorter_side: float, crop_size: int,
                   row_fraction: float, col_fraction: float) -> tuple[int, int, int]:
    """(top, left, side) of the square of a height x width image that scale augmentation turns into
    its crop: resizing the image so its shorter side is `shorter_side` and cropping `crop_size`
    pixels is cropping `side = crop_size * min(height, width) / shorter_side` pixels of the original
    and resizing them to `crop_size`. The fractions, uniform in [0, 1), place the square.
    """
    shorter = min(height, width)
    side = min(int(round(crop_size * shorter / shorter_side)), shorter)
    top = int(row_fraction * (height - side + 1))
    left = int(col_fraction * (width - side + 1))
    return top, left, side


@njit(cache=True)
def lighting_shift(alpha: np.ndarray, eigval: np.ndarray, eigvec: np.ndarray) -> np.ndarray:
    """AlexNet's RGB shift on the 0..255 scale: eigvec @ (alpha * eigval), with eigval on [0, 1]."""
    shift = np.zeros(3)
    for channel in range(3):
        for component in range(3):
            shift[channel] += eigvec[channel, component] * alpha[component] * eigval[component]
    return shift * _PIXEL_MAX


@njit(cache=True)
def add_rgb_shift(image: np.ndarray, shift: np.ndarray, out: np.ndarray) -> None:
    """out = image + shift per channel, rounded and clipped back to uint8."""
    pixels = image.astype(np.float64)
    for channel in range(3):
        pixels[:, :, channel] += shift[channel]
    _store_rounded(pixels, out)


@njit(cache=True)
def _store_rounded(pixels: np.ndarray, out: np.ndarray) -> None:
    """Round float pixels half up and clip them into the uint8 array `out`."""
    height, width, channels = pixels.shape
    for y in range(height):
        for x in range(width):
            for channel in range(channels):
                out[y, x, channel] = min(max(np.floor(pixels[y, x, channel] + 0.5), 0.0), _PIXEL_MAX)


@njit(cache=True)
def _grey(pixels: np.ndarray) -> np.ndarray:
    return pixels[:, :, 0] * _LUMA[0] + pixels[:, :, 1] * _LUMA[1] + pixels[:, :, 2] * _LUMA[2]


@njit(cache=True)
def jitter_colors(image: np.ndarray, factors: np.ndarray, order: np.ndarray, out: np.ndarray) -> None:
    """fb.resnet.torch's colour jitter into `out` (uint8).

    factors = (brightness, contrast, saturation) blend weights, applied in `order` (a permutation of
    0, 1, 2): brightness blends with black, contrast with the image's mean grey, saturation with
    each pixel's own grey. Intermediate values are not clipped, as in fb.resnet.torch.
    """
    pixels = image.astype(np.float64)
    for step in order:
        factor = factors[step]
        if step == 0:
            pixels *= factor
        elif step == 1:
            mean_grey = _grey(pixels).mean()
            pixels *= factor
            pixels += mean_grey * (1 - factor)
        else:
            grey = _grey(pixels)
            for channel in range(3):
                pixels[:, :, channel] = pixels[:, :, channel] * factor + grey * (1 - factor)
    _store_rounded(pixels, out)


# --- albumentations: the torch backend's side ------------------------------------------------------

class ShorterSideScaleCrop(A.ImageOnlyTransform):
    """The paper's scale augmentation: shorter side to U(low, high), then a random crop_size crop."""

    def __init__(self, shorter_side_range: tuple[int, int], crop_size: int, p: float = 1.0):
        super().__init__(p=p)
        self.shorter_side_range = shorter_side_range
        self.crop_size = crop_size

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        shorter_side = self.random_generator.uniform(*self.shorter_side_range)
        row_fraction, col_fraction = self.random_generator.random(2)
        top, left, side = scale_crop_box(height, width, shorter_side, self.crop_size, row_fraction, col_fraction)
        return {"top": top, "left": left, "side": side}

    def apply(self, img: np.ndarray, top: int, left: int, side: int, **params: Any) -> np.ndarray:
        return resize_square(img, top, left, side, self.crop_size)


class PCALighting(A.ImageOnlyTransform):
    """AlexNet's PCA lighting noise: alpha ~ N(0, std) per principal component."""

    def __init__(self, std: float, eigval: np.ndarray, eigvec: np.ndarray, p: float = 1.0):
        super().__init__(p=p)
        self.std = std
        self.eigval = np.asarray(eigval, dtype=np.float64)
        self.eigvec = np.asarray(eigvec, dtype=np.float64)

    def get_params(self) -> dict[str, Any]:
        alpha = self.random_generator.normal(0.0, self.std, 3)
        return {"shift": lighting_shift(alpha, self.eigval, self.eigvec)}

    def apply(self, img: np.ndarray, shift: np.ndarray, **params: Any) -> np.ndarray:
        out = np.empty_like(img)
        add_rgb_shift(img, shift, out)
        return out


class FbColorJitter(A.ImageOnlyTransform):
    """fb.resnet.torch's colour jitter: brightness, contrast, saturation by 1 + U(-j, j), random order.

    Not albumentations' ColorJitter, whose contrast and saturation are defined differently.
    """

    def __init__(self, strength: float, p: float = 1.0):
        super().__init__(p=p)
        self.strength = strength

    def get_params(self) -> dict[str, Any]:
        return {"factors": 1 + self.random_generator.uniform(-self.strength, self.strength, 3),
                "order": self.random_generator.permutation(3)}

    def apply(self, img: np.ndarray, factors: np.ndarray, order: np.ndarray, **params: Any) -> np.ndarray:
        out = np.empty_like(img)
        jitter_colors(img, factors, order, out)
        return out


class CenterView(A.ImageOnlyTransform):
    """views.center_view as an albumentations step: the single evaluation view of an image folder."""

    def __init__(self, crop_size: int, resize: int):
        super().__init__(p=1.0)
        self.crop_size = crop_size
        self.resize = resize

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return center_view(img, self.crop_size, self.resize)


def albumentations_pipeline(augmentation: Augmentation, train: bool) -> A.Compose:
    """The torch backend's per-image pipeline: uint8 HWC in, uint8 HWC crop_size x crop_size out."""
    if not train:
        if augmentation.eval_resize is None:
            return A.Compose([])
        return A.Compose([CenterView(augmentation.crop_size, augmentation.eval_resize)])
    if augmentation.shorter_side_range is not None:
        steps = [ShorterSideScaleCrop(augmentation.shorter_side_range, augmentation.crop_size)]
    else:
        padded = augmentation.crop_size + 2 * augmentation.crop_padding
        steps = [A.PadIfNeeded(padded, padded, position="center", border_mode=cv2.BORDER_CONSTANT, fill=0),
                 A.RandomCrop(augmentation.crop_size, augmentation.crop_size)]
    if augmentation.flip:
        steps.append(A.HorizontalFlip(p=0.5))
    # fb.resnet.torch's order: colour jitter, then lighting.
    if augmentation.color_jitter:
        steps.append(FbColorJitter(augmentation.color_jitter))
    if augmentation.lighting_std:
        steps.append(PCALighting(augmentation.lighting_std, augmentation.eigval_array, augmentation.eigvec_array))
    return A.Compose(steps)
