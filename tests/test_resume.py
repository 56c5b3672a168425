"""Exact resume on real data: a training killed (SIGKILL) or stopped (SIGTERM) and run again ends with
the very weights, curves and MLflow history of a training that was never interrupted.

Each training is a real `train_variant` (ResNet-20, the torch backend with albumentations, a small
subset of the real CIFAR-10) in its own process, as DVC would start it, in deterministic mode. And the
checkpoint file itself (train.state): what it holds, and which files are resumed or refused.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from projects import params_with, prepared_project, write_train_script
import resnet_repro
from resnet_repro import models
from resnet_repro.data.augment import augmentation_for
from resnet_repro.data.stats import image_stats, load_stats, mean_image_tensor, save_stats
from resnet_repro.data.torch_loader import ArrayImages, TorchLoader
from resnet_repro.layout import Layout
from resnet_repro.train.errors import CheckpointError
from resnet_repro.train.state import Curves, TrainingState, code_version, fingerprint, resume_or_start

ITERATIONS = 24
TRAIN = {"iterations": ITERATIONS, "batch_size": 16, "milestones": [18], "checkpoint_every": 6,
         "checkpoint_seconds": 3600, "log_every": 3, "eval_every": 12, "deterministic": True, "precision": "fp32"}


def params_for(archive: Path, **train) -> dict:
    return params_with({"data": {"archive": str(archive)}, "loader": {"backend": "torch", "num_workers": 1},
                        "train": {**TRAIN, **train}, "study": {"variants": ["resnet20"]},
                        "mlflow": {"experiment": "resume-test"}})


def start(root: Path, params: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(write_train_script(root, params))], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 900) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def wait_for_checkpoint(process: subprocess.Popen, path: Path, at_least: int) -> dict:
    """The first unfinished checkpoint of `at_least` iterations or more, while `process` still runs."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        state = torch.load(path, weights_only=True) if path.exists() else None
        if state is not None and state["iteration"] >= at_least:
            assert not state["complete"], "the training finished before it could be interrupted"
            return state
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint at iteration >= {at_least}:\n{finish(process)[1][-3000:]}")


def outcome(root: Path) -> tuple[dict, dict]:
    """The trained weights, and train.json with run.json (the MLflow run id)."""
    run, metrics = Layout(root).model_dir("resnet20", 0), Layout(root).metrics_dir("resnet20", 0)
    summary = {**json.loads((metrics / "train.json").read_text()), **json.loads((metrics / "run.json").read_text())}
    return load_file(run / "model.safetensors"), summary


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


@pytest.mark.slow
def test_killed_and_stopped_trainings_resume_to_the_uninterrupted_weights(tmp_path, cifar10, cifar10_archive, store):
    from mlflow import MlflowClient

    client = MlflowClient(store)
    client.search_experiments(max_results=1)  # creates the database: three stages at once would race to
    params = params_for(cifar10_archive)
    roots = {name: prepared_project(tmp_path / name, cifar10) for name in ("uninterrupted", "killed", "stopped")}
    checkpoints = {name: Layout(root).checkpoint_path("resnet20", 0) for name, root in roots.items()}
    processes = {name: start(root, params) for name, root in roots.items()}

    killed_at = wait_for_checkpoint(processes["killed"], checkpoints["killed"], 6)
    os.killpg(processes["killed"].pid, signal.SIGKILL)  # the stage and its loader workers
    # A cluster's SIGTERM goes to every process of the job, loader workers included.
    wait_for_checkpoint(processes["stopped"], checkpoints["stopped"], 6)
    os.killpg(processes["stopped"].pid, signal.SIGTERM)

    assert finish(processes["uninterrupted"])[0] == 0
    assert finish(processes["killed"])[0] == -signal.SIGKILL
    status, stderr = finish(processes["stopped"])
    assert status == 143, stderr[-3000:]
    message = stderr.strip().splitlines()[-1]
    stopped_at = torch.load(checkpoints["stopped"], weights_only=True)
    assert message == (f"train: stopped by SIGTERM at iteration {stopped_at['iteration']} of {ITERATIONS}; "
                       f"checkpoint saved, run again to resume")
    assert not stopped_at["complete"] and 6 <= stopped_at["iteration"] < ITERATIONS
    stopped_run = client.get_run(stopped_at["run_id"])
    assert stopped_run.info.status == "KILLED"  # stopped to be resumed, not failed
    assert "stopped by SIGTERM" in stopped_run.data.tags["failure_reason"]

    resumed = {name: start(roots[name], params) for name in ("killed", "stopped")}
    for name, process in resumed.items():
        status, stderr = finish(process)
        assert status == 0, stderr[-3000:]
    expected_weights, expected_summary = outcome(roots["uninterrupted"])
    for name, interrupted in (("killed", killed_at), ("stopped", stopped_at)):
        weights, summary = outcome(roots[name])
        assert weights.keys() == expected_weights.keys()
        for key, tensor in expected_weights.items():
            assert torch.equal(tensor, weights[key]), f"{name}: {key} differs from the uninterrupted run"
        assert summary["final_test_error"] == expected_summary["final_test_error"]
        # The same MLflow run continued, with each step logged once and the values of the uninterrupted run.
        run_id = summary["mlflow_run_id"]
        assert run_id == interrupted["run_id"]
        assert client.get_run(run_id).info.status == "FINISHED"
        assert "failure_reason" not in client.get_run(run_id).data.tags
        for key in ("loss", "train_error", "lr", "test_error"):
            history = metric_history(store, run_id, key)
            assert history == metric_history(store, expected_summary["mlflow_run_id"], key), key
        assert [step for step, _ in metric_history(store, run_id, "loss")] == list(range(3, ITERATIONS + 1, 3))


def test_torch_backend_data_is_the_same_for_any_worker_count_and_mid_epoch_start(tmp_path, cifar10):
    images, labels = cifar10.train_images[:96], cifar10.train_labels[:96]
    stats = image_stats(images)
    save_stats(tmp_path / "stats.json", stats)
    from resnet_repro.config import parse_params

    augmentation = augmentation_for("cifar10", parse_params(params_with({})).augment, stats)
    mean_image = mean_image_tensor(load_stats(tmp_path / "stats.json"))

    def epoch_batches(workers: int, epoch: int, first_batch: int = 0) -> list[torch.Tensor]:
        loader = TorchLoader(ArrayImages(images, labels, augmentation, train=True), batch_size=16, train=True,
                             mean_image=mean_image, device=torch.device("cpu"), num_workers=workers, seed=3)
        loader.set_epoch(epoch, first_batch)
        return [batch for batch, _ in loader]

    reference = epoch_batches(0, epoch=2)
    assert len(reference) == 6
    for other in (epoch_batches(2, epoch=2), [None] * 4 + epoch_batches(1, epoch=2, first_batch=4)):
        for index, (expected, batch) in enumerate(zip(reference, other)):
            assert batch is None or torch.equal(expected, batch), index
    # Another epoch is another order and other augmentations.
    assert not torch.equal(torch.cat(epoch_batches(0, epoch=1)), torch.cat(reference))
    # Sharded over two ranks (DDP), each global batch of 16 is two batches of 8 with the same images.
    shards = [TorchLoader(ArrayImages(images, labels, augmentation, train=True), batch_size=8, train=True,
                          mean_image=mean_image, device=torch.device("cpu"), num_workers=0, seed=3, rank=rank,
                          num_replicas=2) for rank in (0, 1)]
    for shard in shards:
        shard.set_epoch(2)
    for expected, (first, _), (second, _) in zip(reference, *shards):
        assert torch.equal(expected[0::2], first) and torch.equal(expected[1::2], second)


def captured_state() -> tuple[TrainingState, torch.nn.Module]:
    """A state as the loop leaves it after a few steps of a tiny net: every field filled."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(8, 4)).square().mean().backward()
        optimizer.step()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)  # any object with a state dict
    state = TrainingState("abc", code=code_version(), run_id="run-1", iteration=3, seconds=1.5, images_trained=24,
                          curves=Curves(steps=[{"step": 2, "loss": 2.3}], errors=[{"step": 3, "test_error": 0.9}]),
                          window={"loss": torch.tensor(4.6), "wrong": torch.tensor(7), "images": 8, "seconds": 0.5})
    state.capture(model, optimizer, schedule, scaler)
    return state, model


def test_a_saved_state_loads_back_field_for_field_and_restores_the_training(tmp_path):
    state, model = captured_state()
    expected_rng = torch.get_rng_state()
    state.save(tmp_path / "checkpoint.pt")
    torch.manual_seed(123)  # restoring puts the generators back where they were when captured

    loaded = TrainingState.load(tmp_path / "checkpoint.pt")
    assert (loaded.fingerprint, loaded.run_id, loaded.iteration, loaded.complete, loaded.seconds,
            loaded.images_trained) == ("abc", "run-1", 3, False, 1.5, 24)
    assert loaded.curves == state.curves and loaded.window is not None and loaded.window["images"] == 8
    assert loaded.started
    restored = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.SGD(restored.parameters(), lr=0.1, momentum=0.9)
    loaded.restore(restored, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=2),
                   torch.amp.GradScaler("cpu", enabled=False))
    for name, tensor in model.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor), name
    assert state.optimizer is not None
    assert all(torch.equal(optimizer.state[p]["momentum_buffer"], state.optimizer["state"][i]["momentum_buffer"])
               for i, p in enumerate(restored.parameters()))
    assert torch.equal(torch.get_rng_state(), expected_rng)
    assert loaded.model is None  # the training's objects hold the tensors now, not the state


def test_a_corrupt_or_foreign_checkpoint_is_refused_naming_the_file(tmp_path):
    state, _ = captured_state()
    state.save(tmp_path / "checkpoint.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((tmp_path / "checkpoint.pt").read_bytes()[:1000])  # as a full disk leaves it
    for load in (TrainingState.load, lambda path: resume_or_start(path, "abc")):
        with pytest.raises(CheckpointError, match=rf"^{re.escape(str(corrupt))}: checkpoint cannot be read \(.*\); "
                                                  r"delete it to train from scratch$"):
            load(corrupt)
    foreign = tmp_path / "weights.pt"
    torch.save(models.build("resnet20").state_dict(), foreign)  # someone's weights, not a training
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(foreign))}: not a training checkpoint \(it has no fingerprint\)"):
        resume_or_start(foreign, "abc")
    torch.save({"fingerprint": "abc", "iteration": 3}, foreign)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(foreign))}: not a training checkpoint \(no complete, curves, "):
        TrainingState.load(foreign)


def test_only_an_unfinished_checkpoint_of_the_same_fingerprint_is_resumed(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    assert resume_or_start(path, "abc") == TrainingState("abc", code=code_version())  # no file: nothing to say
    state, _ = captured_state()
    state.save(path)
    assert resume_or_start(path, "abc").iteration == 3
    assert capsys.readouterr().out == f"Resumed from checkpoint at iteration 3: {path}\n"
    # Written by another configuration: DVC re-runs the stage because its params changed.
    assert resume_or_start(path, "other") == TrainingState("other", code=code_version())
    assert capsys.readouterr().out == f"{path} was written by another configuration: training from scratch\n"
    state.complete = True
    state.save(path)
    assert resume_or_start(path, "abc", quiet=True) == TrainingState("abc", code=code_version())
    assert capsys.readouterr().out == ""


def test_an_unfinished_checkpoint_of_other_code_is_refused_naming_both_commits(tmp_path):
    """Issue 38: a training is never continued under other code, nor silently restarted from zero."""
    path = tmp_path / "checkpoint.pt"
    state, _ = captured_state()
    state.code = {"sources": "0" * 64, "commit": "79bb947f885b"}
    state.save(path)
    ours = code_version()
    assert ours["commit"] is not None  # the tests run from a git checkout
    ours_in_words = ours["commit"].rstrip("+")
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: this unfinished training was written by the "
                                              rf"code of commit 79bb947f885b \(sources 000000000000\), and this is "
                                              rf"the code of commit {ours_in_words}.*check out that commit to finish "
                                              rf"it, or delete the file to train from scratch$"):
        resume_or_start(path, "abc")
    assert path.exists()  # nothing is lost: the checkpoint stays for the commit that can finish it
    # A checkpoint of a package version that recorded no code version (an older format) is refused too.
    torch.save({"fingerprint": "abc", "mlflow_run_id": "run-0"}, path)
    with pytest.raises(CheckpointError, match=r"written by the code of a version of this package older than"):
        resume_or_start(path, "abc")
    # A finished one of other code is no training to continue: the stage re-runs because its inputs changed.
    state.complete = True
    state.save(path)
    assert resume_or_start(path, "abc", quiet=True) == TrainingState("abc", code=ours)


def test_the_fingerprint_covers_the_parts_and_the_code_version_this_packages_sources():
    assert fingerprint({"lr": 0.1}, "resnet20", 0) == fingerprint({"lr": 0.1}, "resnet20", 0)
    assert fingerprint({"lr": 0.1}, "resnet20", 0) != fingerprint({"lr": 0.05}, "resnet20", 0)
    package = Path(resnet_repro.__file__).parent
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(str(source.relative_to(package)).encode() + source.read_bytes())
    assert code_version()["sources"] == digest.hexdigest()
