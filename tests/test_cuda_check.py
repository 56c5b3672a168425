"""The first-GPU check (docs/engine.md, "The first GPU") where there is no GPU: its core's checks run on the
CPU through the same functions (the training step in each precision, a checkpoint resumed bit for bit),
find a resume that is not bitwise and a step that does not compute in its precision, and import nothing
but torch; without CUDA, the core and scripts/first-gpu.sh say so in one line and exit 1; the table of
`resnet-repro bench precisions` shows only figures it measured. The same checks on CUDA are
scripts/first-gpu.sh's to run.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from projects import REPOSITORY, VENV_BIN, params_with
from resnet_repro.benchmarks import throughput
from resnet_repro.benchmarks.throughput import TrainBenchSettings, bench_precisions, precision_table
from resnet_repro.config import parse_params
from resnet_repro.device import autocast_dtype
from resnet_repro.train import step
from resnet_repro.train.cuda_check import Batches, CheckFailed, check_precision
from resnet_repro.train.state import TrainingState

CPU = torch.device("cpu")
# ResNet-8 on 8x8 images, as test_precision.py trains it: fp16 and bf16 are emulated on most CPUs.
SMALL: dict[str, Any] = {"net": "resnet8", "batches": Batches(size=8, image_size=8), "compile": False}
NO_CUDA_LINE = re.compile(r"^no CUDA device: torch \S+ \((CUDA \S+|cpu) build\) sees none; nothing run$")
ARCHIVE = Path("unread.tar.gz")  # bench_training is stood in for
HIDDEN_GPUS = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # torch then sees none, on any machine


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_the_core_trains_and_resumes_bitwise_on_the_cpu(precision):
    before = torch.are_deterministic_algorithms_enabled()
    line = check_precision(precision, CPU, **SMALL)
    assert line.startswith(f"{precision}: 8 steps of resnet8 ") and line.endswith("at step 4: bit for bit"), line
    assert torch.are_deterministic_algorithms_enabled() == before  # the check's deterministic mode ended with it


@pytest.mark.slow  # inductor compiles the step's forward and backward twice: minutes of a small CPU
def test_the_core_runs_the_compiled_step():
    assert "compiled" in check_precision("fp32", CPU, net="resnet8", batches=Batches(size=8, image_size=8))


def test_the_core_finds_a_resume_that_is_not_bitwise(monkeypatch):
    restore = TrainingState.restore

    def without_momentum(state, model, optimizer, schedule, scaler):
        restore(state, model, optimizer, schedule, scaler)
        optimizer.state.clear()  # as if the checkpoint had not held SGD's momentum

    monkeypatch.setattr(TrainingState, "restore", without_momentum)
    with pytest.raises(CheckFailed, match=r"^fp32 on cpu: the run resumed from the checkpoint at step 4 ended with "
                                          r"other values of \d+ tensors than the uninterrupted run"):
        check_precision("fp32", CPU, **SMALL)


def test_the_core_finds_an_fp16_resume_that_loses_the_gradient_scaler(monkeypatch):
    restore = TrainingState.restore

    def without_scaler(state, model, optimizer, schedule, scaler):
        restore(state, model, optimizer, schedule, torch.amp.GradScaler("cpu"))  # into another scaler

    monkeypatch.setattr(TrainingState, "restore", without_scaler)
    with pytest.raises(CheckFailed, match="gradient scaler ended in another state"):
        check_precision("fp16", CPU, **SMALL)


def test_the_core_finds_a_step_that_does_not_compute_in_its_precision(monkeypatch):
    monkeypatch.setattr(step, "autocast", lambda device, dtype: contextlib.nullcontext())
    with pytest.raises(CheckFailed, match=r"^bf16 on cpu: the step computed in float32, not bfloat16$"):
        check_precision("bf16", CPU, **SMALL)


def test_auto_trains_in_fp16_on_a_gpu_that_only_emulates_bf16(monkeypatch):
    # torch's is_bf16_supported() says True for a V100 or T4 unless asked without emulation.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert autocast_dtype("auto", torch.device("cuda")) is torch.float16


# A GPU node with nothing but torch: every other dependency of the project is absent (None in sys.modules:
# `import` fails, and importlib.util.find_spec answers None, as for a package that is not installed). The
# core's check runs on the CPU, then its command with CUDA hidden; the package's modules it loaded, as JSON.
_TORCH_ONLY = """
import json, sys
for name in ("pydantic", "tqdm", "safetensors", "yaml", "ruamel", "mlflow", "dvc", "ffcv", "numba", "albumentations",
             "cv2", "ray", "psutil", "psycopg", "matplotlib", "pytest"):
    sys.modules[name] = None
import torch
from resnet_repro.train.cuda_check import Batches, check_precision, main
print(check_precision("fp32", torch.device("cpu"), net="resnet8", batches=Batches(size=8, image_size=8), compile=False))
status = main([])
print(json.dumps({"status": status, "package": sorted(name for name in sys.modules if name.startswith("resnet_repro"))}))
"""


def test_the_core_needs_nothing_but_torch():
    result = subprocess.run([sys.executable, "-c", _TORCH_ONLY], capture_output=True, text=True, env=HIDDEN_GPUS,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line, report = result.stdout.strip().splitlines()
    assert line.endswith("bit for bit")
    report = json.loads(report)
    assert report["status"] == 1 and NO_CUDA_LINE.match(result.stderr.strip().splitlines()[-1])
    assert set(report["package"]) == {
        "resnet_repro", "resnet_repro.device", "resnet_repro.gitinfo", "resnet_repro.io", "resnet_repro.models", "resnet_repro.models.audit",
        "resnet_repro.models.resnet", "resnet_repro.models.weights", "resnet_repro.models.zoo", "resnet_repro.train",
        "resnet_repro.train.cuda_check", "resnet_repro.train.distributed", "resnet_repro.train.errors",
        "resnet_repro.train.optimizer", "resnet_repro.train.state", "resnet_repro.train.step"}


@pytest.mark.parametrize("command", [[str(VENV_BIN / "python"), "-m", "resnet_repro.train.cuda_check"],
                                     ["bash", "scripts/first-gpu.sh"]])
def test_without_cuda_the_first_gpu_commands_say_so_in_one_line_and_exit_1(command):
    result = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, env=HIDDEN_GPUS, timeout=300)
    assert (result.returncode, result.stdout) == (1, ""), result.stdout + result.stderr
    assert NO_CUDA_LINE.match(result.stderr.strip()), result.stderr


# --- the table of images/s per precision ------------------------------------------------------------

@pytest.fixture
def measured(monkeypatch) -> list[tuple[str, str]]:
    """bench_training stood in for: each call gets a rate of its own, 1000 + its position; the list of
    (device, precision) it was called with."""
    calls = []

    def bench_training(archive, settings, params, *, baseline):
        assert not baseline
        calls.append((settings.device, settings.precision))
        return {"img_per_s": 1000.0 + len(calls), "settings": {"compile_resolved": settings.device == "cuda"}}

    monkeypatch.setattr(throughput, "bench_training", bench_training)
    monkeypatch.setattr(throughput, "cpu_has_native_bf16", lambda: False)
    return calls


def test_the_table_shows_what_was_measured_and_why_the_rest_was_not(monkeypatch, measured):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(throughput, "skipped_on_cuda", lambda: {"bf16": "a T4 has no bf16 units"})
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Tesla T4")
    params = parse_params(params_with({}))
    result = bench_precisions(ARCHIVE, TrainBenchSettings.from_params(params, model="resnet20", warmup_steps=20,
                                                                      timed_steps=60), params)
    assert measured == [("cuda", "fp32"), ("cuda", "fp16"), ("cpu", "fp32")]
    table = precision_table(result)
    lines = table.splitlines()
    assert lines[1].split() == ["precision", "cuda", "(Tesla", "T4)", "cpu", f"({torch.get_num_threads()}", "threads)"]
    assert lines[2].split() == ["fp32", "1,001", "(compiled)", "1,003"]
    assert lines[3].split() == ["bf16", "skipped", "skipped"]
    assert lines[4].split() == ["fp16", "1,002", "(compiled)", "skipped"]
    assert lines[5] == "skipped cuda bf16: a T4 has no bf16 units"
    assert lines[6].startswith("skipped cpu bf16: this CPU has no bf16 instructions")
    assert lines[7] == "skipped cpu fp16: `precision: auto` never trains in fp16 on a CPU"
    assert len(lines) == 8


def test_without_cuda_the_table_measures_the_cpu_alone(monkeypatch, measured):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    params = parse_params(params_with({}))
    result = bench_precisions(ARCHIVE, TrainBenchSettings.from_params(params, model="resnet20", warmup_steps=20,
                                                                      timed_steps=60), params)
    assert measured == [("cpu", "fp32")]
    cuda = result["images_per_second"]["cuda"]
    assert all(set(cell) == {"skipped"} and cell["skipped"].startswith("no CUDA device: torch ")
               for cell in cuda.values())
    assert "skipped cuda fp32, cuda bf16, cuda fp16: no CUDA device: torch" in precision_table(result)


@pytest.mark.slow  # the real benchmark: CIFAR-10 read, written as FFCV, the training loop in each precision
def test_bench_precisions_measures_the_cpu_and_skips_what_this_machine_lacks(cifar10_archive):
    result = subprocess.run([str(VENV_BIN / "resnet-repro"), "bench", "precisions", "--archive", str(cifar10_archive),
                             "--warmup-steps", "1", "--steps", "2", "--workers", "1", "--batch-size", "32", "--json"],
                            cwd=REPOSITORY, capture_output=True, text=True, env=HIDDEN_GPUS, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    table = json.loads(result.stdout)["images_per_second"]
    assert all("no CUDA device" in cell["skipped"] for cell in table["cuda"].values())
    expected_on_cpu = {"fp32"} | ({"bf16"} if throughput.cpu_has_native_bf16() else set())
    assert {precision for precision, cell in table["cpu"].items() if "img_per_s" in cell} == expected_on_cpu
    assert all(0 < cell["img_per_s"] < float("inf") for cell in table["cpu"].values() if "img_per_s" in cell)
