"""Published weights as users load them: `build(name, weights=...)`, `resnet-repro predict --model MODEL:WEIGHTS`.

A randomly initialised resnet20 is published here the way `scripts/publish_result.py` publishes a trained one
(its results folder, the sha256 of its files pinned in `models.weights`), in a temporary folder found through
$RESNET_REPRO_WEIGHTS, as a user outside a checkout would keep it. The net the project itself published is
checked against its test error in tests/test_published.py.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_repro.artifacts import save_trained
from resnet_repro.cli import main
from resnet_repro.io import file_sha256
from resnet_repro.models import build, weights

MODEL_FILES = ("model.safetensors", "preprocess.safetensors", "model.json")


@pytest.fixture
def published(cifar10, tmp_path, monkeypatch) -> weights.PublishedWeights:
    torch.manual_seed(0)
    net = build("resnet20", num_classes=10).eval()
    mean_image = torch.from_numpy(cifar10.train_images[:1000].mean(axis=0, dtype=np.float32)).permute(2, 0, 1)
    folder = tmp_path / "weights" / "cifar10-resnet20-test"
    save_trained(folder, net, mean_image.contiguous(),
                 {"arch": "resnet20", "num_classes": 10, "class_names": cifar10.class_names, "input_size": 32,
                  "dataset": "cifar10", "seed": 0, "options": {"shortcut": "A"}})
    entry = weights.PublishedWeights(
        model="resnet20", name="test", folder=folder.name,
        sha256={name: file_sha256(folder / name) for name in MODEL_FILES},
        test_top1_error=0.9, description="a random resnet20, published by a test")
    monkeypatch.setitem(weights.PUBLISHED, entry.ref, entry)
    monkeypatch.setenv("RESNET_REPRO_WEIGHTS", str(folder.parent))
    return entry


def test_build_with_weights_loads_the_published_tensors(published, tmp_path):
    loaded = build("resnet20", weights="test")
    torch.manual_seed(0)
    expected = build("resnet20", num_classes=10).state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(loaded.state_dict()[key], tensor), key


def test_predict_uses_published_weights_without_an_mlflow_store(published, cifar10, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = []
    for index in range(3):
        paths.append(tmp_path / f"test-{index}.png")
        Image.fromarray(cifar10.test_images[index]).save(paths[-1])

    assert main(["predict", "--model", published.ref, *map(str, paths)]) == 0

    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [line[0] for line in lines] == [str(path) for path in paths]
    assert all(line[1] in cifar10.class_names and 0 < float(line[2]) <= 1 for line in lines)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_a_changed_weights_file_is_refused_with_its_name(published, tmp_path):
    path = tmp_path / "weights" / published.folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one bit of the last tensor: the file still loads, so only the sha256 can tell
    path.write_bytes(bytes(data))

    with pytest.raises(ValueError, match=f"{path}: sha256 is .* but the published resnet20:test is"):
        build("resnet20", weights="test")


def test_unknown_weights_are_refused_with_the_list_of_published_ones(published, capsys):
    with pytest.raises(LookupError, match=r"no published weights 'imagenet' for resnet20; .*resnet20:test"):
        build("resnet20", weights="imagenet")

    assert main(["predict", "--model", "resnet20:imagenet", "any.png"]) == 2
    assert "resnet20:test" in capsys.readouterr().err


def test_missing_published_folder_names_where_it_was_looked_for(published, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_REPRO_WEIGHTS", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        build("resnet20", weights="test")
