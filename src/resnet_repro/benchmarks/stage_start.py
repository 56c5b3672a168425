"""One stage process of `bench startup`: the start of a train@ or an evaluate@ stage, timed part by part.

    python -m resnet_repro.benchmarks.stage_start {train,evaluate} ROOT MODEL --result JSON [--run-id ID]

benchmarks.startup runs it in a fresh interpreter, as DVC runs a stage script. It imports what the
stage script imports (timed), then runs the stage's own functions on the project at ROOT (for train,
stages.train's `set_up` and `start_run`; for evaluate, the pieces of stages.evaluate) up to two passes
over the test split, and writes {"seconds": {part: seconds}, ...} to JSON. This module imports the
standard library alone at its top, so that the stage's imports are timed from a bare interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the annotations alone: imported at run time only once the stage's imports are timed
    from resnet_repro.config import Params
    from resnet_repro.layout import Layout

# What each stage script imports: pipeline/_stage.py's run_stage, then pipeline/<stage>.py.
_COMMON_IMPORTS = ("resnet_repro.config", "resnet_repro.data.errors", "resnet_repro.layout",
                   "resnet_repro.train.errors")
STAGE_IMPORTS = {
    "train": (*_COMMON_IMPORTS, "resnet_repro.stages.train", "resnet_repro.train.distributed"),
    "evaluate": (*_COMMON_IMPORTS, "resnet_repro.stages.evaluate"),
}


class Stopwatch:
    """Seconds per named part."""

    def __init__(self, **seconds: float):
        self.seconds = dict(seconds)

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m resnet_repro.benchmarks.stage_start")
    parser.add_argument("stage", choices=sorted(STAGE_IMPORTS))
    parser.add_argument("root", type=Path, help="the project: params.yaml, the prepared data, the MLflow store")
    parser.add_argument("model", help="the net the stage trains or evaluates (seed 0)")
    parser.add_argument("--result", type=Path, required=True, help="where the seconds go, as JSON")
    parser.add_argument("--run-id", help="evaluate: the MLflow run of the training")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    for module in STAGE_IMPORTS[args.stage]:
        importlib.import_module(module)
    stopwatch = Stopwatch(imports=time.perf_counter() - start)

    from resnet_repro.config import load_params
    from resnet_repro.layout import Layout

    params = load_params(args.root / "params.yaml")
    layout = Layout(args.root, params.data.dataset)
    if args.stage == "train":
        result = _train_start(params, layout, args.model, stopwatch)
    else:
        result = _evaluate_start(params, layout, args.model, args.run_id, stopwatch)
    args.result.write_text(json.dumps({"seconds": stopwatch.seconds, **result}))


def _import_loader_backend(params: Params, stopwatch: Stopwatch) -> None:
    # The loaders import FFCV when they first build one; timed apart here.
    if params.loader.backend == "ffcv":
        with stopwatch.part("ffcv_import"):
            import resnet_repro.data.ffcv_io  # noqa: F401


def _train_start(params: Params, layout: Layout, variant: str, stopwatch: Stopwatch) -> dict:
    """stages.train's start, with its own functions, up to its first evaluation, on one process; the net
    is saved for the evaluate stage that follows."""
    from resnet_repro.device import resolve_device
    from resnet_repro.stages import train as train_stage
    from resnet_repro.train.distributed import Processes

    device, processes = resolve_device(params.train.device), Processes()
    _import_loader_backend(params, stopwatch)
    with stopwatch.part("set_up"):
        ready = train_stage.set_up(params, layout, variant, 0, processes, device)
    with stopwatch.part("mlflow"):
        run = train_stage.start_run(params, layout, variant, 0, device, processes, resume_run_id=None)
    with run:
        batches = iter(ready.loader)
        assert isinstance(batches, Generator)  # both backends' batches are generators, which can be closed
        with stopwatch.part("first_batch"):
            images, labels = next(batches)
        batches.close()  # the loader's threads or workers stop with their epoch
        with stopwatch.part("first_step"):
            loss, _ = ready.step(images, labels, params.train.lr)
            loss.item()  # waits for the device
        with stopwatch.part("first_evaluation"):
            ready.evaluate()
        with stopwatch.part("evaluation_again"):
            ready.evaluate()
    train_stage.save_net(layout, variant, 0, ready.model, ready.mean_image, ready.class_names, params)
    return {"run_id": run.run_id}


def _evaluate_start(params: Params, layout: Layout, variant: str, run_id: str | None, stopwatch: Stopwatch) -> dict:
    """stages.evaluate's start, with its own pieces, on the test split."""
    from resnet_repro.data.loading import make_split_loader
    from resnet_repro.device import resolve_device
    from resnet_repro.evaluate.accuracy import top_k_errors
    from resnet_repro.stages import evaluate as evaluate_stage
    from resnet_repro.tracking.runs import TrainingRun, resolve_tracking_uri

    device = resolve_device(params.train.device)
    with stopwatch.part("load_net"):
        trained = evaluate_stage.load_net(layout, variant, 0, device)
    _import_loader_backend(params, stopwatch)
    with stopwatch.part("loaders"):
        loader = make_split_loader(params, layout, "test", train=False, batch_size=params.evaluate.batch_size,
                                   mean_image=trained.mean_image, device=device)
    with stopwatch.part("first_evaluation"):
        errors = top_k_errors(trained.module, loader, device=device)
    with stopwatch.part("evaluation_again"):
        top_k_errors(trained.module, loader, device=device)
    with stopwatch.part("mlflow"), TrainingRun.start(
            resolve_tracking_uri(layout.root, params.mlflow.tracking_uri), params.mlflow.experiment,
            run_name=f"{variant} bench startup", params={}, tags={}, resume_run_id=run_id) as run:
        run.log_metrics({"test_top1_error": errors["top1_error"]}, params.train.iterations)
    return {"test_images": errors["num_images"]}


if __name__ == "__main__":
    main()
