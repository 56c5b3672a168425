"""FFCV operations for what FFCV does not ship: the paper's scale augmentation, PCA lighting, and
fb.resnet.torch's colour jitter. Their arithmetic lives in data.augment, shared with the
albumentations transforms of the torch backend; here it is only wired into FFCV's compiled pipelines.

Random draws use numba's generator (np.random inside compiled code), as FFCV's own operations do.
Import this module through data.ffcv_io, which guards FFCV's import side effects.
"""

from dataclasses import replace

import numpy as np
from ffcv.fields.rgb_image import ResizedCropRGBImageDecoder
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State

from resnet_repro.data.augment import add_rgb_shift, jitter_colors, lighting_shift, scale_crop_box


def _scale_augmentation_crop(height, width, shorter_side_range, crop_size):
    shorter_side = np.random.uniform(shorter_side_range[0], shorter_side_range[1])
    top, left, side = scale_crop_box(height, width, shorter_side, crop_size, np.random.random(), np.random.random())
    return top, left, side, side


class ScaleAugmentationDecoder(ResizedCropRGBImageDecoder):
    """Decodes each image straight into its scale-augmented crop (see augment.scale_crop_box)."""

    def __init__(self, crop_size: int, shorter_side_range: tuple[int, int]):
        super().__init__((crop_size, crop_size))
        # ResizedCropRGBImageDecoder hands `scale` and `ratio` to the crop generator; here they carry
        # the shorter-side range and the crop size.
        self.scale = np.asarray(shorter_side_range, dtype=np.float64)
        self.ratio = crop_size

    @property
    def get_crop_generator(self):
        return _scale_augmentation_crop


class _PerImageOperation(Operation):
    """An operation on uint8 (N, H, W, 3) batches that keeps their shape and writes a new buffer."""

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        return replace(previous_state, jit_mode=True), AllocationQuery(previous_state.shape, previous_state.dtype)


class PCALightingOperation(_PerImageOperation):
    """AlexNet's PCA lighting noise: alpha ~ N(0, std) per component, eigen-decomposition on [0, 1]."""

    def __init__(self, std: float, eigval: np.ndarray, eigvec: np.ndarray):
        super().__init__()
        self.std = std
        self.eigval = np.asarray(eigval, dtype=np.float64)
        self.eigvec = np.ascontiguousarray(eigvec, dtype=np.float64)

    def generate_code(self):
        parallel_range = Compiler.get_iterator()
        std, eigval, eigvec = self.std, self.eigval, self.eigvec

        def add_lighting(images, destination):
            for index in parallel_range(images.shape[0]):
                alpha = np.random.normal(0.0, std, 3)
                add_rgb_shift(images[index], lighting_shift(alpha, eigval, eigvec), destination[index])
            return destination[:images.shape[0]]

        # FFCV's compiler reads this flag off the function, an attribute no function type declares.
        add_lighting.is_parallel = True  # type: ignore[attr-defined]
        return add_lighting


class ColorJitterOperation(_PerImageOperation):
    """fb.resnet.torch's colour jitter: brightness, contrast, saturation by 1 + U(-s, s), random order."""

    def __init__(self, strength: float):
        super().__init__()
        self.strength = strength

    def generate_code(self):
        parallel_range = Compiler.get_iterator()
        strength = self.strength

        def jitter(images, destination):
            for index in parallel_range(images.shape[0]):
                factors = 1 + np.random.uniform(-strength, strength, 3)
                jitter_colors(images[index], factors, np.random.permutation(3), destination[index])
            return destination[:images.shape[0]]

        # FFCV's compiler reads this flag off the function, an attribute no function type declares.
        jitter.is_parallel = True  # type: ignore[attr-defined]
        return jitter
