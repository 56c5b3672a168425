"""Peak memory of the prepare and ffcv stages does not grow with the number of images.

Both stages run, as DVC runs them, in a fresh Python process each (params.yaml parsed, Layout built),
on image folders of N and 4N real CIFAR-10 photographs upscaled to ImageNet sizes. Each process
reports its own peak RSS and that of its largest worker process: prepare decodes in a `spawn`
multiprocessing.Pool, FFCV's DatasetWriter decodes and encodes in forked multiprocessing.Process
workers (processes, not threads, so the parent's peak alone would not see them).
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from folders import cifar_image_folder
from projects import params_with

CLASSES = 4
# N = 440 images, 4N = 1760: both fill prepare's rounds of 256 files, so both are in steady state.
TRAIN_PER_CLASS, VAL_PER_CLASS = 100, 10
SCALE = 4
# ImageNet's usual shapes: a decoded image is ~0.55 MB, its 224x224 statistics view 0.15 MB.
PHOTO_SIZES = [(500, 375), (375, 500), (500, 333), (450, 450), (333, 500)]

# Runs one stage as pipeline/_stage.py does and prints its peaks in bytes: RUSAGE_SELF, RUSAGE_CHILDREN
# (the largest reaped worker; FFCV starts its writers and never joins them, hence the joins), and the
# largest VmHWM of a worker, sampled every 20 ms. The last is the workers' own figure: a child started
# by vfork+exec (how `spawn` starts prepare's workers) begins with its parent's peak as its ru_maxrss,
# so there RUSAGE_CHILDREN shows the stage process's peak at the time, not the workers'. Until it
# execs, such a child shares its parent's memory (and VmHWM) while the parent's thread waits in state
# D; a round of samples in which one of our threads is in D is skipped.
MEASURE = """
import json, multiprocessing, resource, sys, threading
from glob import glob
from pathlib import Path
from resnet_repro.config import load_params
from resnet_repro.layout import Layout
from resnet_repro.stages.prepare import prepare, write_ffcv

def vm_hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):  # gone, or a zombie
        return 0

def read(path):
    try:
        with open(path) as file:
            return file.read()
    except OSError:  # a thread that has just ended
        return ""

worker_peak, stop = 0, threading.Event()
def watch_workers():
    global worker_peak
    while not stop.wait(0.02):
        children = " ".join(read(path) for path in glob("/proc/self/task/*/children")).split()
        if any(read(path).rsplit(")", 1)[-1].split()[:1] == ["D"] for path in glob("/proc/self/task/*/stat")):
            continue  # maybe in vfork: a child listed above may still share our memory
        worker_peak = max([worker_peak] + [vm_hwm(pid) for pid in children])
watcher = threading.Thread(target=watch_workers, daemon=True)
watcher.start()

stage, project = {"prepare": prepare, "ffcv": write_ffcv}[sys.argv[1]], Path(sys.argv[2])
params = load_params(project / "params.yaml")
stage(params, Layout(project, params.data.dataset))
for child in multiprocessing.active_children():
    child.join()
stop.set()
watcher.join()
print(json.dumps({"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux reports KiB
                  "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
                  "workers": worker_peak}))
"""


def decoded_bytes(root: Path) -> int:
    """What holding every image of the folder decoded (uint8 RGB) would cost."""
    total = 0
    for path in root.glob("*/*/*.JPEG"):
        with Image.open(path) as image:  # reads the header only
            total += image.width * image.height * 3
    return total


def run_stage(stage: str, projects: list[Path]) -> list[dict]:
    """Run `stage` in every project at once (a process each), and return the peaks of each."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "NO_ALBUMENTATIONS_UPDATE": "1"}
    # Started by a shell that forks it (not execs it): a process vforked from pytest and exec'd keeps
    # pytest's peak RSS as its ru_maxrss, one forked from the small shell starts from the shell's.
    # Side by side, since most of a run is importing torch, FFCV and MLflow; peaks are per process.
    running = [subprocess.Popen(["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-c", MEASURE, stage,
                                 str(project)], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True) for project in projects]
    peaks = []
    try:
        for process in running:
            stdout, stderr = process.communicate(timeout=600)
            assert process.returncode == 0, f"{stage} failed:\n{stdout[-3000:]}\n{stderr[-3000:]}"
            peaks.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for process in running:
            if process.poll() is None:  # the other run, after a failure or a timeout: its whole group
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return peaks


@pytest.fixture(scope="module")
def peaks(tmp_path_factory, cifar10) -> dict:
    """{scale: {"images", "decoded", "prepare", "ffcv"}} for folders of N and SCALE * N images."""
    results: dict[int, dict] = {}
    projects = {}
    for scale in (1, SCALE):
        project = projects[scale] = tmp_path_factory.mktemp(f"project{scale}n")
        root = cifar_image_folder(cifar10, project / "photos", classes=CLASSES, train_per_class=scale * TRAIN_PER_CLASS,
                                  val_per_class=scale * VAL_PER_CLASS, sizes=PHOTO_SIZES)
        params = params_with({
            "data": {"dataset": "imagefolder", "root": str(root), "val_size": 0},
            "loader": {"num_workers": 2}, "train": {"iterations": 10, "milestones": []},
            "study": {"variants": ["resnet18"]},
            "mlflow": {"tracking_uri": f"sqlite:///{project / 'mlflow.db'}", "experiment": "memory"}})
        (project / "params.yaml").write_text(yaml.safe_dump(params))
        results[scale] = {"images": scale * CLASSES * (TRAIN_PER_CLASS + VAL_PER_CLASS), "decoded": decoded_bytes(root)}
    for stage in ("prepare", "ffcv"):
        for scale, peak in zip(projects, run_stage(stage, list(projects.values()))):
            results[scale][stage] = peak
    for scale, project in projects.items():
        meta = json.loads((project / "data" / "prepared" / "imagefolder" / "meta.json").read_text())
        assert sum(meta["sizes"].values()) == results[scale]["images"]
        assert (project / "data" / "ffcv" / "imagefolder" / "train.beton").stat().st_size > 0
    return results


@pytest.mark.slow  # 85-150 s on 2 shared cores, most of it importing torch, FFCV and MLflow 4 times
@pytest.mark.parametrize("stage", ["prepare", "ffcv"])
def test_peak_memory_does_not_grow_with_the_number_of_images(peaks, stage):
    small, large = peaks[1], peaks[SCALE]
    extra_decoded = large["decoded"] - small["decoded"]
    # The bound: an eighth of what the extra images take decoded (~80 MB here). A stage that kept every
    # decoded image would grow by all of it (8x the bound); one that kept every 224x224 view it streams
    # into the statistics (prepare) would still grow by 224^2/(~182,000 pixels per image) ~ 28% of it,
    # over twice the bound. What a streaming stage holds (a chunk of 256 views in prepare, one image
    # per FFCV writer, a few bytes of file list and metadata per image) stays far below it.
    bound = extra_decoded / 8
    mb = 2 ** 20
    print(f"\n{stage} peak RSS, {small['images']} -> {large['images']} images "
          f"(extra images decoded: {extra_decoded / mb:.0f} MB, bound on growth: {bound / mb:.0f} MB): "
          f"stage process {small[stage]['self'] / mb:.0f} -> {large[stage]['self'] / mb:.0f} MB, "
          f"largest worker {small[stage]['workers'] / mb:.0f} -> {large[stage]['workers'] / mb:.0f} MB "
          f"(RUSAGE_CHILDREN {small[stage]['children'] / mb:.0f} -> {large[stage]['children'] / mb:.0f} MB)")
    assert small[stage]["workers"] and large[stage]["workers"], "no worker process was seen"
    for who in ("self", "workers", "children"):
        growth = large[stage][who] - small[stage][who]
        assert growth < bound, (f"{stage} ({who}): peak RSS grew by {growth / mb:.0f} MB from {small['images']} "
                                f"to {large['images']} images, more than {bound / mb:.0f} MB")
