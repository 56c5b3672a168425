"""A stand-in for GitHub's hosted runner: the steps of a workflow's job, run in order on this machine.

`run:` steps run as the runner runs them: the step's script as a file, in bash (`bash --noprofile --norc
-eo pipefail` for `shell: bash`, `bash -e` when no shell is given), in the workspace, with the runner's
variables (GITHUB_WORKSPACE, GITHUB_STEP_SUMMARY, GITHUB_BASE_REF, RUNNER_TEMP, a fresh HOME, ...) under
the workflow's, the job's and the step's `env:`. The hosted actions (`uses:`) are stood in for:
checkout fetches from a local git repository standing in for origin, cache restores what an earlier job
saved for the same paths and saves at the end of a successful job, upload-artifact copies the files.

A test names the steps it replaces (by step id) and the variables it changes, and says why. Whatever
this stand-in cannot do as the runner would (an expression it cannot evaluate, an `if:` on a `run:` step,
an action it has no stand-in for, a write to GITHUB_ENV or GITHUB_OUTPUT) stops the job with an
AssertionError, so a workflow cannot grow a step that the test silently does less with.
"""

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from projects import REPOSITORY

WORKFLOWS = REPOSITORY / ".github" / "workflows"
# How the runner starts a `run:` script, by the step's shell (GitHub's documented defaults on Linux).
SHELLS = {"bash": ["bash", "--noprofile", "--norc", "-eo", "pipefail"], None: ["bash", "-e"]}
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
# The runner's files for the commands a step gives it; this stand-in reads only the summary.
COMMAND_FILES = ("GITHUB_ENV", "GITHUB_OUTPUT", "GITHUB_PATH")

# A replaced step: called with the runner and the step's environment; returns variables for the later steps.
Substitute = Callable[["Runner", dict[str, str]], dict[str, str]]


def load_workflow(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True)  # YAML 1.1 reads the key `on` as true
    return workflow


def evaluate(text, contexts: dict[str, str]) -> str:
    """`text` with its `${{ a.b }}` and `${{ a.b || c.d }}` expressions replaced from `contexts`."""
    def value(match: re.Match) -> str:
        names = [name.strip() for name in match.group(1).split("||")]
        unknown = [name for name in names if name not in contexts]
        assert not unknown, f"the stand-in runner cannot evaluate {match.group(0)} (it knows {sorted(contexts)})"
        return next((contexts[name] for name in names if contexts[name]), "")
    return EXPRESSION.sub(value, str(text))


@dataclass
class Event:
    """What triggered the run: its name, the branch checked out and, for a pull request, its base."""
    name: str
    branch: str
    base_branch: str = ""
    default_branch: str = "main"


@dataclass
class Job:
    summary: str  # what the job wrote to GITHUB_STEP_SUMMARY
    steps: list[str]  # the steps in the order they ran, each "ran", "stood in for" or "replaced"
    logs: dict[str, str] = field(default_factory=dict)  # a `run:` step's name -> its output


@dataclass
class Runner:
    """One machine of the hosted runner, reused job after job: each job starts with a fresh workspace
    (at the same path, as GitHub's is), HOME and temporary directory; the actions' cache outlives jobs."""
    root: Path
    origin: Path  # the git repository standing in for the repository on GitHub

    @property
    def workspace(self) -> Path:
        return self.root / "work" / "repository" / "repository"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def temp(self) -> Path:
        return self.root / "temp"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    def run_job(self, workflow_name: str, job_name: str, event: Event, substitutes: Mapping[str, Substitute] = {},
                overrides: Mapping[str, str] = {}, additions: Mapping[str, str] = {}) -> Job:
        """Run the job's steps in order. `substitutes` replace steps by id; `overrides` change variables the
        workflow sets (each must be one it sets); `additions` are variables the workflow does not set."""
        workflow = load_workflow(workflow_name)
        job = workflow["jobs"][job_name]
        unsupported = {"services", "strategy", "if"} & job.keys()
        assert not unsupported, f"the stand-in runner does not do a job's {sorted(unsupported)}"
        missing = set(substitutes) - {step.get("id") for step in job["steps"]}
        assert not missing, f"{workflow_name} has no step with the id {sorted(missing)} to replace"
        for directory in (self.root / "work", self.home, self.temp, self.artifacts):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        self.workspace.mkdir(parents=True)
        summary = self.temp / "step_summary.md"
        summary.touch()
        contexts = {"github.event_name": event.name, "github.base_ref": event.base_branch,
                    "github.event.repository.default_branch": event.default_branch,
                    "github.workspace": str(self.workspace), "runner.temp": str(self.temp), "runner.os": "Linux"}
        variables = {
            **{name: value for name, value in os.environ.items() if not name.startswith(("GITHUB_", "RUNNER_"))},
            "CI": "true", "GITHUB_ACTIONS": "true", "HOME": str(self.home), "RUNNER_OS": "Linux",
            "RUNNER_TEMP": str(self.temp), "GITHUB_WORKSPACE": str(self.workspace), "GITHUB_EVENT_NAME": event.name,
            "GITHUB_REF": f"refs/heads/{event.branch}", "GITHUB_BASE_REF": event.base_branch,
            "GITHUB_HEAD_REF": event.branch if event.base_branch else "", "GITHUB_STEP_SUMMARY": str(summary),
            **{name: str(self.temp / name.lower()) for name in COMMAND_FILES},
            **{name: evaluate(value, contexts) for name, value in workflow.get("env", {}).items()},
            **{name: evaluate(value, contexts) for name, value in job.get("env", {}).items()},
        }
        set_by_workflow = {*workflow.get("env", {}), *job.get("env", {}),
                           *(name for step in job["steps"] for name in step.get("env", {}))}
        not_set = set(overrides) - set_by_workflow
        assert not not_set, f"{workflow_name} sets no {sorted(not_set)} to override"
        already_set = set(additions) & (set(variables) | set_by_workflow)
        assert not already_set, f"{sorted(already_set)} are set already: override them instead"
        variables |= additions
        default_shell = (job.get("defaults", {}).get("run", {}).get("shell")
                         or workflow.get("defaults", {}).get("run", {}).get("shell"))

        ran, logs, caches = [], {}, []
        for step in job["steps"]:
            name = step.get("name") or step.get("uses") or step["run"].splitlines()[0]
            step_env = {key: evaluate(value, contexts) for key, value in step.get("env", {}).items()}
            step_variables = {**variables, **step_env, **overrides}
            for file in COMMAND_FILES:
                Path(variables[file]).write_text("")
            if step.get("id") in substitutes:
                variables |= substitutes[step["id"]](self, step_variables)
                ran.append(f"replaced: {name}")
            elif "uses" in step:
                assert step.get("if", "always()") == "always()", f"{name}: the stand-in evaluates no `if: {step['if']}`"
                action = step["uses"].split("@")[0]
                assert action in ACTIONS, f"{name}: the stand-in runner has no stand-in for {step['uses']}"
                caches += ACTIONS[action](self, event, step.get("with", {}))
                ran.append(f"stood in for: {name}")
            else:
                assert "if" not in step, f"{name}: the stand-in evaluates no `if:` on a run step"
                logs[name] = self._run_script(step, name, len(ran), step.get("shell", default_shell), step_variables)
                ran.append(f"ran: {name}")
            for file in COMMAND_FILES:
                written = Path(variables[file]).read_text()
                assert written == "", f"{name} wrote to {file}, which the stand-in does not carry over: {written}"
        for paths in caches:  # the cache action's post-job step: save, after a successful job
            self._save(paths)
        return Job(summary.read_text(), ran, logs)

    def _run_script(self, step: dict, name: str, index: int, shell: str | None, variables: dict[str, str]) -> str:
        assert shell in SHELLS, f"{name}: the stand-in runs no shell {shell!r}"
        script = self.temp / f"step-{index}.sh"
        script.write_text(step["run"])
        result = subprocess.run([*SHELLS[shell], str(script)], cwd=self.workspace / step.get("working-directory", "."),
                                env=variables, capture_output=True, text=True, timeout=3600)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"step '{name}' failed ({result.returncode}):\n{output[-8000:]}"
        return output

    def _cache_paths(self, spec: str) -> list[Path]:
        paths = [line.strip() for line in spec.splitlines() if line.strip()]
        return [self.home / path[2:] if path.startswith("~/") else self.workspace / path for path in paths]

    def _stored(self, path: Path) -> Path:
        where = path.relative_to(self.home) if path.is_relative_to(self.home) else path.relative_to(self.workspace)
        return self.root / "actions-cache" / ("home" if path.is_relative_to(self.home) else "workspace") / where

    def _restore(self, paths: list[Path]) -> None:
        for path in paths:
            stored = self._stored(path)
            if stored.is_dir():
                shutil.copytree(stored, path, symlinks=True)
            elif stored.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(stored, path)

    def _save(self, paths: list[Path]) -> None:
        for path in paths:
            stored = self._stored(path)
            if stored.is_dir():
                shutil.rmtree(stored)
            stored.unlink(missing_ok=True)
            if path.is_dir():
                shutil.copytree(path, stored, symlinks=True)
            elif path.is_file():
                stored.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, stored)


def _checkout(runner: Runner, event: Event, inputs: dict) -> list:
    """actions/checkout's own commands: a new repository, origin's branch fetched (one commit deep by default)."""
    assert set(inputs) <= {"fetch-depth"}, f"the checkout stand-in takes no {sorted(set(inputs) - {'fetch-depth'})}"
    depth = int(inputs.get("fetch-depth", 1))
    for command in (["init", "-q"], ["remote", "add", "origin", f"file://{runner.origin}"],
                    ["fetch", "-q", "--no-tags", *([f"--depth={depth}"] if depth else []), "origin",
                     f"+refs/heads/{event.branch}:refs/remotes/origin/{event.branch}"],
                    ["checkout", "-q", "--force", "-B", event.branch, f"refs/remotes/origin/{event.branch}"]):
        subprocess.run(["git", *command], cwd=runner.workspace, env={**os.environ, "HOME": str(runner.home)},
                       check=True, capture_output=True)
    return []


def _cache(runner: Runner, event: Event, inputs: dict) -> list:
    """actions/cache, keyed by its paths: what an earlier job saved for them comes back (as a restore-keys
    match would); returned for saving at the end of the job."""
    paths = runner._cache_paths(inputs["path"])
    runner._restore(paths)
    return [paths]


def _upload_artifact(runner: Runner, event: Event, inputs: dict) -> list:
    paths = runner._cache_paths(inputs["path"])
    found = [path for path in paths if path.exists()]
    if inputs.get("if-no-files-found", "warn") == "error":
        assert found, f"upload-artifact {inputs['name']}: no files at {inputs['path']}"
    for path in found:
        destination = runner.artifacts / inputs["name"] / path.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, destination)
        else:
            shutil.copy2(path, destination)
    return []


ACTIONS = {"actions/checkout": _checkout, "actions/cache": _cache, "actions/upload-artifact": _upload_artifact}
