"""The GitHub Actions workflows for forks (.github/workflows/, docs/ci.md): valid, and their steps run.

actionlint, with shellcheck for the `run:` scripts, checks both workflows. Then their steps run in order
on a stand-in for the hosted runner (tests/workflows.py), in a fresh clone fetched from a git repository
standing in for origin, whose `main` is the base branch and whose `feature` branch is a pull request's.

Two steps cannot run here and are replaced, each said where it happens:
- `machine` installs git, CA certificates and zstd into the job's Debian 12 container; this machine is
  that system already (Debian 12, root, Python 3.11).
- `setup` is `bash scripts/setup.sh`, checked to be exactly the README's command: it would install
  some 6 GB. The test links this environment's venv where setup.sh puts it and puts the clone's src/
  first on PYTHONPATH, which is what setup.sh's editable install gives (.ci/run runs setup.sh itself on
  a fresh machine).
And there is no internet here: the workflows fetch the official CIFAR-10 archive, the tests give the
real archive beside the checkout (a rebuilt copy, whose md5 differs, so the download step is replaced).
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from projects import REPOSITORY, VENV_BIN, commit, copy_repository, run
from workflows import WORKFLOWS, Event, Runner, load_workflow

SEARCH_PATH = f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"


def tool(name: str) -> str:
    path = shutil.which(name, path=SEARCH_PATH)
    if path is None:
        pytest.fail(f"{name} is not installed: `pip install -e '.[test]'` installs it (pyproject.toml's test extra)")
    return path


def actionlint(directory: Path) -> subprocess.CompletedProcess:
    """actionlint on the workflows of `directory`, with shellcheck on every `run:` script."""
    return subprocess.run([tool("actionlint"), f"-shellcheck={tool('shellcheck')}", "-pyflakes=", "-oneline"],
                          cwd=directory, capture_output=True, text=True, timeout=120)


def test_workflows_pass_actionlint_and_shellcheck(tmp_path):
    result = actionlint(REPOSITORY)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr
    # The same linters on a copy with two faults: both are reported, so the pass above means something.
    broken = tmp_path / "broken"
    (broken / ".github" / "workflows").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(broken)], check=True)
    workflow = (WORKFLOWS / "ci.yml").read_text()
    workflow = workflow.replace('tee "$RUNNER_TEMP/main-job.log"', "tee $RUNNER_TEMP/main-job.log")
    workflow = workflow.replace("if-no-files-found: error", "if-no-file-found: error")
    (broken / ".github" / "workflows" / "ci.yml").write_text(workflow)
    report = actionlint(broken).stdout
    assert "SC2086" in report and "[shellcheck]" in report, report
    assert 'input "if-no-file-found" is not defined' in report, report


def test_push_workflow_runs_on_pushes_and_pull_requests_and_the_slow_tier_weekly_and_by_hand():
    assert set(load_workflow("ci.yml")["on"]) == {"push", "pull_request"}
    scheduled = load_workflow("slow-tests.yml")["on"]
    assert set(scheduled) == {"schedule", "workflow_dispatch"}
    _minute, _hour, day_of_month, month, day_of_week = scheduled["schedule"][0]["cron"].split()
    assert (day_of_month, month) == ("*", "*") and day_of_week.isdigit()  # one day a week


def origin_with_a_pull_request(directory: Path) -> Path:
    """The repository as on GitHub: `main`, and `feature`, a branch that halves the learning rate."""
    origin = copy_repository(directory)
    run(["git", "branch", "-M", "main"], origin)
    run(["git", "checkout", "-q", "-b", "feature"], origin)
    params = origin / "params.yaml"
    params.write_text(re.sub(r"^  lr: 0\.1$", "  lr: 0.05", params.read_text(), count=1, flags=re.MULTILINE))
    commit(origin, "train.lr 0.05")
    run(["git", "checkout", "-q", "main"], origin)
    return origin


def this_machine_is_the_container(runner: Runner, variables: dict) -> dict:
    return {}


def link_this_venv(runner: Runner, variables: dict) -> dict:
    (runner.workspace / ".venv").symlink_to(VENV_BIN.parent)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(runner.workspace / "src"), variables.get("PYTHONPATH")]))}


SUBSTITUTES = {"machine": this_machine_is_the_container, "setup": link_this_venv}


def summary_sections(summary: str) -> dict[str, str]:
    """The job summary's `### ` sections by the start of their title."""
    return {part.split("\n", 1)[0]: part for part in re.split(r"^### ", summary, flags=re.MULTILINE)[1:]}


def section(sections: dict[str, str], title_start: str) -> str:
    matching = [text for title, text in sections.items() if title.startswith(title_start)]
    assert len(matching) == 1, f"no single section '{title_start}...' in {list(sections)}"
    return matching[0]


def table_rows(text: str) -> dict[str, list[str]]:
    """A Markdown table's rows by their second cell (DVC's tables: Path | Param or Metric | ...)."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return {row[1]: row for row in rows[1:]}


def evaluated_variants(workspace: Path) -> list[str]:
    """The nets the main job trained (whichever they are), from the params it left in the workspace."""
    variants = yaml.safe_load((workspace / "params.yaml").read_text())["study"]["variants"]
    assert variants and all((workspace / "metrics" / v / "seed0" / "eval.json").is_file() for v in variants)
    return variants


# Slow: the main job twice, 18 to 22 minutes on the shared 2-core machine (load average 9 to 19), so it runs
# in the scheduled slow tier, not in the README's test command.
@pytest.mark.pipeline
@pytest.mark.slow
def test_push_workflow_runs_its_steps_in_a_fresh_clone_twice_the_second_from_the_cache(tmp_path, cifar10_archive):
    runner = Runner(tmp_path / "runner", origin_with_a_pull_request(tmp_path / "origin"))
    pull_request = Event("pull_request", branch="feature", base_branch="main")
    # The main job's own variables at the scale of tests/test_front_door.py's copy of it; the real archive.
    overrides = {"ITERATIONS": "20", "SUBSET": "500", "CIFAR10_ARCHIVE": str(cifar10_archive)}

    job = runner.run_job("ci.yml", "small-cifar-stages", pull_request, SUBSTITUTES, overrides)
    steps = load_workflow("ci.yml")["jobs"]["small-cifar-stages"]["steps"]
    by_id = {step["id"]: step for step in steps if "id" in step}
    assert by_id["setup"]["run"] == "bash scripts/setup.sh"  # the README's command is what was replaced
    assert [step for step in job.steps if step.startswith("replaced: ")] == [
        f"replaced: {by_id[id]['name']}" for id in SUBSTITUTES]
    run_steps = sum("run" in step for step in steps)
    assert sum(step.startswith("ran: ") for step in job.steps) == run_steps - len(SUBSTITUTES)
    workspace = runner.workspace
    variants = evaluated_variants(workspace)
    assert yaml.safe_load((workspace / "params.yaml").read_text())["train"]["iterations"] == 20
    assert (runner.artifacts / "reports" / "reports" / "study.md").is_file()

    sections = summary_sections(job.summary)
    # origin/main commits no metrics, as in a fork: said, and this run's metrics shown, every net's.
    metrics = section(sections, "Metrics: `origin/main` (committed) → this run")
    assert "`origin/main` has no committed metrics" in metrics
    assert all(f"metrics/{variant}/seed0/eval.json" in metrics for variant in variants)
    # The branch's own change apart from the main job's overrides that params.yaml holds after it ran.
    branch = table_rows(section(sections, "Params this branch commits: `origin/main` → `HEAD`"))
    assert branch == {"train.lr": ["params.yaml", "train.lr", "0.1", "0.05"]}, branch
    on_top = table_rows(section(sections, "Params the main job set on top: `HEAD` → this run"))
    assert on_top["train.iterations"][2:] == ["64000", "20"] and "train.lr" not in on_top
    assert "every stage ran" in job.summary

    # Someone runs the main job on main and commits its results (params.yaml, dvc.lock, the metrics DVC
    # does not cache); their first net's test error differs from what this branch will get.
    for path in ["params.yaml", "dvc.lock", "reports/study.json", *(f"metrics/{v}/seed0/eval.json" for v in variants)]:
        (runner.origin / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(workspace / path, runner.origin / path)
    first = runner.origin / "metrics" / variants[0] / "seed0" / "eval.json"
    first.write_text(json.dumps({**json.loads(first.read_text()), "test_top1_error": 0.125}))
    run(["git", "add", "-f", "."], runner.origin)
    commit(runner.origin, "The main job's results")

    job = runner.run_job("ci.yml", "small-cifar-stages", pull_request, SUBSTITUTES, overrides)
    # The cache brought back DVC's run-cache and the MLflow store: training restored, registering worked.
    match = re.search(r"restored instead of running.*: (.*)\.$", job.summary, re.MULTILINE)
    assert match, job.summary
    restored = match.group(1)
    assert all(f"`train@{variant}-0`" in restored for variant in variants), restored
    assert any(f"Registered cifar10-{variants[0]} version 2" in log for log in job.logs.values())
    metric_rows = table_rows(section(summary_sections(job.summary), "Metrics: `origin/main` (committed) → this run"))
    assert metric_rows["test_top1_error"][:3] == [f"metrics/{variants[0]}/seed0/eval.json", "test_top1_error", "0.125"]


def collected_test_ids(collect_only_output: str) -> set[str]:
    return {line for line in collect_only_output.splitlines() if "::" in line}


@pytest.mark.pipeline
def test_scheduled_workflow_runs_the_slow_tier(tmp_path, cifar10_archive):
    """Its steps, with pytest collecting only (PYTEST_ADDOPTS): the tests it would run are the slow tier's."""
    def place_the_archive(runner: Runner, variables: dict) -> dict:
        (runner.workspace / "data" / "raw").mkdir(parents=True)
        (runner.workspace / "data" / "raw" / "cifar-10-python.tar.gz").symlink_to(cifar10_archive)
        return {}

    runner = Runner(tmp_path / "runner", origin_with_a_pull_request(tmp_path / "origin"))
    job = runner.run_job("slow-tests.yml", "slow-tier", Event("schedule", branch="main"),
                         {**SUBSTITUTES, "archive": place_the_archive},
                         additions={"PYTEST_ADDOPTS": "--collect-only -q"})
    collected = job.logs["The slow tier"]
    assert re.search(r"^(\d+)/\d+ tests collected \(\d+ deselected\)", collected, re.MULTILINE), collected
    slow_tier = run([str(VENV_BIN / "python"), "-m", "pytest", "-m", "slow", "--collect-only", "-q",
                     "-p", "no:cacheprovider"], runner.workspace, timeout=600).stdout
    assert collected_test_ids(slow_tier) and collected_test_ids(collected) == collected_test_ids(slow_tier)
    assert (runner.artifacts / "slow-tier-results" / "test-results" / "slow-tier.xml").is_file()
