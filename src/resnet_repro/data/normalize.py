"""The one definition of input normalisation, shared by training, evaluation and registered models.

The paper subtracts the per-pixel mean image (computed on the training split). We also divide by 255
so that inputs sit in roughly [-1, 1]; with BN after every conv the scale does not change what is
learned, but a fixed scale keeps the first layer's initialisation sensible.
"""

import torch

PIXEL_SCALE = 255.0


def normalize(images: torch.Tensor, mean_image: torch.Tensor) -> torch.Tensor:
    """Map uint8-valued images (N, 3, H, W) to float: (x - per-pixel mean) / 255.

    `mean_image` is (3, H, W) on the 0..255 scale, on the same device as `images`.
    """
    return (images.float() - mean_image) / PIXEL_SCALE
