"""What the study runner's preflight, driver and task share: a net and its stage, git and DVC run as
subprocesses, and the error that stops a study run."""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

# Set for every DVC and MLflow process the runner starts, as the README asks of every such process.
QUIET_TOOLS = {"DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "NO_ALBUMENTATIONS_UPDATE": "1"}


class StudyRunError(RuntimeError):
    """The study cannot run as asked: a dirty tree, no DVC remote, a tracking store many nets cannot share,
    no node a net fits on."""


@dataclass(frozen=True)
class Net:
    """One net of the study: a variant trained from a seed, by its own stage of dvc.yaml's matrix."""

    variant: str
    seed: int

    @property
    def stage(self) -> str:
        return f"train@{self.variant}-{self.seed}"


def run(command: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `command` in `cwd`; a failure raises StudyRunError with the command and the end of its output."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise StudyRunError(f"`{' '.join(command)}` failed in {cwd} ({result.returncode}):\n"
                            f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def dvc(*arguments: str) -> list[str]:
    """A DVC command line, run by this interpreter (the one whose environment has the project installed)."""
    return [sys.executable, "-m", "dvc", *arguments]


def lock_outputs(root: Path, stage: str) -> list[dict] | None:
    """The outputs (paths and hashes) that `root`'s dvc.lock records for `stage`; None if it has no entry."""
    lock = Path(root) / "dvc.lock"
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}
    return stages.get(stage, {}).get("outs")
