"""The whole pipeline through DVC on a small subset of the real CIFAR-10, as a user runs it.

One module-scoped project (a copy of this repository with CPU-scale params) is trained once, by
`resnet-repro study run` on a local Ray (both nets at once), which ends with the `dvc repro` that restores
them from the run-cache and evaluates, registers and reports. The tests then check what a user relies on:
that the study ran on Ray and left what a sequential `dvc repro` leaves, outputs and errors, no-op re-runs,
which stages a params change re-runs, resume after kill -9 (under `dvc repro` itself), bad input refused,
and pulling the registered model from another directory. (The study runner's refusals and faults:
tests/test_dispatch.py.)
"""

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import local_servers
from projects import VENV_BIN, commit, copy_repository, run, set_params, stages_that_would_run

pytestmark = pytest.mark.pipeline

VARIANTS = ["plain20", "resnet20"]
ITERATIONS = 120


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar10_archive) -> tuple[Path, str]:
    """A fresh copy of the repository (tracked files only) with CPU-scale params and a DVC remote, committed,
    trained once by `resnet-repro study run` on a local Ray: the project, and what the study run printed."""
    directory = tmp_path_factory.mktemp("project")
    project = copy_repository(directory / "project", **{
        "data.archive": str(cifar10_archive), "data.subset": 2000, "data.val_size": 500,
        "train.iterations": ITERATIONS, "train.milestones": [80, 100], "train.checkpoint_every": 10,
        "train.eval_every": 60, "train.log_every": 10, "study.variants": VARIANTS, "study.seeds": [0],
    })
    run(["dvc", "remote", "add", "-f", "-d", "study", str(directory / "remote")], project)
    commit(project, "a DVC remote for the study's run-cache")
    with local_servers.ray_head(directory) as address:
        output = run(["resnet-repro", "study", "run", "--address", address], project, timeout=1800).stdout
    return project, output


@pytest.fixture(scope="module")
def project(trained) -> Path:
    return trained[0]


def test_study_run_trains_both_nets_at_once_and_dvc_restores_them(trained):
    project, output = trained
    for variant in VARIANTS:
        assert re.search(rf"^queued   train@{variant}-0 \(num_gpus=1, num_cpus=3\)", output, re.MULTILINE), output
        assert re.search(rf"^finished train@{variant}-0 on ", output, re.MULTILINE), output
    # Each concurrent task was given its own GPU.
    visible = re.findall(r"^finished train@\S+ on \S+, CUDA_VISIBLE_DEVICES=(\d+)", output, re.MULTILINE)
    assert sorted(visible) == ["0", "1"], output
    assert "dvc repro restored 2 of 2 trained net(s) from the run-cache" in output
    # Both nets went to Ray before the driver waited for either (so that Ray could run them at once, each on
    # its own GPU, as above), whatever the machine's load did to their timing.
    events = [line.split()[0] for line in output.splitlines() if line.startswith(("queued ", "finished "))]
    assert events[:2] == ["queued", "queued"] and events.count("queued") == 2, output

    # The workspace is what a sequential `dvc repro` leaves: nothing to run, every net registered once,
    # each net's run nested under the study's one parent run, its loss logged once per step.
    assert "up to date" in run(["dvc", "status"], project).stdout
    assert stages_that_would_run(project) == set()
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("resnet-repro-cifar10")
    assert experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    plain, residual = runs["plain20 seed 0"], runs["resnet20 seed 0"]
    # The two trainings ran at once: each began before the other ended.
    assert plain.info.start_time < residual.info.end_time and residual.info.start_time < plain.info.end_time
    assert plain.data.tags["mlflow.parentRunId"] == residual.data.tags["mlflow.parentRunId"] \
        == runs["cifar-paper"].info.run_id
    for variant in VARIANTS:
        assert client.get_model_version_by_alias(f"cifar10-{variant}", "champion").version == 1
        steps = [m.step for m in client.get_metric_history(runs[f"{variant} seed 0"].info.run_id, "loss")]
        assert sorted(steps) == sorted(set(steps)) and len(steps) >= ITERATIONS // 10


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_repro_trains_evaluates_and_registers_every_variant(project):
    for variant in VARIANTS:
        evaluation = read_json(project / "metrics" / variant / "seed0" / "eval.json")
        # The full real test set, every image once; chance is 90% error.
        assert evaluation["test_images"] == 10_000
        assert evaluation["val_images"] == 500
        assert evaluation["test_top1_error"] < 0.8, evaluation
        training = read_json(project / "metrics" / variant / "seed0" / "train.json")
        assert training["iterations"] == ITERATIONS
        header, *rows = (project / "metrics" / variant / "seed0" / "curve.tsv").read_text().splitlines()
        assert header.split("\t")[:4] == ["step", "loss", "train_error", "lr"]
        steps = [int(row.split("\t")[0]) for row in rows]
        # Every log_every steps, plus the steps where a timed checkpoint was taken.
        assert steps == sorted(set(steps)) and set(range(10, ITERATIONS + 1, 10)) <= set(steps)
        responses = read_json(project / "metrics" / variant / "seed0" / "responses.json")
        assert [row["layer"] for row in responses] == list(range(1, 19))  # Figure 7: the 18 3x3 layers
        assert all(row["std"] > 0 for row in responses)
        registry = read_json(project / "metrics" / variant / "seed0" / "registry.json")
        assert registry["name"] == f"cifar10-{variant}" and "champion" in registry["aliases"]
    report = (project / "reports" / "study.md").read_text()
    assert "resnet20" in report and "8.75" in report  # the paper's Table 6 beside the measured error


def test_mlflow_run_has_params_curves_eval_metrics_and_tags(project):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    training = read_json(project / "metrics" / "resnet20" / "seed0" / "run.json")
    assert (training["variant"], training["seed"]) == ("resnet20", 0)
    # train.json is a DVC metric: numbers only (names and ids live in run.json).
    assert all(isinstance(value, (int, float)) for value in read_json(project / "metrics" / "resnet20" / "seed0"
                                                                      / "train.json").values())
    mlflow_run = client.get_run(training["mlflow_run_id"])
    assert mlflow_run.info.run_name == "resnet20 seed 0"
    assert mlflow_run.data.params["train.lr"] == "0.1"
    tags = mlflow_run.data.tags
    assert (tags["variant"], tags["family"], tags["depth"], tags["shortcut"], tags["seed"]) == \
        ("resnet20", "residual", "20", "A", "0")
    assert re.fullmatch(r"[0-9a-f]{40}", tags["git_commit"])
    assert "test_top1_error" in mlflow_run.data.metrics
    losses = client.get_metric_history(mlflow_run.info.run_id, "loss")
    curve = (project / "metrics" / "resnet20" / "seed0" / "curve.tsv").read_text().splitlines()[1:]
    assert sorted(m.step for m in losses) == [int(row.split("\t")[0]) for row in curve]


def test_dvc_plots_show_renders_every_declared_curve(project, tmp_path):
    run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], project)
    page = (tmp_path / "plots" / "index.html").read_text()
    for variant in VARIANTS:
        for title in ("training loss", "test error", "std of layer responses"):
            assert f"{variant} seed 0, {title}" in page


def test_second_repro_runs_nothing(project):
    assert stages_that_would_run(project) == set()
    assert "up to date" in run(["dvc", "status"], project).stdout


def test_changing_lr_reruns_only_training_and_what_follows(project):
    original = (project / "params.yaml").read_text()
    try:
        set_params(project, **{"train.lr": 0.05})
        # A dry run lists the stages whose own inputs changed: every train stage, and not prepare or
        # ffcv. evaluate, register and report follow because they depend on what training writes.
        assert stages_that_would_run(project) == {f"train@{variant}-0" for variant in VARIANTS}
    finally:
        (project / "params.yaml").write_text(original)


def test_editing_a_module_only_the_report_imports_marks_the_report_stage_and_no_other(project):
    """What `dvc repro` skips is up to date: a code change marks the stages that import it (dvc.yaml's deps
    are each script's import closure, tests/test_stage_deps.py), and only those."""
    figures = project / "src/resnet_repro/report/figures.py"
    original = figures.read_text()
    try:
        figures.write_text(original + "\n# an edit\n")
        changed = json.loads(run(["dvc", "status", "--json"], project).stdout)
        assert list(changed) == ["report"], changed
        assert changed["report"] == [{"changed deps": {"src/resnet_repro/report": "modified"}}], changed
        assert run(["dvc", "status"], project).stdout.startswith("report:\n")
    finally:
        figures.write_text(original)
    assert "up to date" in run(["dvc", "status"], project).stdout


def test_publish_result_names_the_key_a_project_of_an_older_params_schema_lacks(project, tmp_path):
    params_file = project / "params.yaml"
    original = params_file.read_text()
    older = yaml.safe_load(original)
    del older["study"]["seed_spread"]  # as the projects trained before it was added
    script = str(Path(__file__).resolve().parents[1] / "scripts" / "publish_result.py")
    try:
        params_file.write_text(yaml.safe_dump(older, sort_keys=False))
        failed = run([str(VENV_BIN / "python"), script, "--project", str(project), "--variant", "resnet20",
                      "--out", str(tmp_path / "published")], project, check=False)
    finally:
        params_file.write_text(original)
    assert failed.returncode != 0 and failed.stderr.strip().splitlines() == [
        f"publish_result: error: {params_file}: study.seed_spread: required key is missing: the project was written "
        f"by an older version of resnet-repro; add the missing key with its value in this repository's params.yaml "
        f"and run again"]
    assert not (tmp_path / "published").exists()


def copy_of(project: Path, destination: Path) -> Path:
    """A copy of the trained project (git, DVC's cache, the MLflow store) for a test that changes what the
    others check: the tests share `project` in any order. MLflow's store names the artifacts' folder by its
    absolute path: the copy's new runs write to the copy's."""
    shutil.copytree(project, destination, symlinks=True)
    with sqlite3.connect(destination / "mlflow.db") as store:
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
            store.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (str(project), str(destination)))
    store.close()
    return destination


def test_kill_9_during_training_then_repro_resumes(project, tmp_path):
    # On a copy: training again registers another version of the net and starts another MLflow run.
    project = copy_of(project, tmp_path / "project")
    checkpoint = project / "checkpoints" / "resnet20" / "seed0" / "checkpoint.pt"
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    # -f: train again from scratch (the finished checkpoint is not resumed).
    process = subprocess.Popen(["dvc", "repro", "-f", "--single-item", "train@resnet20-0"], cwd=project, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    assert process.stdout is not None
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            state = torch.load(checkpoint, weights_only=True) if checkpoint.exists() else None
            if state is not None and not state["complete"] and state["iteration"] >= 30:
                break
            time.sleep(1)
        assert process.poll() is None, process.stdout.read().decode()
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    interrupted = torch.load(checkpoint, weights_only=True)
    # Nothing looks finished: DVC removed the stage's outputs when it started, and the lock is stale.
    assert not (project / "models" / "resnet20" / "seed0" / "model.safetensors").exists()
    assert "train@resnet20-0" in run(["dvc", "status"], project).stdout

    # Forced again, it resumes. (A plain `dvc repro` would not run it: its inputs did not change since the
    # module's first repro, whose outputs DVC's cache holds and checks out.)
    output = run(["dvc", "repro", "-f", "--single-item", "train@resnet20-0"], project, timeout=1800).stdout
    assert f"Resumed from checkpoint at iteration {interrupted['iteration']}" in output
    run(["dvc", "repro"], project, timeout=1800)
    training = read_json(project / "metrics" / "resnet20" / "seed0" / "run.json")
    assert training["mlflow_run_id"] == interrupted["run_id"]  # the same MLflow run continued
    assert stages_that_would_run(project) == set()


def test_pulled_model_from_another_directory_reproduces_eval_error(project, tmp_path):
    """What a colleague does: only the tracking URI, no checkout, the model's own normalisation."""
    env_uri = f"sqlite:///{project / 'mlflow.db'}"
    pulled = tmp_path / "pulled"
    run(["resnet-repro", "pull", "models:/cifar10-resnet20@champion", "--out", str(pulled),
         "--tracking-uri", env_uri], tmp_path)
    with np.load(project / "data" / "prepared" / "cifar10" / "test.npz") as test:
        np.save(tmp_path / "images.npy", test["images"])
        np.save(tmp_path / "labels.npy", test["labels"])
    script = f"""
import numpy as np, torch, resnet_repro
from resnet_repro.data.normalize import normalize
model = resnet_repro.load_registered("cifar10-resnet20@champion", tracking_uri={env_uri!r})
images = torch.from_numpy(np.load("images.npy")).permute(0, 3, 1, 2)
labels = torch.from_numpy(np.load("labels.npy"))
with torch.no_grad():
    predictions = torch.cat([model(normalize(batch, model.mean_image)).argmax(1) for batch in images.split(500)])
print((predictions != labels).float().mean().item())
"""
    error = float(run([sys.executable, "-c", script], tmp_path).stdout.strip().splitlines()[-1])
    # The champion's own evaluation, as its version records it: the champion need not be the newest version,
    # so the newest eval.json is not the reference. Both are fp32; other batch sizes may sum in another
    # order, hence one image of the 10,000 either way.
    from mlflow import MlflowClient

    champion = MlflowClient(env_uri).get_model_version_by_alias("cifar10-resnet20", "champion")
    assert error == pytest.approx(float(champion.tags["test_top1_error"]), abs=1e-4)
    assert (pulled / "model.safetensors").exists() and (pulled / "card.json").exists()


def test_predict_prints_the_class_of_real_images(project, tmp_path, cifar10):
    from PIL import Image

    paths = []
    for index in range(3):
        path = tmp_path / f"test{index}.png"
        Image.fromarray(cifar10.test_images[index]).save(path)
        paths.append(str(path))
    output = run(["resnet-repro", "predict", "--model", "models:/cifar10-resnet20@champion",
                  "--tracking-uri", f"sqlite:///{project / 'mlflow.db'}", *paths], tmp_path).stdout
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 3
    assert all(any(name in line for name in cifar10.class_names) for line in lines)


def test_missing_alias_lists_what_exists(project, tmp_path):
    result = run(["resnet-repro", "pull", "models:/cifar10-resnet20@best", "--out", str(tmp_path / "x"),
                  "--tracking-uri", f"sqlite:///{project / 'mlflow.db'}"], tmp_path, check=False)
    assert result.returncode != 0
    assert "champion" in result.stderr and "\nTraceback" not in result.stderr


@pytest.mark.parametrize("dotted, value, message", [
    ("train.lr", -0.1, "train.lr = -0.1"),
    ("data.subset", 50_000, "data.subset = 50000"),
    ("study.variants", ["resnet21"], "resnet21"),
])
def test_bad_params_stop_the_stage_with_one_line(project, dotted, value, message):
    original = (project / "params.yaml").read_text()
    try:
        set_params(project, **{dotted: value})
        result = run([sys.executable, "pipeline/prepare.py"], project, check=False)
        assert result.returncode != 0
        assert message in result.stderr and "Traceback" not in result.stderr
    finally:
        (project / "params.yaml").write_text(original)


def test_corrupt_archive_fails_prepare_and_keeps_previous_outputs(project, tmp_path, cifar10_archive):
    truncated = tmp_path / "cifar-10-python.tar.gz"
    with open(cifar10_archive, "rb") as source:
        truncated.write_bytes(source.read(5_000_000))
    original = (project / "params.yaml").read_text()
    prepared = project / "data" / "prepared" / "cifar10"
    before = sorted(p.name for p in prepared.iterdir())
    try:
        set_params(project, **{"data.archive": str(truncated)})
        result = run([sys.executable, "pipeline/prepare.py"], project, check=False)
        assert result.returncode != 0
        assert str(truncated) in result.stderr and "Traceback" not in result.stderr
        assert sorted(p.name for p in prepared.iterdir()) == before
    finally:
        (project / "params.yaml").write_text(original)


def test_fresh_clone_with_dvc_pull_is_complete_and_reruns_nothing(project, tmp_path):
    """A teammate's view: push to a remote, clone the git repository, pull, and nothing is stale."""
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-f", "-d", "teammates", str(remote)], project)
    run(["dvc", "push"], project)
    commit(project, "results")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    run(["dvc", "pull"], clone)
    assert "up to date" in run(["dvc", "status"], clone).stdout
    assert stages_that_would_run(clone) == set()
    assert (clone / "models" / "resnet20" / "seed0" / "model.safetensors").exists()


def test_publish_result_writes_a_complete_results_folder(project, tmp_path):
    out = tmp_path / "results" / "cifar10-resnet20"
    printed = run([str(VENV_BIN / "python"), str(Path(__file__).resolve().parents[1] / "scripts" / "publish_result.py"),
                   "--project", str(project), "--variant", "resnet20", "--out", str(out)], project).stdout
    files = {path.name for path in out.iterdir()}
    assert files == {"model.safetensors", "preprocess.safetensors", "model.json", "train.json", "eval.json",
                     "curve.tsv", "errors.tsv", "responses.json", "first1000.json", "errors.png", "README.md"}
    from resnet_repro.io import file_sha256

    assert json.loads(printed)["sha256"]["model.safetensors"] == file_sha256(out / "model.safetensors")
    # The entry to paste into models/weights.py's PUBLISHED: valid Python, pinning the folder's model.json.
    from resnet_repro.models import weights

    entry = eval(json.loads(printed)["weights_entry"].strip().rstrip(","), vars(weights))
    assert (entry.ref, entry.folder, entry.recipe) == ("resnet20:cifar10", "cifar10-resnet20", "cifar-paper")
    assert entry.sha256 == file_sha256(out / "model.json") and re.fullmatch(r"[0-9a-f]{12}", entry.commit)
    assert entry.test_top1_error == read_json(out / "eval.json")["test_top1_error"]
    evaluation = read_json(project / "metrics" / "resnet20" / "seed0" / "eval.json")
    readme = (out / "README.md").read_text()
    assert f"{100 * evaluation['test_top1_error']:.2f}%" in readme and "8.75%" in readme
    assert "dvc repro train@resnet20-0 evaluate@resnet20-0" in readme and file_sha256(out / "model.safetensors") in readme
    # Asking for a net the project has not trained names the missing file and writes nothing.
    failed = run([str(VENV_BIN / "python"), str(Path(__file__).resolve().parents[1] / "scripts" / "publish_result.py"),
                  "--project", str(project), "--variant", "resnet56", "--out", str(tmp_path / "other")], project,
                 check=False)
    assert failed.returncode != 0 and "models/resnet56/seed0/model.safetensors" in failed.stderr
    assert not (tmp_path / "other").exists()


def test_publish_result_gives_each_segment_of_a_resumed_run(project, tmp_path):
    """A run resumed on other machines: each segment's speed, and the segments' sum as the wall time."""
    script = str(Path(__file__).resolve().parents[1] / "scripts" / "publish_result.py")
    header = "machine\tprecision\tfirst_iteration\tlast_iteration\tseconds\n"
    segments = tmp_path / "segments.tsv"
    segments.write_text(header + f"EPYC, AVX2\tfp32\t0\t60\t20\nEPYC, AVX512-BF16\tbf16\t60\t{ITERATIONS}\t10\n")
    out = tmp_path / "published"
    run([str(VENV_BIN / "python"), script, "--project", str(project), "--variant", "resnet20", "--out", str(out),
         "--segments", str(segments)], project)
    readme = (out / "README.md").read_text()
    assert "0 to 60: EPYC, AVX2, fp32, 384 images/s" in readme  # 60 iterations of batch 128 in 20 s
    assert f"60 to {ITERATIONS}: EPYC, AVX512-BF16, bf16, {(ITERATIONS - 60) * 128 // 10} images/s" in readme
    assert "0.01 h of training (the segments' sum" in readme
    # Segments that leave a gap are refused, naming the file and line, and nothing is written.
    segments.write_text(header + "EPYC\tfp32\t0\t50\t20\nEPYC\tbf16\t60\t120\t10\n")
    failed = run([str(VENV_BIN / "python"), script, "--project", str(project), "--variant", "resnet20",
                  "--out", str(tmp_path / "other"), "--segments", str(segments)], project, check=False)
    assert failed.returncode != 0 and f"{segments}, line 3: the segment must start at iteration 50" in failed.stderr
    assert not (tmp_path / "other").exists()


def test_publish_result_keeps_its_note_and_segments_so_the_folder_can_be_published_again(project, tmp_path):
    """The note goes after the README's first paragraph; passing the folder's own files back rewrites it as it was."""
    script = str(Path(__file__).resolve().parents[1] / "scripts" / "publish_result.py")
    segments, note = tmp_path / "segments.tsv", tmp_path / "note.md"
    segments.write_text("machine\tprecision\tfirst_iteration\tlast_iteration\tseconds\n"
                        f"EPYC, AVX2\tfp32\t0\t{ITERATIONS}\t30\n")
    note.write_text("This misses the paper by far: it trained for minutes.\n")
    out = tmp_path / "published"
    command = [str(VENV_BIN / "python"), script, "--project", str(project), "--variant", "resnet20", "--out", str(out)]
    run(command + ["--segments", str(segments), "--note", str(note)], project)
    readme = (out / "README.md").read_text()
    paragraphs = readme.split("\n\n")
    assert paragraphs[2] == "This misses the paper by far: it trained for minutes."
    assert (out / "segments.tsv").read_text() == segments.read_text() and (out / "note.md").read_text() == note.read_text()
    run(command + ["--segments", str(out / "segments.tsv"), "--note", str(out / "note.md")], project)
    assert (out / "README.md").read_text() == readme and (out / "note.md").read_text() == note.read_text()
    # An empty note is refused, naming the file, and the published folder is left as it was.
    note.write_text("\n")
    failed = run(command + ["--note", str(note)], project, check=False)
    assert failed.returncode != 0 and f"{note}: the note is empty" in failed.stderr
    assert (out / "README.md").read_text() == readme
