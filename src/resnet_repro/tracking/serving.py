"""Raw images in, class probabilities and names out: what a registered model takes and answers.

Shared by the MLflow pyfunc (`mlflow models serve`, `mlflow.pyfunc.load_model`) and `resnet-repro
predict`, so the three give the same answers for the same pixels.

Input, one of:
  - pixels: integers 0..255, (N, H, W, 3) RGB at the net's input size (or one (H, W, 3) image);
  - encoded PNG or JPEG files: bytes, or base64 strings as JSON carries them; a list or 1-D array of
    them, a table (DataFrame) or dict with an `image` column of them. They are decoded to RGB and
    resized to the net's input size (with a warning) if they are not at it.

Over HTTP (`POST /invocations`, Content-Type application/json):
  {"inputs": [[[[r, g, b], ...], ...], ...]}                 pixels, N x H x W x 3
  {"inputs": ["<base64 PNG>", ...]}                          encoded files
  {"dataframe_split": {"columns": ["image"], "data": [["<base64 PNG>"], ...]}}
  {"dataframe_records": [{"image": "<base64 JPEG>"}, ...]}

Output, one row per image: `class_index`, `class_name` and `probability` of the most likely class,
and `probabilities`, {class name: probability} over every class in the net's order. Served, it is
{"predictions": [{"class_index": 3, "class_name": "cat", "probability": 0.61,
"probabilities": {"airplane": 0.01, ...}}, ...]}.

Anything else is refused with a ValueError that says what was expected and what came.
"""

import base64
import binascii
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from resnet_repro.artifacts import TrainedModel
from resnet_repro.data.normalize import normalize

IMAGE_COLUMN = "image"
ENCODED_FORMATS = ("PNG", "JPEG")
# Larger files are refused before they are decoded: a small compressed file can expand to gigabytes.
MAX_PIXELS = 4096 * 4096
# Images per forward pass: bounds the memory one large request takes.
BATCH_SIZE = 256
OUTPUT_COLUMNS = ["class_index", "class_name", "probability", "probabilities"]

logger = logging.getLogger(__name__)


def decode_image(data: bytes, size: int, name: str) -> np.ndarray:
    """An encoded PNG or JPEG file as uint8 (size, size, 3) RGB; `name` names it in errors and warnings.

    An image of another size is resized (bilinear) to `size` x `size`, with a warning.
    """
    try:
        with Image.open(io.BytesIO(data), formats=ENCODED_FORMATS) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ValueError(f"{name}: {image.width}x{image.height} pixels is more than the {MAX_PIXELS} "
                                 "accepted")
            rgb = image.convert("RGB")
    except UnidentifiedImageError:
        raise ValueError(f"{name}: not a PNG or JPEG image") from None
    # Pillow reports a file it cannot decode (truncated, corrupt) as an OSError, a few broken files as
    # SyntaxError, and an image beyond its own pixel limit as DecompressionBombError.
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"{name}: a damaged PNG or JPEG image ({error})") from None
    if rgb.size != (size, size):
        logger.warning("%s: resized from %dx%d to %dx%d, the net's input size", name, *rgb.size, size, size)
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def image_batch(model_input, size: int) -> np.ndarray:
    """The images in `model_input` (any form the module docstring lists) as uint8 (N, size, size, 3)."""
    if isinstance(model_input, pd.DataFrame):
        return _decode_all(_image_column(model_input, list(model_input.columns)), size)
    if isinstance(model_input, dict):
        return _decode_all(_image_column(model_input, list(model_input)), size)
    if isinstance(model_input, (bytes, str)):
        return _decode_all([model_input], size)
    if isinstance(model_input, (list, tuple)):
        if model_input and all(isinstance(item, (bytes, str)) for item in model_input):
            return _decode_all(list(model_input), size)
        try:
            model_input = np.asarray(model_input)
        except ValueError as error:  # nested lists of unequal lengths
            raise ValueError(f"the images are not one array of equal-sized images: {error}") from None
    if isinstance(model_input, np.ndarray):
        if model_input.dtype.kind in "OSU":  # Python objects, bytes or str: encoded files
            if model_input.ndim != 1:
                raise ValueError(f"encoded images must be given as a flat list; got an array of shape "
                                 f"{model_input.shape}")
            return _decode_all(model_input.tolist(), size)
        return _pixels(model_input, size)
    raise ValueError(f"expected pixel arrays or encoded PNG/JPEG images, got {type(model_input).__name__}")


def class_probabilities(module: torch.nn.Module, mean_image: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Softmax outputs for uint8 images (N, H, W, 3), the layout image files decode to."""
    channels_first = images.to(mean_image.device).permute(0, 3, 1, 2)
    with torch.inference_mode():
        return torch.softmax(module(normalize(channels_first, mean_image)), dim=1)


def classify(module: torch.nn.Module, mean_image: torch.Tensor, class_names: list[str],
             images: np.ndarray) -> pd.DataFrame:
    """One row per image of `images` (uint8 (N, H, W, 3)): the columns of OUTPUT_COLUMNS."""
    probabilities = torch.cat([class_probabilities(module, mean_image, torch.from_numpy(images[start:start + BATCH_SIZE]))
                               for start in range(0, len(images), BATCH_SIZE)]).cpu()
    best_probabilities, best_classes = probabilities.max(dim=1)
    return pd.DataFrame({
        "class_index": best_classes.tolist(),
        "class_name": [class_names[index] for index in best_classes.tolist()],
        "probability": best_probabilities.tolist(),
        "probabilities": [dict(zip(class_names, row)) for row in probabilities.tolist()],
    }, columns=OUTPUT_COLUMNS)


def with_preprocessing(trained: TrainedModel) -> torch.nn.Module:
    """The trained net, with its `class_names` and the `mean_image` for `data.normalize` attached."""
    module = trained.module
    # nn.Module takes attributes of any type; torch annotates its __setattr__ for tensors and modules only.
    module.class_names = trained.class_names  # type: ignore[assignment]
    # A buffer follows the module across .to(device); not persistent, so the state dict stays the trained one.
    module.register_buffer("mean_image", trained.mean_image, persistent=False)
    return module


def classify_files(module: torch.nn.Module, image_paths: Sequence[Path]) -> list[tuple[str, str, float]]:
    """(path, class name, probability) of the most likely class for each PNG or JPEG file, by a net from
    `with_preprocessing`. Images not at the net's input size are resized to it, with a warning naming the file."""
    mean_image, class_names = module.get_buffer("mean_image"), cast(list[str], module.class_names)
    input_size = mean_image.shape[-1]
    images = np.stack([_read_rgb(Path(path), input_size) for path in image_paths])
    table = classify(module, mean_image, class_names, images)
    return [(str(path), class_name, probability)
            for path, class_name, probability in zip(image_paths, table["class_name"], table["probability"])]


def _read_rgb(path: Path, size: int) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"{path}: cannot read it ({error.strerror})") from None
    return decode_image(data, size, str(path))


def _image_column(table, columns: list[str]) -> list:
    """The `image` column of a DataFrame or a dict of columns (or its only column, whatever its name)."""
    if IMAGE_COLUMN in columns:
        column = table[IMAGE_COLUMN]
    elif len(columns) == 1:
        column = table[columns[0]]
    else:
        raise ValueError(f"a table of images needs a column {IMAGE_COLUMN!r} of encoded PNG/JPEG images "
                         f"(base64 strings in JSON); got columns {columns}")
    if isinstance(column, (bytes, str)):
        return [column]
    return column.tolist() if hasattr(column, "tolist") else list(column)


def _decode_all(items: list, size: int) -> np.ndarray:
    if not items:
        raise ValueError("no images given")
    return np.stack([decode_image(_encoded_bytes(item, f"image {index}"), size, f"image {index}")
                     for index, item in enumerate(items)])


def _encoded_bytes(item, name: str) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        try:
            return base64.b64decode(item, validate=True)
        except binascii.Error:
            raise ValueError(f"{name}: a string must be a base64-encoded PNG or JPEG file") from None
    raise ValueError(f"{name}: expected an encoded PNG or JPEG file (bytes, or base64 in JSON), "
                     f"got {type(item).__name__}")


def _pixels(array: np.ndarray, size: int) -> np.ndarray:
    if array.ndim == 3:
        array = array[np.newaxis]
    if array.ndim != 4 or array.shape[1:] != (size, size, 3):
        raise ValueError(f"pixel arrays must be (N, {size}, {size}, 3) RGB, or one ({size}, {size}, 3) image; "
                         f"got shape {array.shape}")
    if len(array) == 0:
        raise ValueError("no images given")
    if array.dtype.kind not in "ui":
        raise ValueError(f"pixel values must be integers 0..255 (uint8); got {array.dtype}")
    if array.dtype != np.uint8 and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"pixel values must be integers 0..255 (uint8); got values from {array.min()} "
                         f"to {array.max()}")
    return array.astype(np.uint8, copy=False)
