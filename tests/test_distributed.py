"""Data-parallel training on CPU: two processes under torchrun with gloo, as `train.nproc: 2` runs them.

With a global batch of 32, each process takes 16 images of every batch and DDP averages the two
gradients. That is exactly what one process does when it accumulates the gradients of the same two
half-batches (each loss halved): the weights must come out bit for bit the same. Batch normalisation
sees each process's 16 images, as in the paper's multi-GPU training, which is why the reference
accumulates half-batches instead of stepping on the whole batch of 32.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from projects import VENV_BIN, params_with, prepared_project, write_train_script
from resnet_repro import models
from resnet_repro.config import ConfigError, parse_params
from resnet_repro.data.augment import augmentation_for
from resnet_repro.data.prepared import read_split
from resnet_repro.data.stats import load_stats, mean_image_tensor
from resnet_repro.data.torch_loader import ArrayImages, TorchLoader
from resnet_repro.layout import Layout
from resnet_repro.train.optimizer import parameter_groups
from resnet_repro.train.state import seed_everything

pytestmark = pytest.mark.pipeline  # processes, servers or a browser: not the quick tier

TRAIN = {"batch_size": 32, "milestones": [6], "checkpoint_every": 4, "checkpoint_seconds": 3600, "log_every": 4,
         "eval_every": 0, "deterministic": True, "precision": "fp32"}


def params_for(archive: Path, **train) -> dict:
    return params_with({"data": {"archive": str(archive)}, "loader": {"backend": "torch", "num_workers": 1},
                        "train": {**TRAIN, **train}, "study": {"variants": ["resnet20"]},
                        "mlflow": {"experiment": "ddp-test"}})


def accumulated_half_batches(root: Path, params: dict, processes: int) -> tuple[dict, list[float]]:
    """One process, one thread (as torchrun gives each CPU process): per step, the gradients of each
    process's share of the batch, each loss divided by the number of processes; the final weights and
    the mean loss of each step."""
    config = parse_params(params)
    layout = Layout(root)
    stats = load_stats(layout.prepared_dir / "stats.json")
    images, labels = read_split(layout.prepared_dir, "train")
    shares = [TorchLoader(ArrayImages(images, labels, augmentation_for("cifar10", config.augment, stats), True),
                          batch_size=config.train.batch_size // processes, train=True, device=torch.device("cpu"),
                          mean_image=mean_image_tensor(stats, size=32), num_workers=0, seed=0, rank=rank,
                          num_replicas=processes)
              for rank in range(processes)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seed_everything(0)
        model = models.build("resnet20", num_classes=10).to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(parameter_groups(model, config.train), lr=config.train.lr,
                                    momentum=config.train.momentum)
        step_losses = []
        for step, batches in zip(range(config.train.iterations), zip(*shares)):
            lr = config.train.lr * (config.train.lr_decay if step >= config.train.milestones[0] else 1)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad()
            losses = []
            for images, labels in batches:
                loss = F.cross_entropy(model(images.contiguous(memory_format=torch.channels_last)), labels)
                (loss / processes).backward()
                losses.append(loss.item())
            optimizer.step()
            step_losses.append(sum(losses) / processes)
    finally:
        torch.set_num_threads(threads)
    return model.state_dict(), step_losses


def test_two_processes_train_as_one_that_accumulates_their_half_batches(tmp_path, cifar10, cifar10_archive):
    from mlflow import MlflowClient

    root = prepared_project(tmp_path, cifar10)
    params = params_for(cifar10_archive, iterations=8, nproc=2)
    # The stage as DVC runs it: train.nproc = 2 makes it start torchrun, which runs it twice.
    result = subprocess.run([sys.executable, str(write_train_script(root, params))], cwd=root, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--nproc_per_node=2" in result.stdout

    expected_weights, step_losses = accumulated_half_batches(root, params, processes=2)
    weights = load_file(Layout(root).model_dir("resnet20", 0) / "model.safetensors")
    trained = [key for key, tensor in expected_weights.items() if "running" not in key and "num_batches" not in key]
    for key in trained:  # BN's running statistics are rank 0's alone: DDP broadcasts them from there
        assert torch.equal(weights[key], expected_weights[key]), f"{key} differs from the accumulated gradients"

    # Rank 0 alone logged: one training run, whose losses are those of the whole global batch.
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ddp-test")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id], filter_string="tags.variant = 'resnet20'")
    assert run.data.tags["processes"] == "2" and run.info.status == "FINISHED"
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss"))
    assert [step for step, _ in history] == [4, 8]
    for (step, logged), expected in zip(history, (step_losses[:4], step_losses[4:])):
        assert logged == pytest.approx(sum(expected) / 4, rel=1e-6), f"loss at step {step}"
    assert torch.load(Layout(root).checkpoint_path("resnet20", 0), weights_only=True)["complete"]


def test_a_killed_process_stops_the_whole_torchrun_training_with_its_error(tmp_path, cifar10, cifar10_archive):
    root = prepared_project(tmp_path, cifar10)
    script = write_train_script(root, params_for(cifar10_archive, iterations=10_000, checkpoint_every=2))
    # Plain torchrun, as a user or a cluster script would call it.
    torchrun = subprocess.Popen([str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node=2", str(script)],
                                cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    try:
        checkpoint = Layout(root).checkpoint_path("resnet20", 0)
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and torchrun.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert checkpoint.exists(), torchrun.communicate(timeout=60)[1][-3000:]
        # torchrun's own children are the training processes (their loader workers are grandchildren).
        ranks = psutil.Process(torchrun.pid).children()
        [rank1] = [process for process in ranks if process.environ().get("RANK") == "1"]
        rank1.kill()  # SIGKILL, as the kernel's OOM killer would
        _, stderr = torchrun.communicate(timeout=180)
    finally:
        if torchrun.poll() is None:
            os.killpg(torchrun.pid, signal.SIGKILL)
    assert torchrun.returncode != 0
    root_cause = stderr[stderr.index("Root Cause"):]
    assert "rank      : 1 (local_rank: 1)" in root_cause, stderr[-3000:]
    assert f"exitcode  : -9 (pid: {rank1.pid})" in root_cause, stderr[-3000:]
    # Rank 0 did not wait for rank 1 forever: its MLflow run ended, failed.
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ddp-test")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id], filter_string="tags.variant = 'resnet20'")
    assert run.info.status == "FAILED", run.data.tags.get("failure_reason")
    assert not any(_running(process) for process in ranks), "a training process outlived torchrun"


def test_sigterm_stops_every_process_at_one_iteration_and_the_run_resumes(tmp_path, cifar10, cifar10_archive):
    """What a cluster does to a job under torchrun: SIGTERM to all of its processes, later a restart."""
    from mlflow import MlflowClient

    root = prepared_project(tmp_path, cifar10)
    script = write_train_script(root, params_for(cifar10_archive, iterations=400, checkpoint_every=2))
    command = [str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node=2", str(script)]
    torchrun = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    checkpoint = Layout(root).checkpoint_path("resnet20", 0)
    try:
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and torchrun.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(torchrun.pid, signal.SIGTERM)
        _, stderr = torchrun.communicate(timeout=180)
    finally:
        if torchrun.poll() is None:
            os.killpg(torchrun.pid, signal.SIGKILL)
    state = torch.load(checkpoint, weights_only=True)
    # The processes agreed on where to stop (a log step, where they exchange), and rank 0 saved it.
    assert not state["complete"] and state["iteration"] % TRAIN["log_every"] == 0, stderr[-3000:]
    assert f"stopped by SIGTERM at iteration {state['iteration']} of 400" in stderr
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    assert client.get_run(state["run_id"]).info.status == "KILLED"

    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resumed from checkpoint at iteration {state['iteration']}: {checkpoint}" in result.stdout + result.stderr
    run = client.get_run(state["run_id"])  # the same run, continued
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert sorted(steps) == list(range(4, 401, 4))  # each log step once


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_global_batch_must_split_evenly_between_the_processes(cifar10_archive):
    with pytest.raises(ConfigError, match=r"train.batch_size = 32 does not split evenly between train.nproc = 3"):
        parse_params(params_for(cifar10_archive, iterations=8, nproc=3))
