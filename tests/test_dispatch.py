"""`resnet-repro study run`: what it refuses, what it leaves behind when killed, and (slow) its faults on a
local Ray: a killed task, a diverging net, Ctrl-C, two nodes, a Ray it starts itself. Small real CIFAR-10
studies with a local DVC remote. Two nets trained at once on Ray and restored by DVC, the default tier's
case, is tests/test_pipeline.py's project: one study serves both."""

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import local_servers
from local_servers import mlflow_env
from projects import VENV_BIN, commit, copy_repository, run, stages_that_would_run
from resnet_repro.dispatch.common import StudyRunError
from resnet_repro.dispatch.preflight import require_clean_tree
from resnet_repro.tracking.server import tracking_server

pytestmark = pytest.mark.pipeline

VARIANTS = ["plain20", "resnet20"]


def small_study(directory: Path, archive: Path, iterations: int, variants: list[str] = VARIANTS, **params) -> Path:
    project = copy_repository(directory, **{
        "data.archive": str(archive), "data.subset": 500, "data.val_size": 0, "train.iterations": iterations,
        "train.milestones": [iterations // 2, iterations * 3 // 4], "train.checkpoint_every": 5,
        "train.eval_every": iterations // 2, "train.log_every": 5, "study.variants": variants, "study.seeds": [0],
        **params})
    run(["dvc", "remote", "add", "--local", "-f", "-d", "test", str(directory.parent / f"{directory.name}-remote")],
        project)
    return project


@pytest.fixture
def ray_head(tmp_path):
    with local_servers.ray_head(tmp_path) as address:
        yield address


def study_run(project: Path, *arguments: str, **kwargs) -> subprocess.CompletedProcess:
    return run(["resnet-repro", "study", "run", *arguments], project, timeout=1800, **kwargs)


@pytest.mark.slow
def test_study_run_without_an_address_starts_a_local_ray(tmp_path, cifar10_archive, monkeypatch):
    """`resnet-repro study run` as docs/ray.md gives it first: no --address and no RAY_ADDRESS, so the
    driver starts Ray on this machine (its CPUs here, no GPU) for the one net."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    project = small_study(tmp_path / "project", cifar10_archive, iterations=4, variants=["resnet20"],
                          **{"train.eval_every": 4, "train.log_every": 2})
    # Ray's temp dir of the test's own: without an address, ray.init() joins the newest Ray that `ray start`
    # recorded in the machine's (/tmp/ray), a user's included.
    with local_servers.ray_temp_dir() as temp_root:
        monkeypatch.setenv("RAY_TMPDIR", str(temp_root))
        output = study_run(project).stdout
        assert list((temp_root / "ray").glob("session_*")), "the driver did not start a Ray of its own"
    assert re.search(r"^queued   train@resnet20-0 \(num_cpus=\d+\)", output, re.MULTILINE), output
    assert re.search(r"^finished train@resnet20-0 on ", output, re.MULTILINE), output
    assert "dvc repro restored 1 of 1 trained net(s) from the run-cache" in output
    assert stages_that_would_run(project) == set()


def test_a_dirty_tree_is_refused_with_the_reason(tmp_path, cifar10_archive):
    project = small_study(tmp_path / "project", cifar10_archive, iterations=20)
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("lr: 0.1", "lr: 0.05"))
    result = study_run(project, check=False)
    assert result.returncode == 2
    assert "uncommitted changes" in result.stderr and "params.yaml" in result.stderr
    assert not (project / "dvc.lock").exists()  # nothing ran


def test_what_dvc_writes_does_not_make_the_tree_dirty(tmp_path):
    for name in ("dvc.lock", "data/ffcv/.gitignore", "params.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("before\n")
    run(["git", "init", "-q"], tmp_path)
    commit(tmp_path, "project")
    (tmp_path / "dvc.lock").write_text("after: a repro of the data stages\n")
    (tmp_path / "data/ffcv/.gitignore").write_text("/cifar10\n")
    assert require_clean_tree(tmp_path) == run(["git", "rev-parse", "HEAD"], tmp_path).stdout.strip()
    (tmp_path / "params.yaml").write_text("after\n")
    with pytest.raises(StudyRunError, match=r"uncommitted changes.*: params\.yaml$"):
        require_clean_tree(tmp_path)


def test_a_study_without_a_dvc_remote_is_refused_with_what_to_do(tmp_path, cifar10_archive):
    project = small_study(tmp_path / "project", cifar10_archive, iterations=20)
    run(["dvc", "remote", "remove", "--local", "test"], project)
    run(["dvc", "remote", "default", "--unset"], project)  # the repository's own default, a local directory
    commit(project, "no default remote")
    result = study_run(project, check=False)
    assert result.returncode == 2
    assert "no default DVC remote" in result.stderr and "dvc remote add --local -d" in result.stderr
    assert not (project / "dvc.lock").exists()  # nothing ran



def test_the_drivers_tracking_server_stops_when_the_driver_is_killed(tmp_path, cifar10_archive):
    """SIGKILL gives the driver no `finally`: the local `mlflow server` and its workers must not outlive it."""
    project = small_study(tmp_path / "project", cifar10_archive, iterations=20)
    script = ("import sys, time\nfrom pathlib import Path\nfrom resnet_repro.config import load_params\n"
              "from resnet_repro.dispatch.driver import shared_tracking_store\n"
              "root = Path(sys.argv[1])\n"
              "with shared_tracking_store(root, load_params(root / 'params.yaml'), local_cluster=True) as uri:\n"
              "    print(uri, flush=True)\n    time.sleep(600)\n")
    driver = subprocess.Popen([str(VENV_BIN / "python"), "-c", script, str(project)], stdout=subprocess.PIPE,
                              text=True, env=mlflow_env())
    try:
        assert driver.stdout is not None
        uri = driver.stdout.readline().strip()
        assert urllib.request.urlopen(f"{uri}/health", timeout=10).status == 200
        # The server leads its own process group, with its uvicorn.
        server = run(["pgrep", "-f", f"mlflow server .*--port {uri.rsplit(':', 1)[1]}"], tmp_path).stdout.split()
        group = str(os.getpgid(int(server[0])))
        assert len(run(["pgrep", "-g", group], tmp_path).stdout.split()) > 1
    finally:
        driver.kill()
        driver.wait()
    deadline = time.monotonic() + 60
    while run(["pgrep", "-g", group], tmp_path, check=False).stdout and time.monotonic() < deadline:
        time.sleep(1)
    assert not run(["pgrep", "-g", group], tmp_path, check=False).stdout


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
        # The task's worker dies (SIGKILL, as the kernel's OOM killer would). Its training runs in the
        # worker's process group (Ray 2.60 makes each worker the leader of one), which Ray stops; then
        # Ray runs the task again.
        workspace = next(workspaces.glob("*-train-resnet20-0"))
        training = next(pid for pid in trainings_in(workspaces) if Path(f"/proc/{pid}/cwd").resolve() == workspace)
        worker = os.getpgid(training)
        os.kill(worker, signal.SIGKILL)
        output, _ = driver.communicate(timeout=1800)
    finally:
        if driver.poll() is None:  # a failed wait: Ctrl-C lets the driver stop its tasks and its mlflow server
            driver.send_signal(signal.SIGINT)
            try:
                driver.wait(timeout=180)
            except subprocess.TimeoutExpired:
                driver.kill()
    assert driver.returncode == 0, output
    # Ray ran the task again, in another worker, and the training went on from its checkpoint.
    finished = re.search(r"^finished train@resnet20-0 on [^(]+\(node \w+, pid (\d+)\) \(resumed from checkpoint at "
                         r"iteration \d+\)$", output, re.MULTILINE)
    assert finished and int(finished[1]) != worker, output
    assert not Path(f"/proc/{training}").exists()  # the first attempt's training did not outlive its worker
    assert "up to date" in run(["dvc", "status"], project).stdout


@pytest.mark.slow
def test_a_diverging_net_fails_alone_with_its_error_while_the_other_finishes(tmp_path, cifar10_archive, ray_head):
    # lr 1e6 diverges within a few steps. The paper's warm-up (Section 4.2) keeps nets of depth >= 32
    # at warmup_lr for the whole (short) run, so ResNet-32 trains normally beside the diverging ResNet-20.
    project = small_study(tmp_path / "project", cifar10_archive, iterations=20, variants=["resnet20", "resnet32"],
                          **{"train.lr": 1e6, "train.warmup_min_depth": 32, "train.warmup_lr": 0.1,
                             "train.warmup_until_error": 0.001, "train.warmup_max_iterations": 20})
    result = study_run(project, "--address", ray_head, check=False)
    output = result.stdout
    assert result.returncode == 1, output + result.stderr
    assert re.search(r"^failed   train@resnet20-0: .*train: error: (loss is \S+|weights became non-finite) at "
                     r"iteration \d+ \(lr 1e\+06\)", output, re.MULTILINE), output
    assert re.search(r"^finished train@resnet32-0 on ", output, re.MULTILINE), output
    assert "restored 1 of 1 trained net(s) from the run-cache; 1 failed: train@resnet20-0" in output
    # The failed net stays out of date (and the report, which needs every net); the other went on to
    # evaluate and register.
    out_of_date = json.loads(run(["dvc", "status", "--json"], project).stdout)
    assert set(out_of_date) == {"train@resnet20-0", "evaluate@resnet20-0", "register@resnet20-0", "report"}
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    assert client.get_model_version_by_alias("cifar10-resnet32", "champion").version == 1
    assert not client.search_registered_models("name='cifar10-resnet20'")


@pytest.mark.slow
def test_ctrl_c_stops_every_training_and_leaves_nothing_that_looks_finished(tmp_path, cifar10_archive, ray_head):
    project = small_study(tmp_path / "project", cifar10_archive, iterations=400)
    checkpoints = [project / "checkpoints" / variant / "seed0" / "checkpoint.pt" for variant in VARIANTS]
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    workspaces = tmp_path / "workspaces"
    # A session of its own, as a terminal's foreground job: Ctrl-C sends SIGINT to the whole group.
    driver = subprocess.Popen(["resnet-repro", "study", "run", "--address", ray_head, "--workspaces", str(workspaces)],
                              cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while not all(path.exists() for path in checkpoints) and time.monotonic() < deadline:
            time.sleep(1)
        os.killpg(driver.pid, signal.SIGINT)
        output, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, output
    assert "stopping every training (each saves its checkpoint)" in output
    for variant in VARIANTS:
        assert f"stopped  train@{variant}-0 (checkpoint saved)" in output, output
    assert "interrupted; nothing came back to the workspace" in output
    # No training goes on, and nothing in the workspace looks finished: no lock entry, no model, no
    # registered version; each net's checkpoint is there, unfinished, for the next run to resume.
    assert trainings_in(workspaces) == []
    assert not (project / "dvc.lock").exists() or "train@" not in (project / "dvc.lock").read_text()
    assert not list((project / "models").glob("*/seed0/model.safetensors"))
    for path in checkpoints:
        state = torch.load(path, weights_only=True)
        assert 0 < state["iteration"] < 400 and not state["complete"]
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("resnet-repro-cifar10")
    assert experiment is not None
    statuses = {r.info.run_name: r.info.status for r in client.search_runs([experiment.experiment_id])}
    assert statuses["plain20 seed 0"] == statuses["resnet20 seed 0"] == "KILLED", statuses
    assert not client.search_registered_models()


def trainings_in(directory: Path) -> list[int]:
    """The training processes running in a workspace under `directory`."""
    pids = run(["pgrep", "-f", "pipeline/train.py"], directory.parent, check=False).stdout.split()
    return [int(pid) for pid in pids if Path(f"/proc/{pid}/cwd").resolve().is_relative_to(directory)]


@pytest.fixture
def two_node_cluster(monkeypatch):
    """Two Ray nodes on this machine, one CPU each (Ray's own multi-node test fixture)."""
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    # A temp dir of its own: Ray records the newest head's address in its temp dir, where a user's
    # `ray.init()` on this machine would otherwise find this cluster instead of theirs.
    with local_servers.ray_temp_dir() as temp_root:
        monkeypatch.setenv("RAY_TMPDIR", str(temp_root))
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        try:
            yield cluster.address
        finally:
            cluster.shutdown()


@pytest.mark.slow
def test_two_nodes_and_a_tracking_server_give_the_weights_of_a_sequential_dvc_repro(tmp_path, cifar10_archive,
                                                                                     two_node_cluster, monkeypatch):
    from mlflow import MlflowClient

    deterministic: dict[str, Any] = {"train.deterministic": True, "loader.backend": "torch"}
    project = small_study(tmp_path / "project", cifar10_archive, iterations=20, **deterministic)
    # A cluster cannot share a sqlite file: refused, with what to do instead.
    refused = study_run(project, "--address", two_node_cluster, check=False)
    assert refused.returncode == 2 and "MLFLOW_TRACKING_URI=http://HOST:PORT" in refused.stderr, refused.stderr

    with tracking_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server.log") as uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        output = study_run(project, "--address", two_node_cluster).stdout
        nodes = set(re.findall(r"^finished train@\S+ on \S+ \(node (\w+),", output, re.MULTILINE))
        assert len(nodes) == 2, output  # one CPU a node, one net a CPU: each net on its own node
        assert "up to date" in run(["dvc", "status"], project).stdout
        client = MlflowClient(uri)
        for variant in VARIANTS:  # over REST, MLflow gives the version as a string
            assert int(client.get_model_version_by_alias(f"cifar10-{variant}", "champion").version) == 1

    # The same net trained by `dvc repro` alone, in another clone: the same lock entry (but for the
    # outputs that record speed and the MLflow run id) and, deterministic, the same weights bit for bit.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    # With as many threads as the task had: Ray gives a task of one CPU OMP_NUM_THREADS=1, and a CPU
    # convolution's sums depend on how many threads share them.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    alone = small_study(tmp_path / "alone", cifar10_archive, iterations=20, **deterministic)
    run(["dvc", "repro", "train@resnet20-0"], alone, timeout=1800)
    entries = [yaml.safe_load((root / "dvc.lock").read_text())["stages"]["train@resnet20-0"]
               for root in (project, alone)]
    for entry in entries:
        entry["outs"] = [out for out in entry["outs"] if not out["path"].endswith(("train.json", "run.json", "curve.tsv"))]
    assert entries[0] == entries[1]
    model = "models/resnet20/seed0/model.safetensors"
    assert (project / model).read_bytes() == (alone / model).read_bytes()
