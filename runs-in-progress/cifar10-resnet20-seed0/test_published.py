"""The net this project published (results/cifar10-resnet20/): it loads by name and scores as published.

Scored here by code independent of the package's data path: the test batch is read straight from the
archive with tarfile and pickle, the per-pixel mean of preprocess.safetensors subtracted and the
result divided by 255 in numpy, as `resnet_repro.data.normalize` defines the input.
"""

import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from resnet_repro.models import build, weights

RESULTS = Path(__file__).resolve().parents[1] / "results" / "cifar10-resnet20"
GOAL = 0.0925  # within 0.5 points of the paper's 8.75% (Table 6), issue 14


def independent_test_error(archive: Path, count: int | None = None) -> float:
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("test_batch"))
        batch = pickle.load(tar.extractfile(member), encoding="bytes")
    images = batch[b"data"].reshape(-1, 3, 32, 32).astype(np.float32)[:count]
    labels = np.asarray(batch[b"labels"])[:count]
    mean_image = load_file(str(RESULTS / "preprocess.safetensors"))["mean_image"]
    net = build("resnet20", weights="cifar10").eval()
    with torch.no_grad():
        predicted = torch.cat([net(torch.from_numpy((chunk - mean_image) / 255)).argmax(1)
                               for chunk in np.array_split(images, max(1, len(images) // 500))]).numpy()
    return float((predicted != labels).mean())


def test_published_resnet20_scores_its_published_error_on_the_first_1000_test_images(cifar10_archive):
    published = json.loads((RESULTS / "first1000.json").read_text())["test_top1_error"]
    assert independent_test_error(cifar10_archive, 1000) == pytest.approx(published, abs=0.0011)


@pytest.mark.slow
def test_published_resnet20_scores_eval_json_on_the_whole_test_set(cifar10_archive):
    published = json.loads((RESULTS / "eval.json").read_text())["test_top1_error"]
    error = independent_test_error(cifar10_archive)
    assert error == pytest.approx(published, abs=0.002)
    assert error <= GOAL
    assert weights.lookup("resnet20", "cifar10").test_top1_error == published
