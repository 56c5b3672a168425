"""ImageNet-style folders made of real CIFAR-10 photographs, for tests and benchmarks of image folders.

Each image is upscaled to a size of its own (aspect ratios vary, as in a photo collection), every
fifth one is stored grayscale, and all are JPEGs under WordNet-style class folders.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from resnet_repro.data.cifar10 import Cifar10Arrays

# (width, height) cycled over the images: landscape, portrait, square, as in a photo collection.
PHOTO_SIZES = [(160, 120), (120, 160), (144, 144), (200, 150), (128, 96)]


def cifar_image_folder(cifar10: Cifar10Arrays, root: Path, *, classes: int = 3, train_per_class: int = 40,
                       val_per_class: int = 10, sizes: list[tuple[int, int]] = PHOTO_SIZES,
                       grayscale_every: int = 5) -> Path:
    """root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG from the first `classes` CIFAR-10 classes
    (train/ from its training images, val/ from its test images)."""
    wnids = [f"n{index:08d}" for index in range(classes)]  # sorted order is the CIFAR label order
    count = 0
    for split, images, labels, per_class in (("train", cifar10.train_images, cifar10.train_labels, train_per_class),
                                             ("val", cifar10.test_images, cifar10.test_labels, val_per_class)):
        for label, wnid in enumerate(wnids):
            directory = root / split / wnid
            directory.mkdir(parents=True, exist_ok=True)
            for index in np.flatnonzero(labels == label)[:per_class]:
                image = Image.fromarray(images[index]).resize(sizes[count % len(sizes)], Image.Resampling.BICUBIC)
                if grayscale_every and count % grayscale_every == 0:
                    image = image.convert("L")
                image.save(directory / f"{wnid}_{index}.JPEG", quality=90)
                count += 1
    return root
