"""Evaluation helpers on a real net: top-k error and Figure 7's layer-response statistics."""

import pytest
import torch

from resnet_repro import models
from resnet_repro.evaluate.accuracy import top_k_errors
from resnet_repro.evaluate.responses import response_stds


def batches(count: int = 3, size: int = 16):
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(size, 3, 32, 32, generator=generator), torch.randint(0, 10, (size,), generator=generator))
            for _ in range(count)]


def test_response_stds_equal_the_std_over_all_images_of_each_3x3_layer():
    torch.manual_seed(0)
    model = models.build("resnet20").eval()
    data = batches()
    rows = response_stds(model, data)
    names = list(models.response_modules(model))
    assert [row["name"] for row in rows] == names and len(rows) == 18  # 3 stages x 3 blocks x 2 layers
    everything = torch.cat([images for images, _ in data])
    expected = models.layer_responses(model, everything)
    for row in rows:
        assert abs(row["std"] - expected[row["name"]].double().std(unbiased=False).item()) < 1e-4
    assert not model.training


def test_top_k_errors_count_every_image_once():
    model = models.build("resnet20")
    data = batches()
    errors = top_k_errors(model, data, device=torch.device("cpu"))
    logits = torch.cat([model.eval()(images) for images, _ in data])
    labels = torch.cat([labels for _, labels in data])
    assert errors["num_images"] == 48
    assert errors["top1_error"] == pytest.approx((logits.argmax(1) != labels).double().mean().item())
    assert 0 <= errors["top5_error"] <= errors["top1_error"]
