"""MLflow runs and the model registry, on a real sqlite store, a real resnet20 and real CIFAR-10 images."""

import io
import json
import os
import pickle
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import pytest
import torch
import urllib3
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from PIL import Image
from safetensors.torch import load_file

import resnet_repro
from resnet_repro.artifacts import save_trained
from resnet_repro.cli import main
from resnet_repro.data.normalize import normalize
from resnet_repro.gitinfo import changed_files, git_commit
from resnet_repro.io import file_sha256
from resnet_repro.models import build
from resnet_repro.models.weights import IN_PACKAGE as PUBLISHED_IN_PACKAGE
from resnet_repro.tracking import registry
from resnet_repro.tracking.registry import pull, register_model
from resnet_repro.tracking.runs import TrackingStoreUnreachable, TrainingRun, resolve_tracking_uri
from resnet_repro.tracking.server import free_port
from resnet_repro.tracking.serving import class_probabilities

EXPERIMENT = "tracking-tests"
NAME = "cifar10-resnet20"
PARAMS = {"train": {"lr": 0.1, "batch_size": 128}, "data": {"dataset": "cifar10"}}
TAGS = {"variant": "resnet20", "family": "resnet", "depth": 20, "shortcut": "A", "seed": 0,
        "dataset": "cifar10", "git_commit": "0" * 40, "data_version": "md5:1234"}
# Registered in this order: a tie with the champion must not move it, a lower error must.
TEST_ERRORS = [0.10, 0.10, 0.08, 0.09]


@dataclass
class Trained:
    directory: Path
    module: torch.nn.Module
    mean_image: torch.Tensor


@pytest.fixture(scope="module")
def images(cifar10) -> np.ndarray:
    return cifar10.test_images[:8]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar10) -> Trained:
    """A randomly initialised resnet20 saved as the train stage saves it."""
    torch.manual_seed(0)
    module = build("resnet20", num_classes=10).eval()
    mean_image = cifar10.train_images[:1000].mean(axis=0, dtype=np.float32)  # (H, W, 3)
    mean_image = torch.from_numpy(mean_image).permute(2, 0, 1).contiguous()
    directory = tmp_path_factory.mktemp("models") / "resnet20" / "seed0"
    save_trained(directory, module, mean_image,
                 {"arch": "resnet20", "num_classes": 10, "class_names": cifar10.class_names, "input_size": 32,
                  "dataset": "cifar10", "seed": 0, "options": {"shortcut": "A"}})
    return Trained(directory, module, mean_image)


@pytest.fixture(scope="module")
def run_id(store) -> str:
    with TrainingRun.start(store, EXPERIMENT, "resnet20 seed 0", PARAMS, TAGS) as run:
        run.log_metrics({"loss": 2.3}, step=1)
    return run.run_id


@pytest.fixture(scope="module")
def registered(store, run_id, trained) -> list[dict]:
    return [register_model(store, run_id, trained.directory, NAME, {"test_top1_error": error, "test_top5_error": 0.5},
                           TAGS)
            for error in TEST_ERRORS]


def test_tracking_uri_comes_from_the_environment_then_the_config_then_the_project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path.resolve()
    assert resolve_tracking_uri(tmp_path, None) == f"sqlite:///{root}/mlflow.db"
    assert resolve_tracking_uri(tmp_path, "sqlite:///runs/db.sqlite") == f"sqlite:///{root}/runs/db.sqlite"
    assert resolve_tracking_uri(tmp_path, "http://mlflow:5000") == "http://mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    assert resolve_tracking_uri(tmp_path, "http://mlflow:5000") == "sqlite:////elsewhere/mlflow.db"


def test_git_commit_is_the_checked_out_commit_or_none(tmp_path):
    assert git_commit(tmp_path) is None
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "first"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path) == head


def test_changed_files_lists_what_differs_from_the_commit_where_asked(tmp_path):
    assert changed_files(tmp_path) is None
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    (tmp_path / "package").mkdir()
    for name in ("params.yaml", "package/model.py"):
        (tmp_path / name).write_text("before\n")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    assert changed_files(tmp_path) == [] and changed_files(tmp_path / "package", inside_folder=True) == []
    (tmp_path / "params.yaml").write_text("after\n")
    (tmp_path / "package" / "new.py").write_text("untracked\n")
    assert changed_files(tmp_path) == ["params.yaml", "package/new.py"]
    assert changed_files(tmp_path, untracked=False) == ["params.yaml"]
    assert changed_files(tmp_path / "package", inside_folder=True) == ["package/new.py"]


def test_a_resumed_run_keeps_its_id_and_logs_no_step_twice(store):
    with pytest.raises(RuntimeError), TrainingRun.start(store, EXPERIMENT, "interrupted", PARAMS, TAGS) as run:
        for step in range(1, 6):
            run.log_metrics({"loss": float(step)}, step)
        raise RuntimeError("killed at step 5")
    client = MlflowClient(store)
    failed = client.get_run(run.run_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["failure_reason"] == "RuntimeError: killed at step 5"

    # The checkpoint was written at step 2, so steps 3 to 5 come again.
    with TrainingRun.start(store, EXPERIMENT, "interrupted", PARAMS, TAGS, resume_run_id=run.run_id) as resumed:
        for step in range(3, 9):
            resumed.log_metrics({"loss": 100.0 + step, "lr": 0.1}, step)

    assert resumed.run_id == run.run_id
    losses = {metric.step: metric.value for metric in client.get_metric_history(run.run_id, "loss")}
    assert len(client.get_metric_history(run.run_id, "loss")) == 8
    assert losses == {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0, 5: 5.0, 6: 106.0, 7: 107.0, 8: 108.0}
    assert sorted(metric.step for metric in client.get_metric_history(run.run_id, "lr")) == [3, 4, 5, 6, 7, 8]
    finished = client.get_run(run.run_id)
    assert finished.info.status == "FINISHED"
    assert "failure_reason" not in finished.data.tags
    assert finished.data.params["train.lr"] == "0.1"
    assert finished.data.tags["data_version"] == "md5:1234"
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    experiment_id = experiment.experiment_id
    assert len(client.search_runs([experiment_id], "attributes.run_name = 'interrupted'")) == 1


def test_metrics_reach_the_store_when_the_flush_interval_has_passed(store, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("resnet20, seed 0\n")
    with TrainingRun.start(store, EXPERIMENT, "unbuffered", PARAMS, TAGS, flush_seconds=0) as run:
        run.log_metrics({"loss": 2.0}, step=1)
        run.log_artifact(notes)
        client = MlflowClient(store)
        assert [metric.step for metric in client.get_metric_history(run.run_id, "loss")] == [1]
        assert [artifact.path for artifact in client.list_artifacts(run.run_id)] == ["notes.txt"]


def test_resuming_a_run_the_store_lacks_says_so(store):
    with pytest.raises(LookupError, match="cannot resume MLflow run 0123456789abcdef"):
        TrainingRun.start(store, EXPERIMENT, "gone", PARAMS, TAGS, resume_run_id="0123456789abcdef")


def test_an_unreachable_store_fails_at_once_naming_its_uri(monkeypatch):
    # MLflow's own retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES, 7 by default, with exponential backoff) take
    # minutes; connect's first request is tried twice, whatever the variable says. The attempts are
    # counted (each still really made) rather than timed, which a busy machine would stretch.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    attempts = []

    def counted_connection(address, *args, **kwargs):
        attempts.append(address)
        return create_connection(address, *args, **kwargs)

    create_connection = urllib3.util.connection.create_connection
    monkeypatch.setattr(urllib3.util.connection, "create_connection", counted_connection)
    port = free_port()  # a port that was free a moment ago: nothing listens there
    uri = f"http://127.0.0.1:{port}"
    with pytest.raises(TrackingStoreUnreachable, match=re.escape(uri)):
        TrainingRun.start(uri, EXPERIMENT, "never", PARAMS, TAGS)
    assert attempts == [("127.0.0.1", port)] * 2


def test_champion_moves_only_to_a_lower_error_and_latest_to_every_version(registered, store, tmp_path):
    assert [entry["version"] for entry in registered] == [1, 2, 3, 4]
    assert [entry["champion_version"] for entry in registered] == [1, 1, 3, 3]
    assert [entry["aliases"] for entry in registered] == [["champion", "latest"], ["latest"],
                                                        ["champion", "latest"], ["latest"]]
    assert registered[0]["model_uri"] == f"models:/{NAME}/1"
    for ref, error in ((f"{NAME}@champion", 0.08), (f"{NAME}@latest", 0.09), (f"models:/{NAME}/2", 0.10)):
        card = json.loads((pull(ref, tmp_path / ref.replace("/", "_"), store) / "card.json").read_text())
        assert card["lineage"]["metrics"]["test_top1_error"] == error


def test_a_version_carries_the_hashes_of_its_files_and_provenance(registered, store, trained, tmp_path):
    tags = MlflowClient(store).get_model_version(NAME, "3").tags
    pulled = pull(f"{NAME}/3", tmp_path, store)
    for name, tag in (("model.safetensors", "weights_sha256"), ("preprocess.safetensors", "preprocess_sha256"),
                      ("model.json", "description_sha256"), ("card.json", "card_sha256")):
        assert tags[tag] == file_sha256(pulled / name)
    assert tags["weights_sha256"] == file_sha256(trained.directory / "model.safetensors")
    assert (tags["arch"], tags["test_top1_error"]) == ("resnet20", "0.08")
    assert (tags["git_commit"], tags["data_version"], tags["shortcut"]) == ("0" * 40, "md5:1234", "A")


def test_pull_from_another_directory_reproduces_the_state_dict(registered, trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["pull", f"models:/{NAME}@champion", "--out", "pulled"]) == 0

    pulled = load_file(tmp_path / "pulled" / "model.safetensors")
    expected = trained.module.state_dict()
    assert pulled.keys() == expected.keys()
    assert all(torch.equal(pulled[key], expected[key]) for key in expected)
    card = json.loads((tmp_path / "pulled" / "card.json").read_text())
    assert card["weights_sha256"] == file_sha256(tmp_path / "pulled" / "model.safetensors")
    assert (card["arch"], card["options"], card["num_classes"]) == ("resnet20", {"shortcut": "A"}, 10)
    lineage = card["lineage"]
    assert (lineage["git_commit"], lineage["data_version"]) == ("0" * 40, "md5:1234")
    assert (lineage["params"]["train.lr"], lineage["metrics"]["test_top1_error"]) == ("0.1", 0.08)
    assert lineage["tags"]["shortcut"] == "A"


def test_pulling_and_loading_read_no_pickle(registered, store, images, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a pickle was read")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = resnet_repro.load_registered(f"{NAME}@champion")
    assert loaded(normalize(torch.from_numpy(images).permute(0, 3, 1, 2), loaded.mean_image)).shape == (8, 10)

    stored = MlflowClient(store).get_model_version_download_uri(NAME, "3")
    logged = Path(mlflow.artifacts.download_artifacts(artifact_uri=stored, dst_path=str(tmp_path)))
    files = {path.relative_to(logged).as_posix() for path in logged.rglob("*") if path.is_file()}
    assert {"MLmodel", "artifacts/model.safetensors", "artifacts/card.json"} <= files
    assert not [name for name in files if name.endswith((".pkl", ".pickle", ".pt", ".pth", ".joblib"))]


def test_load_registered_gives_the_logits_of_the_trained_net(registered, trained, images, cifar10):
    loaded = resnet_repro.load_registered(f"{NAME}@champion")

    assert not loaded.training
    assert loaded.class_names == cifar10.class_names
    assert torch.equal(loaded.mean_image, trained.mean_image)
    batch = normalize(torch.from_numpy(images).permute(0, 3, 1, 2), trained.mean_image)
    with torch.inference_mode():
        assert torch.equal(loaded(batch), trained.module(batch))


def test_the_mlflow_pyfunc_gives_class_probabilities_and_names(registered, trained, images, cifar10):
    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    answers = pyfunc.predict(images)

    expected = class_probabilities(trained.module, trained.mean_image, torch.from_numpy(images)).numpy()
    assert list(answers.columns) == ["class_index", "class_name", "probability", "probabilities"]
    probabilities = np.array([[row[name] for name in cifar10.class_names] for row in answers["probabilities"]])
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert answers["class_index"].tolist() == expected.argmax(axis=1).tolist()
    assert answers["class_name"].tolist() == [cifar10.class_names[index] for index in expected.argmax(axis=1)]
    np.testing.assert_allclose(answers["probability"], expected.max(axis=1), rtol=1e-6)

    # The same pixels as PNG files give the same answers.
    pngs = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    from_png = pyfunc.predict(pngs)
    np.testing.assert_allclose(from_png["probability"], answers["probability"], rtol=1e-6)
    assert from_png["class_name"].tolist() == answers["class_name"].tolist()


@pytest.mark.parametrize(("model_input", "message"), [
    (np.zeros((2, 16, 16, 3), dtype=np.uint8), r"must be \(N, 32, 32, 3\) RGB.*got shape \(2, 16, 16, 3\)"),
    (np.zeros((2, 32, 32, 3), dtype=np.float32), "integers 0..255"),
    (np.full((1, 32, 32, 3), 256), "values from 256 to 256"),
    ([b"not an image"], "image 0: not a PNG or JPEG image"),
    (["not base64!"], "image 0: a string must be a base64-encoded PNG or JPEG"),
])
def test_the_mlflow_pyfunc_refuses_what_is_not_an_image(registered, model_input, message):
    with pytest.raises(MlflowException, match=message) as refused:
        mlflow.pyfunc.load_model(f"models:/{NAME}/1").predict(model_input)
    assert refused.value.get_http_status_code() == 400


def test_pull_refuses_a_changed_model_description(store, run_id, trained, tmp_path):
    version = register_model(store, run_id, trained.directory, "cifar10-relabelled", {"test_top1_error": 0.5},
                             TAGS)["version"]
    stored_at = urlparse(MlflowClient(store).get_model_version_download_uri("cifar10-relabelled", version)).path
    description = Path(stored_at, "artifacts", "model.json")
    description.write_text(description.read_text().replace('"cat"', '"kitten"'))

    with pytest.raises(ValueError, match="model.json .* registry's tag description_sha256"):
        pull("cifar10-relabelled@champion", tmp_path / "pulled", store)


def test_pull_refuses_weights_changed_in_the_artifact_store(store, run_id, trained, tmp_path):
    version = register_model(store, run_id, trained.directory, "cifar10-tampered", {"test_top1_error": 0.5},
                             TAGS)["version"]
    stored_at = urlparse(MlflowClient(store).get_model_version_download_uri("cifar10-tampered", version)).path
    weights = Path(stored_at, "artifacts", "model.safetensors")
    weights.write_bytes(weights.read_bytes()[:-1] + b"!")

    with pytest.raises(ValueError, match=f"model.safetensors .* sha256 {file_sha256(weights)}"):
        pull("cifar10-tampered@champion", tmp_path / "pulled", store)
    assert not any((tmp_path / "pulled").iterdir())


def test_a_version_bundles_the_packages_code_but_not_the_published_weights(store, run_id, trained, tmp_path,
                                                                          monkeypatch):
    # An installed package carries the published weights (models/published/, setup.py): 10 MB that the
    # pyfunc has no use for, and that every registered version would copy.
    package = tmp_path / "resnet_repro"
    shutil.copytree(registry.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "models" / PUBLISHED_IN_PACKAGE / "some-net").mkdir(parents=True)
    (package / "models" / PUBLISHED_IN_PACKAGE / "some-net" / "model.safetensors").write_bytes(b"tensors")
    monkeypatch.setattr(registry, "PACKAGE_DIR", package)

    version = register_model(store, run_id, trained.directory, "cifar10-bundled", {"test_top1_error": 0.5},
                             TAGS)["version"]
    stored_at = urlparse(MlflowClient(store).get_model_version_download_uri("cifar10-bundled", version)).path
    code = Path(stored_at, "code", "resnet_repro")
    assert (code / "models" / "weights.py").is_file() and (code / "tracking" / "pyfunc_model.py").is_file()
    assert not (code / "models" / PUBLISHED_IN_PACKAGE).exists()


@pytest.mark.parametrize(("ref", "listed"), [
    ("cifar10-resnet1202@champion", f"it has: (.*, )?{NAME}"),  # other tests register other names
    (f"{NAME}@best", re.escape("its aliases: champion (version 3)")),
    (f"{NAME}/99", "its versions: 1, 2, 3, 4"),
])
def test_a_reference_to_nothing_lists_what_exists(registered, store, tmp_path, ref, listed):
    with pytest.raises(LookupError, match=listed):
        pull(ref, tmp_path, store)


@pytest.mark.parametrize("default", ["sqlite:///elsewhere.db", None])
def test_registering_leaves_mlflows_default_tracking_uri_as_it_was(store, run_id, trained, monkeypatch, default):
    if default is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI")
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", default)
    before = mlflow.get_tracking_uri()

    register_model(store, run_id, trained.directory, "cifar10-elsewhere", {"test_top1_error": 0.5}, TAGS)

    assert os.environ.get("MLFLOW_TRACKING_URI") == default
    assert mlflow.get_tracking_uri() == before
    assert MlflowClient(store).get_registered_model("cifar10-elsewhere").aliases == {"champion": 1}


def test_register_refuses_metrics_without_the_champion_metric(store, run_id, trained):
    with pytest.raises(ValueError, match="test_top1_error"):
        register_model(store, run_id, trained.directory, NAME, {"test_error": 0.1}, TAGS)


@pytest.fixture
def ended_an_hour_ago(store, run_id) -> str:
    """The id of a FINISHED run whose training started two hours ago and ended one hour ago."""
    client = MlflowClient(store)
    now = int(time.time() * 1000)
    started = client.create_run(client.get_run(run_id).info.experiment_id, start_time=now - 7_200_000,
                                run_name="resnet20 seed 1")
    client.set_terminated(started.info.run_id, status="FINISHED", end_time=now - 3_600_000)
    return started.info.run_id


def test_registering_leaves_the_runs_start_end_and_status_as_training_left_them(store, trained, ended_an_hour_ago):
    client = MlflowClient(store)
    before = client.get_run(ended_an_hour_ago).info

    register_model(store, ended_an_hour_ago, trained.directory, "cifar10-timed", {"test_top1_error": 0.1}, TAGS)

    after = client.get_run(ended_an_hour_ago)
    assert (after.info.start_time, after.info.end_time, after.info.status) == \
        (before.start_time, before.end_time, "FINISHED")
    assert after.outputs is not None and len(after.outputs.model_outputs) == 1  # the model was logged to this run


def test_a_registration_that_fails_also_leaves_the_run_as_it_was(store, trained, ended_an_hour_ago, monkeypatch):
    def failing_log_model(**_):
        raise OSError("artifact store full")

    monkeypatch.setattr(mlflow.pyfunc, "log_model", failing_log_model)
    client = MlflowClient(store)
    before = client.get_run(ended_an_hour_ago).info

    with pytest.raises(OSError, match="artifact store full"):
        register_model(store, ended_an_hour_ago, trained.directory, "cifar10-failed", {"test_top1_error": 0.1}, TAGS)

    after = client.get_run(ended_an_hour_ago).info
    assert (after.end_time, after.status) == (before.end_time, "FINISHED")


def test_a_run_that_has_not_ended_is_not_registered(store, trained):
    with TrainingRun.start(store, EXPERIMENT, "still training", PARAMS, TAGS) as run:
        with pytest.raises(ValueError, match=f"MLflow run {run.run_id} has not ended \\(status RUNNING\\)"):
            register_model(store, run.run_id, trained.directory, "cifar10-early", {"test_top1_error": 0.1}, TAGS)


def test_results_added_to_a_finished_run_leave_its_end_and_status(store, ended_an_hour_ago):
    client = MlflowClient(store)
    before = client.get_run(ended_an_hour_ago).info

    # As the evaluate stage adds its errors to the training's run; a failure there is not the training's.
    with TrainingRun.start(store, EXPERIMENT, "resnet20 seed 1", {}, {}, resume_run_id=ended_an_hour_ago) as run:
        run.log_metrics({"test_top1_error": 0.1}, step=100)
    with pytest.raises(RuntimeError), \
            TrainingRun.start(store, EXPERIMENT, "resnet20 seed 1", {}, {}, resume_run_id=ended_an_hour_ago) as run:
        run.log_metrics({"test_top5_error": 0.01}, step=100)
        raise RuntimeError("evaluation failed")

    after = client.get_run(ended_an_hour_ago)
    assert (after.info.end_time, after.info.status) == (before.end_time, "FINISHED")
    assert "failure_reason" not in after.data.tags
    assert after.data.metrics == {"test_top1_error": 0.1, "test_top5_error": 0.01}


def test_predict_command_prints_a_class_per_image(registered, images, cifar10, tmp_path, capsys, caplog):
    exact = tmp_path / "exact.png"
    Image.fromarray(images[0]).save(exact)
    larger = tmp_path / "larger.jpg"
    Image.fromarray(images[1]).resize((48, 48)).save(larger)

    assert main(["predict", "--model", f"{NAME}@champion", str(exact), str(larger)]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line, path in zip(lines, (exact, larger)):
        printed_path, class_name, probability = line.split("\t")
        assert printed_path == str(path)
        assert class_name in cifar10.class_names
        assert 0 < float(probability) <= 1
    assert f"{larger}: resized from 48x48 to 32x32" in caplog.text


def test_predict_command_names_an_unreadable_image(registered, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")

    assert main(["predict", "--model", f"{NAME}@champion", str(broken)]) == 2
    assert str(broken) in capsys.readouterr().err


def test_runs_of_a_study_nest_under_one_parent_and_the_parent_is_found_again(store):
    from resnet_repro.tracking.runs import PARENT_RUN_TAG, STUDY_RUN_TAG

    ids = []
    for variant in ("plain20", "resnet20"):
        with TrainingRun.start(store, "nesting", f"{variant} seed 0", {}, {"study": "depth", "variant": variant}) as run:
            run.log_metrics({"loss": 2.0}, step=1)
            ids.append(run.run_id)
    with TrainingRun.start(store, "nesting", "resnet20 seed 0", {}, {"study": "other"}) as run:
        other = run.run_id
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("nesting")
    assert experiment is not None
    [parent] = client.search_runs([experiment.experiment_id], filter_string=f"tags.{STUDY_RUN_TAG} = 'depth'")
    assert parent.info.run_name == "depth" and parent.info.status == "FINISHED"
    assert [client.get_run(i).data.tags[PARENT_RUN_TAG] for i in ids] == [parent.info.run_id] * 2
    assert client.get_run(other).data.tags[PARENT_RUN_TAG] != parent.info.run_id
