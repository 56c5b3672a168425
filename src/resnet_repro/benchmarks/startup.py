"""`bench startup`: the fixed cost a train@ and an evaluate@ stage pay in their own process (imports,
FFCV's import and numba compilation, the set-up, the MLflow run, the first batch and step, the first
evaluation), part by part.

A temporary project gets the settings of params.yaml, the real CIFAR-10 prepared (and written to FFCV)
by the prepare stage's own functions, and its own MLflow store. Each stage then starts in a fresh
Python process, as DVC starts it: `python -m resnet_repro.benchmarks.stage_start`, which runs the
stage's own functions and writes the seconds of each part to a JSON file.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from resnet_repro.config import update_params_file
from resnet_repro.layout import Layout
from resnet_repro.tracking.runs import TrainingRun, resolve_tracking_uri

# The parts of a stage's start that a stage process times, in about the order the stages run them.
STARTUP_PHASES = {
    "imports": "imports of the stage script",
    "load_net": "load the trained net",
    "ffcv_import": "import FFCV (ffcv backend)",
    "set_up": "set up the net, step and loaders",
    "loaders": "build the loaders",
    "mlflow": "start (or reopen) the MLflow run",
    "first_batch": "first training batch",
    "first_step": "first training step",
    "first_evaluation": "first pass over the test split",
    "evaluation_again": "second pass over the test split",
}


def bench_startup(params_path: Path, archive: Path, *, model: str, backend: str | None, cold: bool) -> dict:
    """Seconds of each part of the start of a train@ and an evaluate@ stage of `model` (STARTUP_PHASES),
    each in a fresh Python process, with the settings of `params_path` on the real CIFAR-10, prepared
    in a temporary project that also holds the MLflow store. `backend` overrides loader.backend unless
    None; `cold` gives the stages an empty numba cache (NUMBA_CACHE_DIR), as the first stage after
    installing has.

    `fixed` is a stage's cost beyond its work: every part but the passes over the test split, plus
    the first pass's excess over the second (compilation)."""
    with tempfile.TemporaryDirectory(prefix="resnet-repro-startup-") as directory:
        root = Path(directory)
        shutil.copyfile(params_path, root / "params.yaml")
        changes = {"data.archive": str(archive), "mlflow.tracking_uri": f"sqlite:///{root / 'mlflow.db'}"}
        if backend is not None:
            changes["loader.backend"] = backend
        params = update_params_file(root / "params.yaml", changes)
        if params.data.dataset != "cifar10":
            raise ValueError(f"{params_path}: data.dataset = {params.data.dataset!r}: bench startup needs CIFAR-10")
        layout = Layout(root, params.data.dataset)
        # Imported here, not with this module: stages.prepare imports FFCV, whose import a stage process times.
        from resnet_repro.stages.prepare import prepare, write_ffcv

        with contextlib.redirect_stdout(sys.stderr):  # the stages report progress; stdout is for the result
            prepare(params, layout)
            if params.loader.backend == "ffcv":
                write_ffcv(params, layout)
            # The store and the experiment exist before the stages, as in a project after its first training.
            TrainingRun.start(resolve_tracking_uri(root, params.mlflow.tracking_uri), params.mlflow.experiment,
                              run_name="bench startup", params={}, tags={}).end()
        environment = {name: value for name, value in os.environ.items() if name != "MLFLOW_TRACKING_URI"}
        if cold:
            environment["NUMBA_CACHE_DIR"] = str(root / "numba-cache")
        train = _run_stage_process("train", root, model, None, environment)
        evaluate = _run_stage_process("evaluate", root, model, train["run_id"], environment)
    return {"train": train["seconds"], "evaluate": evaluate["seconds"], "backend": params.loader.backend,
            "model": model, "cold": cold, "test_images": evaluate["test_images"]}


def _run_stage_process(stage: str, root: Path, model: str, run_id: str | None, environment: dict) -> dict:
    """stage_start's result for `stage`, run in a fresh interpreter, with its `fixed` cost added."""
    result_path = root / f"{stage}-startup.json"
    command = [sys.executable, "-m", "resnet_repro.benchmarks.stage_start", stage, str(root), model,
               "--result", str(result_path)]
    subprocess.run(command + (["--run-id", run_id] if run_id else []), env=environment, stdout=sys.stderr,
                   check=True)
    result = json.loads(result_path.read_text())
    seconds = result["seconds"]
    first, again = seconds["first_evaluation"], seconds["evaluation_again"]
    seconds["fixed"] = sum(seconds.values()) - first - again + max(0.0, first - again)
    return result
