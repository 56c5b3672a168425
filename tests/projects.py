"""Copies of this repository that tests reproduce with DVC, as a user would in their own clone."""

import atexit
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# What the pipeline writes: a copy starts without it, as a fresh clone does.
_OUTPUTS = ("data/prepared/", "data/ffcv/", "data/raw/", "models/", "checkpoints/", "metrics/", "reports/", "mlflow.db")
# What a user's own runs change in their clone: the README's main job (`dvc exp run --set-param`) leaves
# its values in params.yaml, and any `dvc repro` writes dvc.lock. Tests take these files as committed.
WORKSPACE_STATE = ("params.yaml", "dvc.lock")


@functools.cache
def committed(name: str) -> str | None:
    """The text of the repository's file `name` as committed at HEAD; None if HEAD has no such file."""
    result = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=REPOSITORY, capture_output=True, text=True, check=False)
    return result.stdout if result.returncode == 0 else None


@functools.cache
def committed_file(name: str) -> Path:
    """A copy of the committed `name` (e.g. params.yaml) in a directory of its own, for tests that read the
    project's file: the working tree's may hold the values of the user's last experiment."""
    text = committed(name)
    if text is None:
        raise FileNotFoundError(f"{name} is not committed at HEAD of {REPOSITORY}")
    directory = Path(tempfile.mkdtemp(prefix="committed-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    (directory / name).write_text(text)
    return directory / name


def run(command: list[str], cwd: Path, check: bool = True, env: dict | None = None,
        **kwargs) -> subprocess.CompletedProcess:
    """Run a command with this venv's tools first on PATH and `env` added to this process's environment;
    AssertionError with its output if it fails."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def params_with(changes: dict) -> dict:
    """The repository's committed params.yaml with `changes` ({"train": {"iterations": 10}, ...}) merged
    into its sections: params.yaml writes every key, so a test states only what it changes."""
    params = yaml.safe_load(committed("params.yaml"))
    for section, values in changes.items():
        params[section] = {**params[section], **values}
    return params


def set_params(project: Path, **changes) -> None:
    """set_params(project, **{"train.lr": 0.05}) edits params.yaml like a user would."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        params[section][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def copy_repository(project: Path, **params) -> Path:
    """The repository's tracked (and untracked, not ignored) files in `project`, as a fresh clone has them
    (the committed params.yaml, no dvc.lock, no outputs), `params` set in its params.yaml, committed to a
    new git repository there."""
    tracked = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], REPOSITORY).stdout
    for name in filter(None, tracked.split("\0")):
        source = REPOSITORY / name
        if source.is_file() and not name.startswith(_OUTPUTS) and name not in WORKSPACE_STATE:
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, project / name)
    for name in WORKSPACE_STATE:
        if (text := committed(name)) is not None:
            (project / name).write_text(text)
    if params:  # set_params rewrites the file without its comments: a copy without changes keeps them
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


# The train stage as DVC runs it (pipeline/train.py's wrapper: SIGTERM becomes exit status 143, and
# train.nproc > 1 runs it under torchrun), for a project given by its params rather than params.yaml.
_TRAIN_SCRIPT = """
import json, sys
sys.path.insert(0, {pipeline!r})
from train import train
from resnet_repro.config import parse_params
from resnet_repro.layout import Layout
train(parse_params(json.loads({params!r})), Layout({root!r}), "resnet20", 0)
"""


def write_train_script(root: Path, params: dict) -> Path:
    """A script in `root` that trains resnet20 seed 0 with `params` (the train stage's code)."""
    script = root / "train_resnet20.py"
    script.write_text(_TRAIN_SCRIPT.format(pipeline=str(REPOSITORY / "pipeline"), params=json.dumps(params),
                                           root=str(root)))
    return script


def prepared_project(root: Path, cifar10, train_images: int = 256, test_images: int = 100) -> Path:
    """A project directory whose prepare stage has run on the first `train_images` training and
    `test_images` test images of the real CIFAR-10."""
    from resnet_repro.data.prepared import write_split
    from resnet_repro.data.stats import image_stats, save_stats
    from resnet_repro.io import write_json
    from resnet_repro.layout import Layout

    prepared = Layout(root).prepared_dir
    prepared.mkdir(parents=True)
    write_split(prepared, "train", cifar10.train_images[:train_images], cifar10.train_labels[:train_images])
    write_split(prepared, "test", cifar10.test_images[:test_images], cifar10.test_labels[:test_images])
    save_stats(prepared / "stats.json", image_stats(cifar10.train_images[:train_images]))
    write_json(prepared / "meta.json", {"dataset": "cifar10", "class_names": cifar10.class_names,
                                        "sizes": {"train": train_images, "test": test_images}})
    return root
