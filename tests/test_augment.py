"""The augmentation arithmetic and the evaluation views, checked against their definitions (the paper, Section 3.4; AlexNet; fb.resnet.torch)."""

import numpy as np
import pytest

from projects import params_with
from resnet_repro.config import parse_params
from resnet_repro.data.augment import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    FbColorJitter,
    PCALighting,
    add_rgb_shift,
    augmentation_for,
    jitter_colors,
    lighting_shift,
    scale_crop_box,
)
from resnet_repro.data.views import center_crop_box, center_view, multi_scale_views, ten_crop

RNG = np.random.default_rng(0)
PHOTO = RNG.integers(0, 256, (300, 400, 3), dtype=np.uint8)


def test_lighting_shift_is_eigvec_times_alpha_times_eigval():
    alpha = np.array([0.1, -0.2, 0.05])
    expected = IMAGENET_EIGVEC @ (alpha * IMAGENET_EIGVAL) * 255
    np.testing.assert_allclose(lighting_shift(alpha, IMAGENET_EIGVAL, IMAGENET_EIGVEC), expected)


def test_rgb_shift_rounds_and_clips():
    image = np.array([[[0, 128, 255]]], np.uint8)
    out = np.empty_like(image)
    add_rgb_shift(image, np.array([-3.0, 2.4, 7.0]), out)
    assert out.tolist() == [[[0, 130, 255]]]


def test_colour_jitter_follows_fb_resnet_torch():
    image = RNG.integers(50, 200, (8, 8, 3), dtype=np.uint8)
    out = np.empty_like(image)
    order = np.array([0, 1, 2])
    jitter_colors(image, np.array([1.0, 1.0, 1.0]), order, out)
    assert np.array_equal(out, image)  # factors of 1 change nothing
    jitter_colors(image, np.array([0.5, 1.0, 1.0]), order, out)
    assert np.abs(out.astype(int) - image * 0.5).max() <= 0.5  # brightness: blend with black
    jitter_colors(image, np.array([1.0, 1.0, 0.0]), order, out)
    grey = image @ np.array([0.299, 0.587, 0.114])
    assert np.abs(out.astype(float) - grey[..., None]).max() <= 0.5  # saturation 0: each pixel's grey
    jitter_colors(image, np.array([1.0, 0.0, 1.0]), order, out)
    assert np.ptp(out) == 0 and abs(out[0, 0, 0] - grey.mean()) <= 0.5  # contrast 0: the mean grey


def test_albumentations_transforms_draw_from_their_seed():
    lighting, jitter = PCALighting(0.1, IMAGENET_EIGVAL, IMAGENET_EIGVEC), FbColorJitter(0.4)
    image = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for transform in (lighting, jitter):
        transform.set_random_seed(5)
        first = transform(image=image)["image"]
        transform.set_random_seed(5)
        assert np.array_equal(transform(image=image)["image"], first)
        assert not np.array_equal(first, image)


@pytest.mark.parametrize("height, width", [(300, 400), (500, 240)])
def test_scale_crop_box_is_a_crop_of_the_image_resized_to_the_shorter_side(height, width):
    for shorter_side in (256, 367.5, 480):
        for fractions in ((0.0, 0.0), (0.999, 0.999), (0.5, 0.3)):
            top, left, side = scale_crop_box(height, width, shorter_side, 224, *fractions)
            assert side == round(224 * min(height, width) / shorter_side)
            assert 0 <= top <= height - side and 0 <= left <= width - side
    top, left, side = scale_crop_box(height, width, 256, 224, 0.999, 0.999)  # the far corner
    assert (top, left) == (height - side, width - side)


def test_centre_view_uses_ffcv_centre_crop_arithmetic():
    assert center_crop_box(300, 400, 224, 256) == ((300 - 262) // 2, (400 - 262) // 2, 262)
    view = center_view(PHOTO, 224, 256)
    assert view.shape == (224, 224, 3) and view.dtype == np.uint8


def test_ten_crop_is_corners_centre_and_their_flips():
    image = np.zeros((256, 256 + 85, 3), np.uint8)
    image[..., 0] = np.arange(image.shape[1]) % 256  # columns tell where a crop came from
    crops = ten_crop(image, 224, 256)
    assert crops.shape == (10, 224, 224, 3)
    left_columns = [int(crop[0, 0, 0]) for crop in crops[:5]]
    assert left_columns == [0, 341 - 224, 0, 341 - 224, (341 - 224) // 2]
    assert np.array_equal(crops[5:], crops[:5, :, ::-1])


def test_multi_scale_views_keep_the_aspect_ratio():
    views = multi_scale_views(PHOTO)
    assert [min(view.shape[:2]) for view in views] == [224, 256, 384, 480, 640]
    assert all(abs(view.shape[1] / view.shape[0] - 4 / 3) < 0.01 for view in views)


def test_augmentation_for_each_dataset_and_eigen_source():
    stats = {"eigval": np.array([3.0, 2.0, 1.0]), "eigvec": np.eye(3), "mean_image": np.zeros((32, 32, 3))}
    augment = parse_params(params_with({})).augment
    cifar = augmentation_for("cifar10", augment, stats)
    assert (cifar.crop_size, cifar.crop_padding, cifar.shorter_side_range, cifar.eval_resize) == (32, 4, None, None)
    assert cifar.eigval == (3.0, 2.0, 1.0)
    folder = augmentation_for("imagefolder", augment.model_copy(update={"lighting_std": 0.1, "lighting_eigen": "imagenet"}), stats)
    assert (folder.crop_size, folder.shorter_side_range, folder.eval_resize) == (224, (256, 480), 256)
    np.testing.assert_array_equal(folder.eigvec_array, IMAGENET_EIGVEC)
