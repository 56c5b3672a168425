"""`resnet-repro study run`: a small real CIFAR-10 study of two nets on a local Ray with 2 CPUs (and two
declared GPUs, which Ray hands out as CUDA_VISIBLE_DEVICES on a machine without any), a local DVC
remote, and the end state of a sequential `dvc repro`."""

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

from projects import VENV_BIN, copy_repository, run, stages_that_would_run

pytestmark = pytest.mark.pipeline

VARIANTS = ["plain20", "resnet20"]


def small_study(directory: Path, archive: Path, iterations: int) -> Path:
    project = copy_repository(directory, **{
        "data.archive": str(archive), "data.subset": 500, "data.val_size": 0, "train.iterations": iterations,
        "train.milestones": [iterations // 2, iterations * 3 // 4], "train.checkpoint_every": 5,
        "train.eval_every": iterations // 2, "train.log_every": 5, "study.variants": VARIANTS, "study.seeds": [0]})
    run(["dvc", "remote", "add", "--local", "-f", "-d", "test", str(directory.parent / f"{directory.name}-remote")],
        project)
    return project


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path, monkeypatch):
    """A local Ray 'cluster' of this machine: 2 CPUs, 2 declared GPUs. Ray 2.60's token authentication is
    off for it (it listens on this machine only), in `ray start` and in the drivers the tests start."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    port = free_port()
    run([str(VENV_BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=2",
         "--include-dashboard=false", "--disable-usage-stats"], tmp_path, timeout=300)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        run([str(VENV_BIN / "ray"), "stop", "--force"], tmp_path, check=False, timeout=300)


def study_run(project: Path, *arguments: str, **kwargs) -> subprocess.CompletedProcess:
    return run(["resnet-repro", "study", "run", *arguments], project, timeout=1800, **kwargs)


def test_two_nets_train_at_once_and_come_back_through_dvc(tmp_path, cifar10_archive, ray_head):
    project = small_study(tmp_path / "project", cifar10_archive, iterations=20)
    output = study_run(project, "--address", ray_head).stdout
    for variant in VARIANTS:
        assert re.search(rf"^queued   train@{variant}-0 \(num_gpus=1", output, re.MULTILINE), output
        assert re.search(rf"^finished train@{variant}-0 on ", output, re.MULTILINE), output
    # Each concurrent task was given its own GPU.
    visible = re.findall(r"^started  train@\S+ on \S+, CUDA_VISIBLE_DEVICES=(\d+)", output, re.MULTILINE)
    assert sorted(visible) == ["0", "1"], output
    assert "dvc repro restored 2 of 2 trained net(s) from the run-cache" in output

    # The workspace is what a sequential `dvc repro` leaves: nothing to run, every net registered.
    assert "up to date" in run(["dvc", "status"], project).stdout
    assert stages_that_would_run(project) == set()
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = {r.info.run_name: r for r in client.search_runs(
        [client.get_experiment_by_name("resnet-repro-cifar10").experiment_id])}
    plain, residual = runs["plain20 seed 0"], runs["resnet20 seed 0"]
    # The two trainings overlapped in time, each nested under the study's one parent run.
    assert plain.info.start_time < residual.info.end_time and residual.info.start_time < plain.info.end_time
    assert plain.data.tags["mlflow.parentRunId"] == residual.data.tags["mlflow.parentRunId"] \
        == runs["cifar-paper"].info.run_id
    for variant in VARIANTS:
        assert client.get_model_version_by_alias(f"cifar10-{variant}", "champion").version == 1
        assert len(client.get_metric_history(runs[f"{variant} seed 0"].info.run_id, "loss")) == 4  # no doubles


def test_a_dirty_tree_is_refused_with_the_reason(tmp_path, cifar10_archive):
    project = small_study(tmp_path / "project", cifar10_archive, iterations=20)
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("lr: 0.1", "lr: 0.05"))
    result = study_run(project, check=False)
    assert result.returncode == 2
    assert "uncommitted changes" in result.stderr and "params.yaml" in result.stderr
    assert not (project / "dvc.lock").exists()  # nothing ran


@pytest.mark.slow
def test_a_killed_task_is_retried_and_resumes_from_its_checkpoint(tmp_path, cifar10_archive, ray_head):
    project = small_study(tmp_path / "project", cifar10_archive, iterations=300)
    checkpoint = project / "checkpoints" / "resnet20" / "seed0" / "checkpoint.pt"
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    workspaces = tmp_path / "workspaces"
    driver = subprocess.Popen(["resnet-repro", "study", "run", "--address", ray_head, "--workspaces", str(workspaces)],
                              cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            state = torch.load(checkpoint, weights_only=True) if checkpoint.exists() else None
            if state is not None and state["iteration"] >= 40:
                break
            time.sleep(1)
        # The node "dies": the task's worker process and the training it started (the process group its
        # task recorded in its workspace), at once.
        attempt = next(workspaces.glob("*-train-resnet20-0")) / ".study-run-attempt"
        training_group = int(attempt.read_text())
        worker = int(run(["ps", "-o", "ppid=", "-p", str(training_group)], project).stdout)
        os.kill(worker, signal.SIGKILL)
        os.killpg(training_group, signal.SIGKILL)
        output, _ = driver.communicate(timeout=1800)
    finally:
        if driver.poll() is None:  # a failed wait: Ctrl-C lets the driver stop its tasks and its mlflow server
            driver.send_signal(signal.SIGINT)
            try:
                driver.wait(timeout=180)
            except subprocess.TimeoutExpired:
                driver.kill()
    assert driver.returncode == 0, output
    assert re.search(r"^started  train@resnet20-0 .*attempt 2\)", output, re.MULTILINE), output
    assert re.search(r"^finished train@resnet20-0 on \S+ \(resumed from checkpoint at iteration \d+\)", output,
                     re.MULTILINE), output
    assert "up to date" in run(["dvc", "status"], project).stdout
