"""The pipeline's MLflow side against a real tracking server backed by PostgreSQL, all on 127.0.0.1.

The test makes a throwaway PostgreSQL cluster (initdb in a temporary directory, pg_ctl on a free port;
as the `postgres` user when run as root, since PostgreSQL refuses to run as root), starts
`mlflow server --backend-store-uri postgresql://... --artifacts-destination DIR`, and sends a training
run, a registration, a pull and a load through it. It is skipped only where the PostgreSQL server
binaries are not installed (Debian: `apt-get install postgresql`).
"""

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

from resnet_repro.artifacts import save_trained
from resnet_repro.cli import main
from resnet_repro.data.normalize import normalize
from resnet_repro.models import build
from resnet_repro.tracking import server
from resnet_repro.tracking.registry import load_registered, pull, register_model
from resnet_repro.tracking.runs import TrainingRun

pytestmark = pytest.mark.pipeline  # processes, servers or a browser: not the quick tier

NAME = "cifar10-resnet20"
DATABASE, DB_USER = "mlflow", "mlflow"
PARAMS = {"train": {"lr": 0.1, "batch_size": 128}, "data": {"dataset": "cifar10"}}
TAGS = {"variant": "resnet20", "family": "resnet", "depth": 20, "shortcut": "A", "seed": 0,
        "git_commit": "0" * 40, "data_version": "md5:1234"}
STARTUP_SECONDS = 180  # the tracking server creates its schema in the new database first
COMMAND_SECONDS = 120


@dataclass
class Postgres:
    port: int
    data_dir: Path

    @property
    def uri(self) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{DATABASE}"

    def query(self, sql: str, *args, database: str = DATABASE) -> list[tuple]:
        import psycopg  # the driver SQLAlchemy 2.1 uses for postgresql:// URIs

        with psycopg.connect(host="127.0.0.1", port=self.port, user=DB_USER, dbname=database,
                             autocommit=True) as connection:
            cursor = connection.execute(sql, args)
            return cursor.fetchall() if cursor.description else []


@dataclass
class TrackingServer:
    url: str
    artifacts: Path


def _postgres_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else Debian's /usr/lib/postgresql/<major>/bin (newest)."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent  # pg_ctl finds `postgres` beside its real path
    installed = [path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")
                 if (path.parent / "initdb").exists() and path.parent.parent.name.isdigit()]
    return max(installed, key=lambda directory: int(directory.parent.name), default=None)


def _as_owner(owner: pwd.struct_passwd | None) -> dict:
    """subprocess arguments that run a command as `owner` (None: as ourselves)."""
    if owner is None:
        return {}
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": [],
            "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": owner.pw_dir, "LC_ALL": "C"}}


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("the PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    owner = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = pwd.getpwnam("nobody")
    # Not under pytest's tmp_path: that is private to root, and the cluster's owner must reach it.
    data_dir = Path(tempfile.mkdtemp(prefix="resnet-repro-pg-"))
    if owner is not None:
        os.chown(data_dir, owner.pw_uid, owner.pw_gid)
    run_as = {**_as_owner(owner), "cwd": data_dir, "capture_output": True, "text": True, "timeout": COMMAND_SECONDS}
    port = server.free_port()
    started = False
    try:
        initdb = subprocess.run([str(bin_dir / "initdb"), "-D", str(data_dir / "db"), "-U", DB_USER, "-A", "trust",
                                 "-E", "UTF8", "--no-locale", "--no-sync"], **run_as)
        if initdb.returncode != 0:
            pytest.fail(f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}")
        # Loopback TCP only; the Unix socket goes in the data directory, not in /var/run/postgresql.
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {data_dir} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        start = subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data_dir / "db"), "-l", str(data_dir / "server.log"),
                                "-o", options, "-w", "-t", "60", "start"], **run_as)
        started = True
        if start.returncode != 0:
            pytest.fail(f"pg_ctl start failed:\n{start.stdout}\n{start.stderr}\n{server.log_tail(data_dir / 'server.log')}")
        cluster = Postgres(port, data_dir)
        cluster.query(f"CREATE DATABASE {DATABASE}", database="postgres")
        yield cluster
    finally:
        if started:
            subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data_dir / "db"), "-m", "immediate", "-w", "stop"],
                           **run_as)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory) -> Iterator[TrackingServer]:
    workdir = tmp_path_factory.mktemp("tracking-server")
    artifacts = workdir / "artifacts"
    with server.tracking_server(postgres.uri, workdir / "server.log", "--artifacts-destination", str(artifacts),
                                cwd=workdir, startup_seconds=STARTUP_SECONDS) as url:
        yield TrackingServer(url, artifacts)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar10) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    module = build("resnet20", num_classes=10).eval()
    mean_image = torch.from_numpy(cifar10.train_images[:1000].mean(axis=0, dtype=np.float32)).permute(2, 0, 1)
    directory = tmp_path_factory.mktemp("postgres-model")
    save_trained(directory, module, mean_image.contiguous(),
                 {"arch": "resnet20", "num_classes": 10, "class_names": cifar10.class_names, "input_size": 32,
                  "dataset": "cifar10", "seed": 0, "options": {"shortcut": "A"}})
    return directory, module


def test_runs_registration_and_pulling_go_through_a_postgres_backed_server(
        tracking_server, postgres, trained, cifar10, tmp_path, monkeypatch):
    uri = tracking_server.url
    model_dir, module = trained
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may depend on, or land in, the working directory

    with TrainingRun.start(uri, "postgres-tests", "resnet20 seed 0", PARAMS, TAGS, flush_seconds=0) as run:
        for step in range(1, 6):
            run.log_metrics({"loss": 2.5 - 0.1 * step, "lr": 0.1}, step)
    registered = register_model(uri, run.run_id, model_dir, NAME, {"test_top1_error": 0.3}, TAGS)

    client = MlflowClient(uri)
    assert client.get_run(run.run_id).info.status == "FINISHED"
    assert [metric.step for metric in client.get_metric_history(run.run_id, "loss")] == [1, 2, 3, 4, 5]
    assert (registered["version"], registered["aliases"]) == (1, ["champion", "latest"])
    # The runs and the registry are rows in PostgreSQL; the files went to the server's artifact store.
    assert postgres.query("SELECT count(*) FROM metrics WHERE run_uuid = %s AND key = 'loss'", run.run_id) == [(5,)]
    # This model's rows only: the module's other test registers its own model in the same database.
    assert postgres.query("SELECT version FROM model_versions WHERE name = %s", NAME) == [(1,)]
    assert list(tracking_server.artifacts.rglob("model.safetensors"))
    assert not (tmp_path / "mlruns").exists()

    assert main(["pull", f"models:/{NAME}@champion", "--out", "pulled", "--tracking-uri", uri]) == 0
    pulled = load_file(tmp_path / "pulled" / "model.safetensors")
    assert all(torch.equal(pulled[key], value) for key, value in module.state_dict().items())
    card = json.loads((tmp_path / "pulled" / "card.json").read_text())
    assert (card["lineage"]["mlflow_run_id"], card["lineage"]["params"]["train.lr"]) == (run.run_id, "0.1")

    loaded = load_registered(f"{NAME}@champion", uri)
    batch = normalize(torch.from_numpy(cifar10.test_images[:8]).permute(0, 3, 1, 2), loaded.get_buffer("mean_image"))
    with torch.inference_mode():
        assert torch.equal(loaded(batch), module(batch))


def test_weights_changed_in_the_servers_artifact_store_are_refused(tracking_server, trained, tmp_path):
    uri = tracking_server.url
    with TrainingRun.start(uri, "postgres-tests", "tampered", PARAMS, TAGS) as run:
        run.log_metrics({"loss": 2.0}, step=1)
    register_model(uri, run.run_id, trained[0], "cifar10-tampered", {"test_top1_error": 0.5}, TAGS)
    # mlflow-artifacts:/<experiment>/models/<model id>/artifacts, under --artifacts-destination
    stored_at = MlflowClient(uri).get_model_version_download_uri("cifar10-tampered", "1")
    weights = tracking_server.artifacts / urlparse(stored_at).path.lstrip("/") / "artifacts" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"!")

    with pytest.raises(ValueError, match="model.safetensors of cifar10-tampered version 1 has sha256"):
        pull("cifar10-tampered@champion", tmp_path / "pulled", uri)
