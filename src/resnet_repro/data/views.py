"""Evaluation views of one uint8 HWC RGB image (the paper's ImageNet testing, Section 3.4).

    center_view(image, 224, 256)     shorter side to 256, the centre 224x224 crop
    ten_crop(image, 224, 256)        the four corners and the centre, and their horizontal flips
    multi_scale_views(image, sides)  the whole image at each shorter side, for fully-convolutional testing

Every resize is OpenCV's INTER_AREA, as in FFCV's decoders, so a view matches what the FFCV
evaluation pipeline produces for the same image.
"""

from collections.abc import Sequence

import cv2
import numpy as np

PAPER_TEST_SCALES = (224, 256, 384, 480, 640)


def resize_shorter_side(image: np.ndarray, side: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = side / min(height, width)
    size = (max(side, round(width * scale)), max(side, round(height * scale)))  # cv2 wants (width, height)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def resize_square(image: np.ndarray, top: int, left: int, side: int, size: int) -> np.ndarray:
    """The side x side square at (top, left), resized to size x size the way FFCV's decoders resize."""
    return cv2.resize(image[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)


def center_crop_box(height: int, width: int, crop_size: int, resize: int) -> tuple[int, int, int]:
    """(top, left, side) of the centre square that becomes the crop after resizing to `resize`.

    The arithmetic of FFCV's CenterCropRGBImageDecoder with ratio crop_size / resize.
    """
    side = int(crop_size / resize * min(height, width))
    return (height - side) // 2, (width - side) // 2, side


def center_view(image: np.ndarray, crop_size: int, resize: int) -> np.ndarray:
    height, width = image.shape[:2]
    top, left, side = center_crop_box(height, width, crop_size, resize)
    return resize_square(image, top, left, side, crop_size)


def ten_crop(image: np.ndarray, crop_size: int, resize: int) -> np.ndarray:
    """(10, crop_size, crop_size, 3): corners and centre of the image resized to shorter side
    `resize`, then the same five flipped horizontally."""
    resized = resize_shorter_side(image, resize)
    height, width = resized.shape[:2]
    bottom, right = height - crop_size, width - crop_size
    corners = [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]
    crops = np.stack([resized[top:top + crop_size, left:left + crop_size] for top, left in corners])
    return np.concatenate([crops, crops[:, :, ::-1]])


def multi_scale_views(image: np.ndarray, sides: Sequence[int] = PAPER_TEST_SCALES) -> list[np.ndarray]:
    """The whole image at each shorter side; the sizes differ, so each view is its own batch."""
    return [resize_shorter_side(image, side) for side in sides]
