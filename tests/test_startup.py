"""The fixed cost of a stage process: numba compiles FFCV's pipeline once per machine, not once per
stage (data/ffcv_io.py), with the same batches; and `resnet-repro bench startup` times a stage's start."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from projects import committed, run

# FFCV's functions, and numba's typed-dict functions that `import ffcv` runs, which numba's disk cache
# keeps (ffcv_io._compile_with_disk_cache).
CACHED = {"translate", "flip", "decoder", "read", "_make_dict", "_setitem", "_getitem"}

# A fresh process, as a stage is: FFCV's CIFAR training and evaluation pipelines, recording what numba
# compiles; prints that, and the sum of the evaluation images.
_LOADER_PROCESS = """
import json, sys
from pathlib import Path
from numba.core import event

compiled = []

class Recorder(event.Listener):
    def on_start(self, event):
        compiled.append(event.data["dispatcher"].py_func.__qualname__.rsplit(".", 1)[-1])

    def on_end(self, event):
        pass

event.register("numba:compile", Recorder())

import torch
from resnet_repro.data.augment import Augmentation
from resnet_repro.data.ffcv_io import make_loader

directory = Path(sys.argv[1])
common = {"augmentation": Augmentation(crop_size=32, crop_padding=4), "mean_image": torch.zeros(3, 32, 32),
          "device": torch.device("cpu"), "num_workers": 2}
batches = iter(make_loader(directory / "train.beton", batch_size=64, train=True, **common))
next(batches)
batches.close()
test = make_loader(directory / "test.beton", batch_size=50, train=False, **common)
images_sum = sum(float(images.double().sum()) for images, _ in test)
print(json.dumps({"compiled": compiled, "images_sum": images_sum}))
"""


def _loader_process(directory: Path, cache: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", _LOADER_PROCESS, str(directory)], capture_output=True, text=True,
                            env={**os.environ, "NUMBA_CACHE_DIR": str(cache)}, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def test_a_second_process_loads_ffcvs_compiled_pipeline_from_disk_with_the_same_batches(tmp_path, cifar10):
    from resnet_repro.data.ffcv_io import write_beton

    write_beton(tmp_path / "train.beton", cifar10.train_images[:256], cifar10.train_labels[:256])
    write_beton(tmp_path / "test.beton", cifar10.test_images[:100], cifar10.test_labels[:100])
    first = _loader_process(tmp_path, tmp_path / "numba-cache")
    second = _loader_process(tmp_path, tmp_path / "numba-cache")
    assert CACHED <= set(first["compiled"])
    assert not CACHED & set(second["compiled"]), second["compiled"]
    # What numba cannot cache (the image decoder calls C through ctypes) is compiled again.
    assert "decode" in second["compiled"]
    assert second["images_sum"] == first["images_sum"] == pytest.approx(cifar10.test_images[:100].sum() / 255)


@pytest.mark.slow
def test_bench_startup_times_each_part_of_both_stages(tmp_path, cifar10_archive):
    from resnet_repro.config import update_params_file

    params = tmp_path / "params.yaml"
    params.write_text(committed("params.yaml"))
    update_params_file(params, {"data.subset": 1000})
    result = json.loads(run(["resnet-repro", "bench", "startup", "--params", str(params), "--archive",
                             str(cifar10_archive), "--json"], tmp_path).stdout)
    assert set(result["train"]) == {"imports", "ffcv_import", "set_up", "mlflow", "first_batch", "first_step",
                                    "first_evaluation", "evaluation_again", "fixed"}
    assert set(result["evaluate"]) == {"imports", "load_net", "ffcv_import", "loaders", "mlflow",
                                       "first_evaluation", "evaluation_again", "fixed"}
    for stage in ("train", "evaluate"):
        seconds = result[stage]
        assert all(value > 0 for value in seconds.values()), seconds
        # `fixed` as the command defines it: every part but the passes over the test split, plus the first
        # pass's excess over the second (what compiling and warming up cost).
        parts = {part: value for part, value in seconds.items() if part != "fixed"}
        first, again = parts.pop("first_evaluation"), parts.pop("evaluation_again")
        assert seconds["fixed"] == pytest.approx(sum(parts.values()) + max(0.0, first - again)), seconds
    assert result["test_images"] == 10_000
    assert not (tmp_path / "mlflow.db").exists()  # the bench logs into its own store
