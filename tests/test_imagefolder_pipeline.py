"""An ImageNet-style folder through the whole DVC pipeline: prepare, ffcv, a short training of ResNet-18,
the paper's 10-crop and multi-scale evaluation, and registration, as a user runs it.

The photographs are real (CIFAR-10 images upscaled to a mix of sizes, some grayscale) with a broken
file among them; the crops are small so that ResNet-18 trains in seconds on a CPU.
"""

import json
from pathlib import Path

import pytest

from folders import cifar_image_folder
from projects import copy_repository, run

pytestmark = pytest.mark.pipeline

CLASSES = 3
VAL_PER_CLASS = 10


@pytest.fixture(scope="module")
def project(tmp_path_factory, cifar10) -> Path:
    root = cifar_image_folder(cifar10, tmp_path_factory.mktemp("photos"), classes=CLASSES, train_per_class=40,
                              val_per_class=VAL_PER_CLASS)
    broken = root / "train" / "n00000001" / "n00000001_cut.JPEG"
    whole = next((root / "train" / "n00000001").iterdir()).read_bytes()
    broken.write_bytes(whole[:len(whole) // 3])
    project = copy_repository(tmp_path_factory.mktemp("project"), **{
        "data.dataset": "imagefolder", "data.root": str(root), "data.val_size": 0, "data.max_bad_fraction": 0.05,
        "data.max_resolution": 256,
        # The paper's ImageNet geometry scaled down from 224 crops to 64.
        "augment.crop_size": 64, "augment.scale_range": [72, 112], "augment.eval_resize": 73,
        "augment.test_scales": [64, 96, 128], "augment.lighting_std": 0.1,
        "train.iterations": 20, "train.batch_size": 16, "train.milestones": [10, 15], "train.checkpoint_every": 10,
        "train.eval_every": 0, "train.log_every": 5,
        "evaluate.views": ["center", "ten_crop", "multi_scale"], "evaluate.batch_size": 50,
        "study.name": "imagefolder-smoke", "study.variants": ["resnet18"], "study.seeds": [0],
        "mlflow.experiment": "resnet-repro-imagefolder",
    })
    run(["dvc", "repro"], project, timeout=1800)
    return project


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_prepare_lists_the_broken_file_and_keeps_the_rest(project):
    skipped = read_json(project / "data" / "prepared" / "imagefolder" / "skipped.json")
    assert skipped["count"] == 1 and skipped["skipped"][0]["path"].endswith("n00000001_cut.JPEG")
    meta = read_json(project / "data" / "prepared" / "imagefolder" / "meta.json")
    assert meta["sizes"] == {"train": 40 * CLASSES, "val": VAL_PER_CLASS * CLASSES}
    assert meta["class_names"] == [f"n{index:08d}" for index in range(CLASSES)]


def test_evaluation_reports_center_ten_crop_and_multi_scale_errors(project):
    evaluation = read_json(project / "metrics" / "resnet18" / "seed0" / "eval.json")
    assert evaluation["val_images"] == VAL_PER_CLASS * CLASSES
    for view in ("val", "val_ten_crop", "val_multi_scale"):
        top1, top5 = evaluation[f"{view}_top1_error"], evaluation[f"{view}_top5_error"]
        # Three classes: top-5 always holds the label; top-1 is a multiple of 1/30.
        assert top5 == 0.0 and 0.0 <= top1 <= 1.0 and round(top1 * 30, 6).is_integer(), (view, evaluation)
    responses = read_json(project / "metrics" / "resnet18" / "seed0" / "responses.json")
    assert len(responses) == 16 and all(row["std"] > 0 for row in responses)  # ResNet-18's 3x3 layers


def test_registered_model_carries_the_class_names(project):
    from mlflow import MlflowClient

    registry = read_json(project / "metrics" / "resnet18" / "seed0" / "registry.json")
    assert registry["name"] == "imagefolder-resnet18"
    description = read_json(project / "models" / "resnet18" / "seed0" / "model.json")
    assert description["class_names"] == [f"n{index:08d}" for index in range(CLASSES)]
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    version = client.get_model_version_by_alias(registry["name"], "champion")
    assert version.run_id is not None
    run_metrics = client.get_run(version.run_id).data.metrics
    assert {"val_ten_crop_top1_error", "val_multi_scale_top1_error"} <= set(run_metrics)


def test_second_repro_runs_nothing(project):
    assert "up to date" in run(["dvc", "status"], project).stdout
