"""The front door: every command README.md, docs/ and scripts/ give a user, run as written.

The README's main job (`scripts/cpu-study.sh`) runs in a fresh copy of the repository at a reduced scale
through its own environment variables; the README's test command then passes in the same clone.
Every command of the bash blocks of README.md and docs/*.md is either run here (`dvc exp run` and `dvc repro` with
`--dry`, since they would train for hours) or named with the test that covers it; a new command
that is neither fails `test_every_readme_command_is_run_or_covered`, so the README cannot drift. A command
run as written is checked for what its page says it prints (OUTPUT_CHECKS), a python block for the net it
builds (NET_SHAPES).

The main job's project is shared by the tests that need it (`cpu_study`, once per module): those that read
its workspace put the main job's experiment back in it first (`main_jobs_workspace`), and a test that
changes it puts it back after, so that each passes alone and in any order.
"""

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import yaml
from PIL import Image

from projects import REPOSITORY, VENV_BIN, committed, copy_repository, run
from resnet_repro.config import parse_params
from resnet_repro.tracking.server import free_port

pytestmark = pytest.mark.pipeline

README = REPOSITORY / "README.md"
# The pages whose bash blocks give a user commands: the README and the docs it links.
PAGES = [README, *sorted((REPOSITORY / "docs").glob("*.md"))]

# Commands the tests here do not run, each with what covers it instead.
COVERED_ELSEWHERE = {
    r"^bash scripts/setup\.sh": ".ci/run runs it on a fresh machine before the tests",
    r"^\.venv/bin/python -m pytest": ".ci/run runs the README's test command",
    r"^source \.venv/bin/activate": "the tests run with this venv's tools first on PATH",
    r"^export MLFLOW_TRACKING_URI=sqlite": "tests/test_serving.py serves a registered model",
    r"^mlflow models serve ": "tests/test_serving.py",
    r"^curl ": "tests/test_serving.py posts the same three kinds of input",
    r"^sudo ": "tests/test_postgres.py starts its own PostgreSQL cluster",
    r"^mlflow server --backend-store-uri postgresql": "tests/test_postgres.py",
    r"^export MLFLOW_TRACKING_URI=http": "tests/test_postgres.py",
    r"^pip install \"dvc\[": "installs a cloud SDK into the venv; the remote commands themselves run here",
    r"^dvc artifacts get ": "needs a git server with GTO tags",
    r"^resnet-repro study run": "tests/test_pipeline.py trains its project with it on a local Ray; "
                               "tests/test_dispatch.py, its refusals and faults (marked slow)",
    r"^python scripts/publish_result\.py ": "tests/test_pipeline.py::test_publish_result_writes_a_complete_results_folder",
}
# Configuration only (no bucket is reached): run as written in a fresh clone.
REMOTE = r"^dvc remote (add|modify) "
# Servers: started as written in the main job's project, asked for their page, stopped.
SERVED = r"^mlflow ui --backend-store-uri sqlite:///mlflow\.db$"
SCRIPTS = {
    r"^bash scripts/cpu-study\.sh$": "test_cpu_study_registers_four_nets_and_ends_with_the_claims_in_words",
}
# Commands that need CUDA: run as written with the GPUs hidden, where each must stop at once with its one
# line (tests/test_cuda_check.py runs the core's checks on the CPU; on a GPU, they are the test).
NEEDS_CUDA = r"^(bash scripts/first-gpu\.sh|PYTHONPATH=src python -m resnet_repro\.train\.cuda_check)$"
# dvc commands that would train: run with --dry (and --force: DVC 3.67.1's dry run cannot hash the
# outputs of stages that have not run yet, DVC issue 9818, which every stage of a fresh clone is).
DRY = r"^dvc (repro|exp run)\b"
# Run as written in the project the main job left behind.
AS_WRITTEN = (r"^(dvc (metrics show|metrics diff|plots show|exp show|params diff)"
              r"|resnet-repro (?!study run|study select|recipe select)|python -m resnet_repro )")
# Commands that rewrite params.yaml: run as written in a fresh clone, so the main job's project keeps its study.
SELECT = r"^resnet-repro (study|recipe) select "


def readme_blocks(language: str) -> list[str]:
    """The code blocks of `language` in README.md and docs/*.md."""
    return [block for page in PAGES
            for block in re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), re.MULTILINE | re.DOTALL)]


def readme_commands() -> list[str]:
    """The shell commands of the pages' bash blocks: continuation lines joined, comments removed."""
    commands = []
    for block in readme_blocks("bash"):
        for command in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#\s.*$", "", command).strip()
            if command and not command.startswith("#"):
                commands += [re.sub(r"\s+", " ", part).strip() for part in command.split(" && ")]
    return commands


def commands_matching(pattern: str) -> list[str]:
    return [command for command in readme_commands() if re.search(pattern, command)]


def test_every_readme_command_is_run_or_covered():
    patterns = [*COVERED_ELSEWHERE, *SCRIPTS, DRY, AS_WRITTEN, SELECT, SERVED, REMOTE, NEEDS_CUDA]
    uncovered = [command for command in readme_commands() if not any(re.search(p, command) for p in patterns)]
    assert not uncovered, f"README commands no test runs: {uncovered}"
    # The patterns still match something.
    for pattern in [*SCRIPTS, DRY, AS_WRITTEN, SELECT, SERVED, REMOTE, NEEDS_CUDA]:
        assert commands_matching(pattern), pattern
    # A command run as written is checked for what it prints, not only for its exit status.
    unchecked = [command for command in commands_matching(AS_WRITTEN) if len(output_checks(command)) != 1]
    assert not unchecked, f"commands run as written with no (or more than one) OUTPUT_CHECKS entry: {unchecked}"
    assert all(commands_matching(pattern) for pattern in OUTPUT_CHECKS), "an OUTPUT_CHECKS entry no command matches"


def test_cuda_commands_stop_at_once_in_one_line_without_cuda():
    commands = commands_matching(NEEDS_CUDA)
    assert len(commands) == 2, commands  # the whole check and its core
    for command in commands:
        result = subprocess.run(["bash", "-c", command], cwd=REPOSITORY, capture_output=True, text=True, timeout=300,
                                env=script_environment(CUDA_VISIBLE_DEVICES=""))  # no GPU, on any machine
        assert (result.returncode, result.stdout) == (1, ""), f"{command}: {result.stdout}{result.stderr}"
        assert re.fullmatch(r"no CUDA device: torch \S+ \((CUDA \S+|cpu) build\) sees none; nothing run\n",
                            result.stderr), f"{command}: {result.stderr}"


# Inline mentions of the command line in README.md's prose that are not whole commands.
PROSE_MENTIONS = {"resnet-repro pull", "resnet-repro predict", "resnet-repro ..."}
# What a placeholder of an inline command stands for when it is parsed.
PLACEHOLDERS = {"PATH": "cifar-10-python.tar.gz", "DIR": "photos", "NAME": "cifar-depth"}


def test_inline_readme_commands_parse():
    """`resnet-repro ...` in README.md's prose: every option and value it shows is one the parser takes
    (the long ones, benchmarks of minutes, are parsed, not run; the quick ones also run)."""
    from resnet_repro.cli import build_parser

    mentions = sorted({mention for page in PAGES for mention in re.findall(r"`(resnet-repro [^`]*)`", page.read_text())}
                      - PROSE_MENTIONS)
    assert mentions
    for mention in mentions:
        arguments = [PLACEHOLDERS.get(word, word) for word in shlex.split(mention)[1:]]
        try:
            build_parser().parse_args(arguments)
        except SystemExit as error:  # --help exits 0; a refused argument exits 2
            if error.code != 0:
                raise AssertionError(f"README.md shows `{mention}`, which resnet-repro refuses") from error
        if arguments[-1] == "list" or arguments == ["models"]:
            run(["resnet-repro", *arguments], REPOSITORY, timeout=300)


def script_environment(**variables) -> dict:
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **variables}


def run_script(project: Path, script: str, timeout: float, **variables) -> subprocess.CompletedProcess:
    """`bash scripts/<script>` in `project` as the README gives it; AssertionError with its output if it fails."""
    result = subprocess.run(["bash", f"scripts/{script}"], cwd=project, env=script_environment(**variables),
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{script} failed ({result.returncode}):\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
    return result


def fresh_copy(directory: Path) -> Path:
    """A fresh clone's worth of the repository, with this venv where scripts/setup.sh would put it."""
    project = copy_repository(directory)
    (project / ".venv").symlink_to(VENV_BIN.parent)
    return project


class MainJob(NamedTuple):
    project: Path
    result: subprocess.CompletedProcess  # what scripts/cpu-study.sh printed
    experiment: str  # the name DVC gave its experiment


@pytest.fixture(scope="module")
def cpu_study(tmp_path_factory, cifar10_archive) -> MainJob:
    """The README's main job, scripts/cpu-study.sh itself, at a reduced scale (its own variables)."""
    project = fresh_copy(tmp_path_factory.mktemp("cpu-study"))
    result = run_script(project, "cpu-study.sh", timeout=3600, CIFAR10_ARCHIVE=str(cifar10_archive),
                        ITERATIONS="20", SUBSET="500")
    [experiment] = run(["dvc", "exp", "list", "--name-only"], project).stdout.split()
    return MainJob(project, result, experiment)


def main_jobs_workspace(main_job: MainJob) -> Path:
    """The main job's project with its experiment in the workspace (params, metrics, reports), as
    cpu-study.sh leaves it: the tests share the project, and some run or apply other experiments in it."""
    run(["dvc", "exp", "apply", main_job.experiment], main_job.project, timeout=600)
    return main_job.project


MAIN_JOB_NETS = ("plain20", "plain56", "resnet20", "resnet56")


def test_cpu_study_registers_four_nets_and_ends_with_the_claims_in_words(cpu_study):
    from mlflow import MlflowClient

    project, result = main_jobs_workspace(cpu_study), cpu_study.result
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    for variant in MAIN_JOB_NETS:
        version = client.get_model_version_by_alias(f"cifar10-{variant}", "champion")
        assert version.tags["iterations"] == "20"
    # `dvc metrics show`: the study in one row, each net's test error and each tested claim's margin.
    header = next(line.split() for line in result.stdout.splitlines() if line.startswith("Path "))
    row = next(line.split() for line in result.stdout.splitlines() if line.startswith("reports/metrics.json "))
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert set(header[1:]) == set(metrics) >= set(MAIN_JOB_NETS) and len(row) == len(header)
    assert all(isinstance(value, float) for value in metrics.values())
    # Its last lines: each claim's verdict in words, as reports/study.json has it.
    claims = json.loads((project / "reports" / "study.json").read_text())["claims"]
    last_lines = result.stdout.strip().splitlines()[-len(claims):]
    for claim, line in zip(claims, last_lines, strict=True):
        assert line.strip().startswith(f"{claim['id']} {claim['verdict'].upper()}: "), line
        assert result.stdout.count(line) == 1, f"said more than once: {line}"  # the report stage no longer says them
    # At 20 iterations no seed spread was measured (the study's is for 400): nothing can be called shown,
    # and C4 waits for the paper's length.
    assert {claim["verdict"] for claim in claims} <= {"not tested", "not shown"}
    c4 = next(claim for claim in claims if claim["id"] == "C4")
    assert c4["nets"] == ["resnet20", "resnet56"] and "64,000" in c4["reason"]
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in result.stdout


def test_the_test_command_passes_after_the_main_job_in_the_same_clone(cpu_study, cifar10_archive):
    """Command 1 then command 2 in one clone: the main job leaves its experiment's values in params.yaml
    (`dvc exp run --set-param` does) and writes dvc.lock, which the tests must not take for the project's.
    Run here: the quick tests that read the project's params.yaml, dvc.lock or outputs."""
    project = main_jobs_workspace(cpu_study)
    assert "params.yaml" in run(["git", "status", "--porcelain"], project).stdout  # the experiment's values
    assert (project / "dvc.lock").is_file()
    result = run([str(VENV_BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                  "tests/test_config.py", "tests/test_recipe.py", "tests/test_studies.py", "tests/test_startup.py",
                  "tests/test_front_door.py::test_readme_dvc_commands_dry_run_in_a_fresh_clone"],
                 project, check=False, timeout=1200,
                 env={"CIFAR10_ARCHIVE": str(cifar10_archive)})  # a copy has no shared/ beside it, as a clone has
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]


def test_the_main_job_runs_again_in_the_same_clone_without_training_again(cpu_study, cifar10_archive):
    project = cpu_study.project
    again = run_script(project, "cpu-study.sh", timeout=3600, CIFAR10_ARCHIVE=str(cifar10_archive),
                       ITERATIONS="20", SUBSET="500")
    assert "Running stage 'train@" not in again.stdout and "C4 " in again.stdout


def test_readme_commands_run_as_written_in_the_main_jobs_project(cpu_study, cifar10):
    """Each command prints what its page says it shows (OUTPUT_CHECKS), of the main job's own numbers."""
    project = main_jobs_workspace(cpu_study)
    # The files the README's `resnet-repro predict ... cat.png ship.jpg` classifies.
    Image.fromarray(cifar10.test_images[np.flatnonzero(cifar10.test_labels == 3)[0]]).save(project / "cat.png")
    Image.fromarray(cifar10.test_images[np.flatnonzero(cifar10.test_labels == 8)[0]]).save(project / "ship.jpg")
    commands = commands_matching(AS_WRITTEN)
    for command in commands:
        output = run(shlex.split(command), project, timeout=600).stdout
        [check] = output_checks(command)
        check(command, output, project)



# What each command run as written in the main job's project shows, as its page says: checked against the
# project's own files (reports/metrics.json, params.yaml, the images given).
def workspace_metrics(project: Path) -> dict[str, float]:
    return json.loads((project / "reports" / "metrics.json").read_text())


def shown(cell: str, value: float) -> bool:
    """A number as DVC's tables print it: `metrics show/diff` round to 5 decimals, `exp show` to 5
    significant digits."""
    return cell not in ("-", "!", "") and float(cell) in (round(value, 5), float(f"{value:.5g}"))


def table(output: str, first_column: str) -> tuple[str, list[str]]:
    """A table DVC prints: its header (the line whose first word is `first_column`) and the rows below it,
    without the rules (lines of box-drawing characters) and blank lines."""
    lines = [line for line in output.splitlines() if line.strip() and set(line.strip()) != {"─"}]
    start = next(index for index, line in enumerate(lines) if line.split()[0] == first_column)
    return lines[start], lines[start + 1:]


def right_aligned(row: str, header: str, name: str) -> str:
    """The cell of column `name` in `row`, for a column DVC aligns right (numbers): the word of the row that
    ends where the column's name ends."""
    found = re.search(rf"(?<!\S){re.escape(name)}(?!\S)", header)
    assert found, f"no column {name!r} in:\n{header}"
    end = found.end()
    assert row[end - 1] != " " and row[end:end + 1] in ("", " "), f"no cell under {name!r}:\n{header}\n{row}"
    return row[:end].split()[-1]


def check_metrics_show(command: str, output: str, project: Path) -> None:
    """One row: each net's test error and each claim's margin."""
    metrics = workspace_metrics(project)
    assert set(MAIN_JOB_NETS) | {"C1", "C2", "C3"} <= set(metrics), metrics
    header, rows = table(output, "Path")
    [row] = [line.split() for line in rows]
    assert row[0] == "reports/metrics.json" and len(row) == len(header.split()), output
    assert set(header.split()[1:]) == set(metrics), output
    for name, cell in zip(header.split()[1:], row[1:]):
        assert shown(cell, metrics[name]), (name, cell, metrics[name])


def check_metrics_diff(command: str, output: str, project: Path) -> None:
    """The errors and margins against the last commit, which (a fresh clone's) has none: each is new."""
    metrics = workspace_metrics(project)
    header, rows = table(output, "Path")
    assert header.split() == ["Path", "Metric", "HEAD", "workspace", "Change"], output
    by_metric = {row.split()[1]: row.split() for row in rows}
    assert set(by_metric) == set(metrics), output
    for name, value in metrics.items():
        _, _, old, new, _ = by_metric[name]
        assert old == "-" and shown(new, value), (name, by_metric[name], value)


def check_exp_show(command: str, output: str, project: Path) -> None:
    """A row per experiment (the workspace, the last commit and the main job's experiments), with a column
    for each net's test error and each claim's margin; with `--only-changed --drop ...` (the README's), only
    those and the params the experiments changed."""
    metrics = workspace_metrics(project)
    header, rows = table(output, "Experiment")
    experiments = run(["dvc", "exp", "list", "--name-only"], project).stdout.split()
    assert experiments
    for name in ["workspace", *experiments]:
        [row] = [row for row in rows if row.split()[0] == name or f" [{name}] " in row]
        for metric, value in metrics.items():
            cell = right_aligned(row, header, metric)
            assert shown(cell, value), f"{name}: {metric} = {cell}, reports/metrics.json: {value}\n{output}"
    if "--only-changed" in command:
        columns = set(header.split())
        assert columns == {"Experiment", "Created", *metrics, *changed_params(project)}, \
            f"{sorted(columns - {'Experiment', 'Created', *metrics, *changed_params(project)})}\n{output}"


def changed_params(project: Path) -> dict[str, object]:
    """{dotted name: value} of the workspace's params.yaml that differ from the last commit's, named as DVC
    names them (a nested mapping's keys joined with dots; a list is one value); a key the workspace no longer
    has is changed to None, as DVC shows it ("-")."""
    workspace = flat(yaml.safe_load((project / "params.yaml").read_text()))
    last_commit = flat(yaml.safe_load(run(["git", "show", "HEAD:params.yaml"], project).stdout))
    removed = {name: None for name in last_commit if name not in workspace}
    return {name: value for name, value in workspace.items()
            if name not in last_commit or last_commit[name] != value} | removed


def flat(params: dict, prefix: str = "") -> dict[str, object]:
    values: dict[str, object] = {}
    for key, value in params.items():
        if isinstance(value, dict):  # an empty mapping has no param of its own for DVC
            values.update(flat(value, f"{prefix}{key}."))
        else:
            values[f"{prefix}{key}"] = value
    return values


def check_params_diff(command: str, output: str, project: Path) -> None:
    """The params that changed against the last commit: those the main job set, with their values."""
    header, rows = table(output, "Path")
    assert header.split() == ["Path", "Param", "HEAD", "workspace"], output
    params = changed_params(project)
    assert {"train.iterations", "data.subset", "study.name"} <= set(params), params
    workspace = header.index("workspace")  # a left-aligned column; a list's cell holds spaces
    shown_params = {row.split()[1]: row[workspace:].strip() for row in rows}
    assert shown_params == {name: "-" if value is None else str(value) for name, value in params.items()}, output


def check_plots_show(command: str, output: str, project: Path) -> None:
    """Each net's training loss, test error and layer responses, in dvc_plots/index.html."""
    page = project / "dvc_plots" / "index.html"
    assert str(page) in output or "dvc_plots/index.html" in output, output
    html = page.read_text()
    for variant in MAIN_JOB_NETS:
        for title in ("training loss", "test error", "std of layer responses"):
            assert f"{variant} seed 0, {title}" in html, (variant, title)


def check_predict(command: str, output: str, project: Path) -> None:
    """One line per image, in the order given: its path, one CIFAR-10 class and that class's probability
    (the most likely of ten, so at least a tenth)."""
    images = [word for word in shlex.split(command) if word.endswith((".png", ".jpg"))]
    class_names = json.loads((project / "data" / "prepared" / "cifar10" / "meta.json").read_text())["class_names"]
    lines = [line.split("\t") for line in output.splitlines() if line.strip()]
    assert [line[0] for line in lines] == images, output
    for _, class_name, probability in lines:
        assert class_name in class_names and 0.1 <= float(probability) <= 1, output


def check_pull(command: str, output: str, project: Path) -> None:
    """The champion's weights and model card, in the folder given."""
    out = project / shlex.split(command)[shlex.split(command).index("--out") + 1]
    card = json.loads((out / "card.json").read_text())
    assert card["registered_name"] == "cifar10-resnet20" and (out / "model.safetensors").is_file(), card


def check_study_list(command: str, output: str, project: Path) -> None:
    """The paper's studies, each named at the start of a line, and its nets on the next."""
    from resnet_repro.studies import STUDIES

    lines = output.splitlines()
    nets = {lines[index].split()[0]: lines[index + 1].split(":", 1)[1].strip()
            for index, line in enumerate(lines) if line and not line[0].isspace()}
    assert list(nets) == list(STUDIES), output
    for name, study in STUDIES.items():
        assert nets[name] == ", ".join(study.variants), (name, nets[name])
    # As the README says: the paper's CIFAR-10 study, and the main job's four nets.
    assert nets["cifar-paper"] == "plain20, plain32, plain44, plain56, resnet20, resnet32, resnet44, resnet56, resnet110"
    assert nets["cifar-degradation-cpu"] == ", ".join(MAIN_JOB_NETS)


OUTPUT_CHECKS: dict[str, Callable[[str, str, Path], None]] = {
    r"^dvc metrics show$": check_metrics_show,
    r"^dvc metrics diff$": check_metrics_diff,
    r"^dvc exp show\b": check_exp_show,
    r"^dvc params diff$": check_params_diff,
    r"^dvc plots show$": check_plots_show,
    r"^(resnet-repro|python -m resnet_repro) predict ": check_predict,
    r"^resnet-repro pull ": check_pull,
    r"^resnet-repro study list$": check_study_list,
}


def output_checks(command: str) -> list[Callable[[str, str, Path], None]]:
    return [check for pattern, check in OUTPUT_CHECKS.items() if re.search(pattern, command)]


def test_readme_python_blocks_build_nets_of_the_shape_they_say(cpu_study):
    """Every python block of the pages that is not a quote of src/ runs in the main job's project (the
    registry's champion is there); the net a block leaves in `net` maps a batch of images of its input size
    to one score per class of its dataset, in eval mode where the page says so (NET_SHAPES)."""
    project = cpu_study.project
    matched: set[str] = set()
    for block in readme_blocks("python"):
        if is_source_excerpt(block):
            continue
        assignment = net_assignment(block)
        if assignment is None:
            run([str(VENV_BIN / "python"), "-c", block], project, timeout=600)
            continue
        shapes = [pattern for pattern in NET_SHAPES if re.search(pattern, assignment)]
        assert len(shapes) == 1, f"NET_SHAPES should say what `net = {assignment}` gives: {shapes}"
        size, classes, in_eval_mode = NET_SHAPES[shapes[0]]
        matched.add(shapes[0])
        output = run([str(VENV_BIN / "python"), "-c", block + NET_PROBE.format(size=size)], project,
                     timeout=600).stdout
        probe = json.loads(output.strip().splitlines()[-1])
        assert probe["output"] == [2, classes], (block, probe)
        if in_eval_mode is not None:
            assert probe["training"] is not in_eval_mode, (block, probe)
    assert matched == set(NET_SHAPES), f"NET_SHAPES entries no block matches: {set(NET_SHAPES) - matched}"


def net_assignment(block: str) -> str | None:
    """The right-hand side of the last `net = ...` of a python block: the net the block leaves the user with."""
    assignments = re.findall(r"^net = (.*)$", block, re.MULTILINE)
    return assignments[-1] if assignments else None


# What a block's `net = ...` gives, as its page says: (input size, classes, in eval mode or None where the
# page does not say). A CIFAR-10 net takes 32x32 images to 10 classes; an ImageNet net 224x224 to 1,000.
NET_SHAPES: dict[str, tuple[int, int, bool | None]] = {
    # The README's block (and docs/weights.md's): "the published net".
    r'^build\("resnet20", weights="cifar10"\)\.eval\(\)': (32, 10, True),
    r'^resnet_repro\.load_registered\("cifar10-resnet20@champion"\)': (32, 10, True),  # "nn.Module in eval mode"
    r'^build\("resnet18-cifar"\)': (32, 10, None),
    r'^build\("resnet50", ': (224, 1000, None),
}
# Appended to a block: whether its `net` is in training mode, and the shape of its scores for two images.
NET_PROBE = """
import json as _json, torch as _torch
_training = net.training
with _torch.no_grad():
    _scores = net.eval()(_torch.zeros(2, 3, {size}, {size}))
print(_json.dumps({{"training": _training, "output": list(_scores.shape)}}))
"""


def is_source_excerpt(block: str) -> bool:
    """A python block quoted from the package (docs/weights.md shows `PUBLISHED`), word for word."""
    return any(block in path.read_text() for path in (REPOSITORY / "src").rglob("*.py"))


def test_python_blocks_run_or_quote_the_source():
    """A python block of the pages is either an excerpt of src/ as it is now or runs (in the main job's
    project, `test_readme_python_blocks_build_nets_of_the_shape_they_say`): an excerpt that drifts from the
    code it quotes is caught here."""
    excerpts = [block for block in readme_blocks("python") if is_source_excerpt(block)]
    assert excerpts, "docs/weights.md quotes models/weights.py's PUBLISHED"
    for block in readme_blocks("python"):
        if block not in excerpts:
            compile(block, "<a python block of the pages>", "exec")
            assert re.search(r"^(import|from) ", block, re.MULTILINE), f"a python block imports nothing:\n{block}"


def test_select_commands_run_as_written_in_a_fresh_clone(tmp_path):
    """`resnet-repro study select NAME` and `recipe select NAME` rewrite params.yaml: the result is a
    params.yaml the stages take, with the study's or recipe's values."""
    commands = commands_matching(SELECT)
    for command in commands:
        project = fresh_copy(tmp_path / shlex.split(command)[-1])
        run(shlex.split(command), project)
        params = yaml.safe_load((project / "params.yaml").read_text())
        parse_params(params, f"params.yaml after {command}")
        assert params != yaml.safe_load(committed("params.yaml")), command


def test_readme_mlflow_ui_serves_the_main_jobs_runs(cpu_study):
    """`mlflow ui --backend-store-uri sqlite:///mlflow.db` as written, on a free port (`--port`, since a
    user's own `mlflow ui` may hold 5000): its page answers, and its REST API lists the study's runs, by the
    ids the project's store gave them (no other server could answer with those)."""
    import urllib.request

    from mlflow import MlflowClient

    project = cpu_study.project
    [command] = set(commands_matching(SERVED))  # the README and docs/mlflow.md give the same one
    url = f"http://127.0.0.1:{free_port()}"
    server = subprocess.Popen([*shlex.split(command), "--port", url.rsplit(":", 1)[1]], cwd=project,
                              env=script_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    assert server.stdout is not None
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/", timeout=5) as response:
                    assert response.status == 200 and b"MLflow" in response.read()
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()
                assert time.monotonic() < deadline, f"mlflow ui did not answer at {url} within 120 s"
                time.sleep(1)
        client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("resnet-repro-cifar10-cpu")
        assert experiment is not None, "the main job's project has no experiment resnet-repro-cifar10-cpu"
        stored = {run.info.run_id for run in client.search_runs([experiment.experiment_id])}
        request = urllib.request.Request(f"{url}/api/2.0/mlflow/runs/search", method="POST",
                                         data=json.dumps({"experiment_ids": [experiment.experiment_id],
                                                          "max_results": 1000}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            served = {run["info"]["run_id"] for run in json.loads(response.read())["runs"]}
        # The study's parent run and a run per net, at least.
        assert served == stored and len(stored) >= len(MAIN_JOB_NETS) + 1, (served, stored)
        assert server.poll() is None
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def test_remote_commands_run_as_written_in_a_fresh_clone(tmp_path):
    """`dvc remote add` and `dvc remote modify` only write DVC's configuration: they run offline."""
    project = fresh_copy(tmp_path / "project")
    commands = commands_matching(REMOTE)
    for command in commands:
        run(shlex.split(command), project)
    remotes = run(["dvc", "remote", "list"], project).stdout
    assert re.search(r"^storage\s+s3://my-bucket/resnet-repro", remotes, re.MULTILINE), remotes
    assert "access_key_id" in (project / ".dvc" / "config.local").read_text()  # credentials stay local
    assert "access_key_id" not in (project / ".dvc" / "config").read_text()


def test_readme_dvc_commands_dry_run_in_a_fresh_clone(tmp_path):
    project = fresh_copy(tmp_path / "project")
    for command in commands_matching(DRY):
        arguments = shlex.split(command)
        output = run([*arguments[:3 if arguments[1] == "exp" else 2], "--dry", "--force",
                      *arguments[3 if arguments[1] == "exp" else 2:]], project, timeout=600).stdout
        assert "Running stage" in output, command
        # DVC refuses a key params.yaml does not write; the stage would then validate the values.
        overrides = [arguments[i + 1] for i, argument in enumerate(arguments) if argument in ("-S", "--set-param")]
        params = yaml.safe_load((project / "params.yaml").read_text())
        for override in overrides:
            dotted, value = override.split("=", 1)
            section, key = dotted.split(".")
            params[section][key] = yaml.safe_load(value)
        parse_params(params, f"params.yaml after {command}")
    assert run(["git", "status", "--porcelain"], project).stdout == ""  # a dry run changes nothing


def hydra_value(value) -> str:
    """A params.yaml value as `dvc exp run -S` takes it (Hydra's override grammar)."""
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{hydra_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, str):
        return f"'{value}'"  # quoted: an URL's characters are operators of the grammar
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def test_set_param_takes_every_key_of_every_section(tmp_path):
    """`dvc exp run -S <section>.<key>=<value>` works for every key params.yaml writes (DVC refuses a key
    the file does not write); the values given back unchanged, a dry run changes nothing."""
    project = fresh_copy(tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    overrides = [argument for section, values in params.items() for key, value in values.items()
                 for argument in ("-S", f"{section}.{key}={hydra_value(value)}")]
    from resnet_repro.config import Params

    sections = Params.model_fields.values()
    assert len(overrides) // 2 == sum(len(section.annotation.model_fields) for section in sections
                                      if section.annotation is not None)
    run(["dvc", "exp", "run", "--dry", "--force", *overrides], project, timeout=600)
    assert yaml.safe_load((project / "params.yaml").read_text()) == params


def test_set_param_with_a_bad_key_or_value_stops_with_one_line_naming_it(cpu_study):
    project = cpu_study.project
    params = (project / "params.yaml").read_text()
    try:
        result = run(["dvc", "exp", "run", "-S", "train.learning_rate=0.05"], project, check=False, timeout=600)
        assert result.returncode != 0 and "train.learning_rate" in result.stderr
        result = run(["dvc", "exp", "run", "-S", "train.lr=fast"], project, check=False, timeout=600)
        assert result.returncode != 0
        output = result.stdout + result.stderr
        errors = [line for line in output.splitlines() if line.startswith("train: error: ")]
        assert len(errors) == 1, output
        assert "params.yaml: train.lr = 'fast': Input should be a valid number" in errors[0], output
        assert "it/s" not in output  # stopped before its first iteration
    finally:  # DVC wrote lr: fast into params.yaml; what was there before (the main job's values) goes back
        (project / "params.yaml").write_text(params)


def test_early_training_check_at_a_tiny_scale(cifar10_archive):
    for net in ("ours", "reference"):
        output = run([str(VENV_BIN / "python"), "scripts/early_training_check.py", "--net", net, "--depth", "20",
                      "--iterations", "3", "--archive", str(cifar10_archive)], REPOSITORY, timeout=600).stdout
        assert re.search(rf"^{net} resnet20 iteration 3: loss \d+\.\d+, training error [01]\.\d+", output, re.MULTILINE), output


def test_referee_trains_a_few_iterations_and_resumes(tmp_path, cifar10_archive):
    out = tmp_path / "referee"
    command = [str(VENV_BIN / "python"), "scripts/referee_cifar.py", "--archive", str(cifar10_archive),
               "--out", str(out), "--batch-size", "16", "--milestones", "3", "--eval-every", "2", "--threads", "2"]
    run([*command, "--iterations", "4"], REPOSITORY, timeout=600)
    first = json.loads((out / "result.json").read_text())
    assert first["iterations"] == 4 and 0 <= first["test_error"] <= 1
    resumed = run([*command, "--iterations", "6"], REPOSITORY, timeout=600).stdout
    assert "resumed at iteration 4" in resumed
    header, *rows = (out / "curve.tsv").read_text().splitlines()
    assert header.split("\t")[:3] == ["iteration", "train_error", "test_error"]
    assert [int(row.split("\t")[0]) for row in rows] == [2, 4, 6]


def test_every_script_is_run_by_a_test():
    """A script in scripts/ is a command a user is given: a test (or .ci/run) names it, to run it."""
    tests = "".join(path.read_text() for path in (REPOSITORY / "tests").glob("test_*.py"))
    tests += (REPOSITORY / ".ci" / "run").read_text()
    unrun = [path.name for path in (REPOSITORY / "scripts").iterdir()
             if path.is_file() and f"scripts/{path.name}" not in tests and f'"{path.name}"' not in tests]
    assert not unrun, f"scripts no test runs: {unrun}"


# DVC's own HTML page loads vega from a CDN this machine cannot reach: the test serves the same three
# libraries from the npm registry through `dvc plots diff --html-template`, which takes a page with
# `{plot_divs}` in place of DVC's script tags.
PLOTS_TEMPLATE = """<!DOCTYPE html>
<html><head><title>DVC Plot</title>{scripts}</head>
<body>{{plot_divs}}</body></html>"""
VEGA_PACKAGES = {"vega": "vega@5", "vega-lite": "vega-lite@5", "vega-embed": "vega-embed@6"}
# Debian's Chromium as root, with no attempt to reach the network (which this machine refuses).
HEADLESS_CHROMIUM = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def vega_scripts(tmp_path_factory) -> str:
    """Script tags for vega, vega-lite and vega-embed, installed from the npm registry."""
    directory = tmp_path_factory.mktemp("vega")
    run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(directory), *VEGA_PACKAGES.values()],
        directory, timeout=600)
    return "".join(f'<script src="file://{directory}/node_modules/{name}/build/{name}.min.js"></script>'
                   for name in VEGA_PACKAGES)


def test_metrics_diff_and_plots_diff_between_two_experiments(cpu_study, vega_scripts, tmp_path):
    """A second experiment in the main job's clone (the 20-layer nets only: their trainings are cached, so
    only the report runs again); `dvc metrics diff` and `dvc plots diff` compare the two, and the plots
    render in headless Chromium."""
    project = main_jobs_workspace(cpu_study)
    first = cpu_study.experiment
    try:
        compare_with_twenty_layers(project, first, vega_scripts, tmp_path)
    finally:  # the other tests of the module see the main job's workspace, whatever ran before them
        main_jobs_workspace(cpu_study)
        run(["dvc", "exp", "remove", "twenty-layers"], project, check=False)


def compare_with_twenty_layers(project: Path, first: str, vega_scripts: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    output = run(["dvc", "exp", "run", "-S", "study.variants=[plain20,resnet20]", "-n", "twenty-layers"],
                 project, timeout=1200).stdout
    assert "Running stage 'train@" not in output
    diff = json.loads(run(["dvc", "metrics", "diff", first, "twenty-layers", "--all", "--json"], project).stdout)
    changes = diff["reports/metrics.json"]
    assert changes["plain56"]["new"] is None and changes["plain20"].get("diff", 0) == 0
    assert changes["C3"]["old"] != changes["C3"]["new"]  # plain-56 against ResNet-56, then at 20 layers
    assert changes["C1"]["new"] is None  # one plain net: nothing to compare

    template = tmp_path / "template.html"
    template.write_text(PLOTS_TEMPLATE.format(scripts=vega_scripts))
    run(["dvc", "plots", "diff", first, "twenty-layers", "--targets", "metrics/resnet20/seed0/errors.tsv",
         "-o", str(tmp_path / "plots"), "--html-template", str(template)], project)
    page = tmp_path / "plots" / "index.html"
    assert first in page.read_text() and "twenty-layers" in page.read_text()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=HEADLESS_CHROMIUM)
        view = browser.new_page(viewport={"width": 1000, "height": 700})
        errors = []
        view.on("pageerror", lambda error: errors.append(str(error)))
        view.goto(f"file://{page}")
        view.wait_for_selector("canvas, svg.marks", timeout=60_000)  # vega-embed drew the chart
        view.screenshot(path=str(tmp_path / "plots.png"))
        browser.close()
    assert not errors, errors
    with Image.open(tmp_path / "plots.png") as image:
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colors is not None and len(colors) > 20  # axes, curves, legend: not blank
    print(f"plots diff screenshot: {tmp_path / 'plots.png'}")
