"""Copies of this repository that tests reproduce with DVC, as a user would in their own clone."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# What the pipeline writes: a copy starts without it, as a fresh clone does.
_OUTPUTS = ("data/", "models/", "checkpoints/", "metrics/", "reports/")


def run(command: list[str], cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command with this venv's tools first on PATH; AssertionError with its output if it fails."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def set_params(project: Path, **changes) -> None:
    """set_params(project, **{"train.lr": 0.05}) edits params.yaml like a user would."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        params[section][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def copy_repository(project: Path, **params) -> Path:
    """The repository's tracked (and untracked, not ignored) files in `project`, `params` set in its
    params.yaml, committed to a new git repository there."""
    tracked = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], REPOSITORY).stdout
    for name in filter(None, tracked.split("\0")):
        source = REPOSITORY / name
        if source.is_file() and not name.startswith(_OUTPUTS):
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, project / name)
    set_params(project, **params)
    run(["git", "init", "-q"], project)
    commit(project, "project")
    return project


def commit(project: Path, message: str) -> None:
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", message], project)


def stages_that_would_run(project: Path) -> set[str]:
    output = run(["dvc", "repro", "--dry"], project).stdout
    return set(re.findall(r"Running stage '([^']+)'", output))
