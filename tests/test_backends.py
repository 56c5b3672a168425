"""The FFCV and torch backends agree in distribution on the same data.

Each test runs both backends over the same images and recovers, from every output image, the random
choice that made it: crop offset and flip (CIFAR, by matching against the source), crop position
and scale (scale augmentation, from an image whose pixels encode their own coordinates), the
lighting shift (from a flat grey image). The two samples of choices must agree with each other and
with the distribution the augmentation defines, within the tolerances stated at each assertion.
"""

from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats
from test_data import CROP_PADDING, augmentations_matching

from resnet_repro.data.augment import IMAGENET_EIGVAL, IMAGENET_EIGVEC, Augmentation
from resnet_repro.data.ffcv_io import make_loader, write_beton
from resnet_repro.data.normalize import PIXEL_SCALE
from resnet_repro.data.torch_loader import ArrayImages, TorchLoader

CPU = torch.device("cpu")
IMAGES, EPOCHS, BATCH = 500, 2, 100
# A p-value below this fails a test: with a handful of tests per run, a false alarm is a 1-in-10^4 event.
SIGNIFICANCE = 1e-4


def outputs(loader, epochs: int = EPOCHS) -> tuple[np.ndarray, np.ndarray]:
    """Every (uint8 NHWC image, label) the loader yields over `epochs` epochs; the mean image is 0."""
    images, labels = [], []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch, batch_labels in loader:
            images.append((batch * PIXEL_SCALE).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
            labels.append(batch_labels.numpy())
    return np.concatenate(images), np.concatenate(labels)


def both_backends(tmp_path, images: np.ndarray, augmentation: Augmentation) -> dict[str, tuple]:
    """{"ffcv": outputs, "torch": outputs} for the same images, labelled by row, trained with `augmentation`."""
    labels = np.arange(len(images))
    write_beton(tmp_path / "train.beton", images, labels)
    crop = augmentation.crop_size
    settings: dict[str, Any] = {"batch_size": BATCH, "train": True, "mean_image": torch.zeros(3, crop, crop),
                "device": CPU, "num_workers": 2, "seed": 3}
    ffcv = make_loader(tmp_path / "train.beton", augmentation=augmentation, **settings)
    portable = TorchLoader(ArrayImages(images, labels, augmentation, train=True), **settings)
    return {"ffcv": outputs(ffcv), "torch": outputs(portable)}


def assert_same_proportion(successes: dict[str, int], trials: dict[str, int], expected: float) -> None:
    """Each backend's rate matches `expected`, and the two match each other (two-sided binomial tests)."""
    for name in successes:
        assert scipy_stats.binomtest(successes[name], trials[name], expected).pvalue > SIGNIFICANCE, (name, successes)
    table = [[successes[n], trials[n] - successes[n]] for n in successes]
    assert scipy_stats.chi2_contingency(table).pvalue > SIGNIFICANCE, table


def test_cifar_crop_offsets_and_flips_agree(tmp_path, cifar10):
    source = cifar10.train_images[:IMAGES]
    augmentation = Augmentation(crop_size=32, crop_padding=CROP_PADDING)
    offsets, flips, trials, channel_moments = {}, {}, {}, {}
    for name, (images, labels) in both_backends(tmp_path, source, augmentation).items():
        choices = [augmentations_matching(image, source[label]) for image, label in zip(images, labels)]
        assert all(choices), f"{name}: an output is not a shifted or flipped copy of its source"
        # Images with flat borders match several offsets; only the unambiguous ones are counted.
        unique = [matches[0] for matches in choices if len(matches) == 1]
        offsets[name] = np.array([(dy, dx) for _, dy, dx in unique])
        flips[name], trials[name] = sum(flipped for flipped, _, _ in unique), len(unique)
        channel_moments[name] = (images.mean(axis=(0, 1, 2)), images.std(axis=(0, 1, 2)))
        assert sorted(labels.tolist()) == sorted(list(range(IMAGES)) * EPOCHS)  # each image once per epoch

    assert min(trials.values()) > 0.8 * IMAGES * EPOCHS
    assert_same_proportion(flips, trials, expected=0.5)
    offset_values = np.arange(-CROP_PADDING, CROP_PADDING + 1)
    for axis in (0, 1):
        counts = {name: np.array([(o[:, axis] == v).sum() for v in offset_values]) for name, o in offsets.items()}
        for name, observed in counts.items():  # uniform over the 9 offsets
            assert scipy_stats.chisquare(observed).pvalue > SIGNIFICANCE, (name, axis, observed)
        assert scipy_stats.chi2_contingency(list(counts.values())).pvalue > SIGNIFICANCE, counts
    # The outputs' pixel statistics: per channel, mean within 1 and std within 1 of 255.
    (ffcv_mean, ffcv_std), (torch_mean, torch_std) = channel_moments["ffcv"], channel_moments["torch"]
    np.testing.assert_allclose(ffcv_mean, torch_mean, atol=1.0)
    np.testing.assert_allclose(ffcv_std, torch_std, atol=1.0)


def test_lighting_shift_mean_and_covariance_agree(tmp_path):
    grey = np.full((IMAGES, 32, 32, 3), 128, np.uint8)
    std = 0.1
    augmentation = Augmentation(crop_size=32, crop_padding=CROP_PADDING, lighting_std=std)
    # The centre pixel is inside the image whatever the 4-pixel offset, so it is grey + the shift.
    shifts = {name: images[:, 16, 16].astype(float) - 128
              for name, (images, _) in both_backends(tmp_path, grey, augmentation).items()}
    # The distribution the paper defines: shift = eigvec @ (alpha * eigval) * 255, alpha ~ N(0, std^2 I).
    scaled_eigvec = IMAGENET_EIGVEC * IMAGENET_EIGVAL * std * PIXEL_SCALE
    covariance = scaled_eigvec @ scaled_eigvec.T
    samples = IMAGES * EPOCHS
    for name, shift in shifts.items():
        # Mean: zero within 4 standard errors per channel (+0.5 for the rounding to uint8).
        assert np.all(np.abs(shift.mean(axis=0)) < 4 * np.sqrt(np.diag(covariance) / samples) + 0.5), name
        # Covariance: within 15% of the largest variance (sampling error ~ sqrt(2/1000) ~ 5%, plus rounding).
        np.testing.assert_allclose(np.cov(shift.T), covariance, atol=0.15 * covariance.max(), err_msg=name)
    # Along the first principal axis the shift is one normal variable: the backends' samples agree.
    projections = {name: shift @ IMAGENET_EIGVEC[:, 0] for name, shift in shifts.items()}
    assert scipy_stats.ks_2samp(projections["ffcv"], projections["torch"]).pvalue > SIGNIFICANCE


def coordinate_image(height: int, width: int) -> np.ndarray:
    """R encodes the column, G the row (0..255 across the image), B is flat: a crop reveals its box."""
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.linspace(0, 255, width).round()[None, :]
    image[..., 1] = np.linspace(0, 255, height).round()[:, None]
    image[..., 2] = 100
    return image


@pytest.mark.slow
def test_scale_augmentation_crops_and_flips_agree(tmp_path):
    height, width, crop = 300, 400, 64
    scale_range = (80, 150)  # the paper's [256, 480] for a 224 crop, shrunk to these test images
    images = np.repeat(coordinate_image(height, width)[None], IMAGES, axis=0)
    augmentation = Augmentation(crop_size=crop, shorter_side_range=scale_range)
    recovered = {}
    for name, (outputs_, _) in both_backends(tmp_path, images, augmentation).items():
        columns = outputs_[:, crop // 2, :, 0].astype(float) * (width - 1) / 255  # the middle row's R
        rows = outputs_[:, :, crop // 2, 1].astype(float) * (height - 1) / 255  # the middle column's G
        flipped = columns[:, 0] > columns[:, -1]
        side = (rows[:, -1] - rows[:, 0]) * crop / (crop - 1)
        recovered[name] = {"flipped": flipped, "side": side, "top": rows[:, 0],
                           "left": np.minimum(columns[:, 0], columns[:, -1])}
    samples = IMAGES * EPOCHS
    assert_same_proportion({n: int(r["flipped"].sum()) for n, r in recovered.items()}, {n: samples for n in recovered},
                           expected=0.5)
    # The crop side is crop * 300 / U(80, 150) original pixels: between 128 and 240.
    for name, r in recovered.items():
        assert r["side"].min() > 128 - 3 and r["side"].max() < 240 + 3, name
    for key in ("side", "top", "left"):
        result = scipy_stats.ks_2samp(recovered["ffcv"][key], recovered["torch"][key])
        assert result.pvalue > SIGNIFICANCE, (key, result)
