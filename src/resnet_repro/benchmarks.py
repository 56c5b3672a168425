"""End-to-end training throughput (loader + step) on the real CIFAR-10, and a bf16-vs-fp32 accuracy check.

`bench_training` runs the training loop (train.loop.fit, the code the train stage runs) twice on the
same net, workers and batch size, with the recipe of params.yaml at a constant lr:
  - configured: the project's loader backend and speed paths (precision, channels_last, compile);
  - baseline:   fp32, eager, NCHW, fed by torchvision's usual pipeline (PIL images,
                torchvision.transforms, a shuffling DataLoader), i.e. a typical PyTorch CIFAR script.
Images per second are counted after `warmup_steps` (loader start-up, FFCV's numba compilation,
torch.compile, oneDNN's first calls), over `timed_steps`. `bench_precisions` runs the configured one
alone, in each precision on the GPU and on the CPU (the table of scripts/first-gpu.sh).

`bench_startup` measures what comes before that: the fixed cost a train@ and an evaluate@ stage pay in
their own process (imports, FFCV's import and numba compilation, the loaders, the MLflow run, the
first batch and step, the first evaluation), part by part, with the stages' own pieces.
"""

import contextlib
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from torchvision import transforms

from resnet_repro import models
from resnet_repro.config import Params, TrainParams, load_params, update_params_file
from resnet_repro.data import cifar10
from resnet_repro.data.augment import augmentation_for
from resnet_repro.data.bench import DataLoaderBatches, PilArrays
from resnet_repro.data.loading import Loader, augmentation_from, make_split_loader
from resnet_repro.data.stats import image_stats, load_stats, mean_image_tensor
from resnet_repro.device import (
    autocast_dtype,
    configure_determinism,
    cpu_has_native_bf16,
    resolve_compile,
    resolve_device,
)
from resnet_repro.evaluate.accuracy import top_k_errors
from resnet_repro.layout import META, STATS, Layout
from resnet_repro.stages import evaluate as evaluate_stage
from resnet_repro.stages import train as train_stage
from resnet_repro.tracking.runs import TrainingRun, resolve_tracking_uri
from resnet_repro.train.cuda_check import no_cuda_line, skipped_on_cuda
from resnet_repro.train.distributed import Processes
from resnet_repro.train.loop import TrainingStep, fit
from resnet_repro.train.optimizer import optimizer_for
from resnet_repro.train.recipe import PaperSchedule


@dataclass(frozen=True)
class TrainBenchSettings:
    model: str = "resnet20"
    batch_size: int = 128
    workers: int = 2
    backend: str = "ffcv"
    precision: str = "auto"
    channels_last: bool = True
    compile: str | bool = "auto"
    device: str = "auto"
    warmup_steps: int = 20
    timed_steps: int = 60


def _shortened(train: TrainParams, **changes) -> TrainParams:
    """The recipe of `train` with `changes` (a shorter run, other speed paths), validated as params.yaml
    is; one process, no evaluation, and no checkpoint before the last."""
    return TrainParams.model_validate({**train.model_dump(), "nproc": 1, "eval_every": 0, "checkpoint_seconds": math.inf,
                                       "checkpoint_every": changes["iterations"], **changes})


def _training_images_per_second(model: torch.nn.Module, depth: int, loader: Loader, train: TrainParams,
                                 device: torch.device) -> float:
    """Images/s of `fit` on `loader` after its first log window (the warm-up)."""
    result = fit(TrainingStep(model, optimizer_for(model, train), train, device), PaperSchedule(train, depth), loader,
                 train)
    images = seconds = 0.0
    for previous, row in zip(result.curves.steps, result.curves.steps[1:]):  # the first row is the warm-up
        window_images = (row["step"] - previous["step"]) * train.batch_size
        images, seconds = images + window_images, seconds + window_images / row["images_per_second"]
    return images / seconds


def bench_training(archive: Path, settings: TrainBenchSettings, params: Params, *, baseline: bool = True) -> dict:
    """Training images/s with `settings`, and of the baseline unless not `baseline`; the optimizer and
    augmentation are those of `params` (the project's params.yaml), at the recipe's lr, constant."""
    torch.manual_seed(0)
    device = resolve_device(settings.device)
    configure_determinism(False, cudnn_benchmark=True)
    arrays = cifar10.load_archive(cifar10.fetch_archive(str(archive), Path(tempfile.gettempdir())))
    images, labels = arrays.train_images, arrays.train_labels
    stats = image_stats(images)
    mean_image = mean_image_tensor(stats).to(device)
    augmentation = augmentation_for("cifar10", params.augment, stats)
    # Both runs log one row per warmup_steps; the first row is the warm-up, the others are timed.
    configured_train = _shortened(
        params.train, iterations=settings.warmup_steps + settings.timed_steps, log_every=settings.warmup_steps,
        batch_size=settings.batch_size, schedule="steps", milestones=[], warmup_max_iterations=0,
        linear_warmup_iterations=0, precision=settings.precision, channels_last=settings.channels_last,
        compile=settings.compile)
    baseline_train = configured_train.model_copy(update={"precision": "fp32", "channels_last": False, "compile": False})
    depth = models.spec(settings.model).depth
    common: dict[str, Any] = {"batch_size": settings.batch_size, "train": True, "mean_image": mean_image,
                              "device": device, "num_workers": settings.workers}

    loader: Loader
    with tempfile.TemporaryDirectory() as directory:
        if settings.backend == "ffcv":
            from resnet_repro.data.ffcv_io import make_loader, write_beton

            beton = Path(directory) / "train.beton"
            write_beton(beton, images, labels, num_workers=settings.workers)
            loader = make_loader(beton, augmentation=augmentation, **common)
        else:
            from resnet_repro.data.torch_loader import ArrayImages, TorchLoader

            loader = TorchLoader(ArrayImages(images, labels, augmentation, train=True), **common)
        memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        # Module.to takes memory_format beside a device; torch's overloads of it do not say so.
        model = models.build(settings.model).to(device, memory_format=memory_format)  # type: ignore[call-overload]
        configured = _training_images_per_second(model, depth, loader, configured_train, device)
        del loader  # and its threads, before the baseline's DataLoader forks its workers
        gc.collect()

    dtype = autocast_dtype(settings.precision, device)
    described = {**asdict(settings), "device": str(device),
                 "precision_resolved": str(dtype).removeprefix("torch.") if dtype else "float32",
                 "compile_resolved": resolve_compile(settings.compile, device),
                 "torch_threads": torch.get_num_threads(), "cpu_native_bf16": cpu_has_native_bf16()}
    if not baseline:
        return {"img_per_s": configured, "settings": described}

    channel_mean, channel_std = stats["channel_mean"].tolist(), stats["channel_std"].tolist()
    pipeline = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), transforms.Normalize(channel_mean, channel_std)])
    torchvision_loader = DataLoader(PilArrays(images, labels, pipeline), batch_size=settings.batch_size, shuffle=True,
                                    drop_last=True, num_workers=settings.workers,
                                    persistent_workers=settings.workers > 0, pin_memory=device.type == "cuda",
                                    # Forking this process, which now runs FFCV's and numba's threads, makes the
                                    # C runtime print warnings on stdout (where the JSON goes).
                                    multiprocessing_context="spawn" if settings.workers else None)
    baseline_rate = _training_images_per_second(models.build(settings.model).to(device), depth,
                                                DataLoaderBatches(torchvision_loader, device), baseline_train, device)
    return {"img_per_s": configured, "baseline_img_per_s": baseline_rate, "speedup": configured / baseline_rate,
            "settings": described}


# The devices and precisions of `bench precisions`: each precision on the GPU, beside the same net on the CPU.
BENCH_DEVICES = ("cuda", "cpu")
BENCH_PRECISIONS = ("fp32", "bf16", "fp16")


def not_measured(device: str, precision: str) -> str | None:
    """Why `bench_precisions` does not run `precision` on `device` (this machine's); None where it does."""
    if device == "cuda":
        missing = no_cuda_line()
        if missing:
            return missing.removesuffix("; nothing run")
        return skipped_on_cuda().get(precision)
    if precision == "bf16" and not cpu_has_native_bf16():
        return ("this CPU has no bf16 instructions (AVX512-BF16, AMX): oneDNN emulates bf16, and "
                "`precision: auto` trains in fp32 here")
    if precision == "fp16":
        return "`precision: auto` never trains in fp16 on a CPU"
    return None


def bench_precisions(archive: Path, settings: TrainBenchSettings, params: Params) -> dict:
    """`bench_training`'s images/s (its configured run: loader + step, without its baseline) of the same net
    with the same `settings` in each precision on the GPU and on the CPU: {device: {precision: cell}},
    where a cell is {"img_per_s": rate} or, for what this machine cannot run, {"skipped": reason}."""
    table: dict[str, dict[str, dict]] = {}
    for device in BENCH_DEVICES:
        table[device] = {}
        for precision in BENCH_PRECISIONS:
            reason = not_measured(device, precision)
            if reason is not None:
                table[device][precision] = {"skipped": reason}
                continue
            measured = bench_training(archive, replace(settings, device=device, precision=precision), params,
                                      baseline=False)
            table[device][precision] = {"img_per_s": measured["img_per_s"],
                                        "compiled": measured["settings"]["compile_resolved"]}
    names = {"cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
             "cpu": f"{torch.get_num_threads()} threads"}
    return {"images_per_second": table, "devices": names, "settings": asdict(settings)}


def compare_precisions(archive: Path, params: Params, *, model_name: str = "resnet20", iterations: int = 400,
                       batch_size: int = 128,
                       workers: int = 2, seed: int = 0, precisions: tuple[str, ...] = ("fp32", "bf16")) -> dict:
    """Test error after the same short training (same seed, data order and augmentations: torch
    backend) in each precision, on the real CIFAR-10 (50k training images, 10k test images). The
    schedule is the recipe of `params` shrunk to `iterations` (the paper's: lr 0.1, /10 at 1/2 and 3/4 of
    them; no warm-up), so that both end with a settled, not a still-jumping, test error."""
    from resnet_repro.data.torch_loader import ArrayImages, TorchLoader

    # The recipe's milestones, at the same fractions of the shortened run.
    milestones = [milestone * iterations // params.train.iterations for milestone in params.train.milestones]
    if milestones != sorted(set(milestones)) or (milestones and milestones[0] < 1):
        raise ValueError(f"iterations = {iterations}: too few for the recipe's lr steps, whose milestones "
                         f"{params.train.milestones} of {params.train.iterations} iterations shrink to {milestones}")
    device = resolve_device("auto")
    configure_determinism(False, cudnn_benchmark=True)
    arrays = cifar10.load_archive(cifar10.fetch_archive(str(archive), Path(tempfile.gettempdir())))
    stats = image_stats(arrays.train_images)
    mean_image = mean_image_tensor(stats).to(device)
    augmentation = augmentation_for("cifar10", params.augment, stats)
    results = {}
    for precision in precisions:
        train = _shortened(params.train, iterations=iterations, log_every=50, batch_size=batch_size, schedule="steps",
                           milestones=milestones, warmup_max_iterations=0, linear_warmup_iterations=0,
                           precision=precision, channels_last=True, compile=False)
        torch.manual_seed(seed)
        # Module.to takes memory_format beside a device; torch's overloads of it do not say so.
        model = models.build(model_name).to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        train_loader = TorchLoader(ArrayImages(arrays.train_images, arrays.train_labels, augmentation, train=True),
                                   batch_size=batch_size, train=True, mean_image=mean_image, device=device,
                                   num_workers=workers, seed=seed)
        test_loader = TorchLoader(ArrayImages(arrays.test_images, arrays.test_labels, augmentation, train=False),
                                  batch_size=500, train=False, mean_image=mean_image, device=device, num_workers=workers)
        start = time.perf_counter()
        fit(TrainingStep(model, optimizer_for(model, train), train, device),
            PaperSchedule(train, models.spec(model_name).depth), train_loader, train)
        seconds = time.perf_counter() - start
        dtype = autocast_dtype(precision, device)
        results[precision] = {"test_error": top_k_errors(model, test_loader, device=device, dtype=dtype)["top1_error"],
                              "train_seconds": seconds}
    errors = [result["test_error"] for result in results.values()]
    return {"model": model_name, "iterations": iterations, "batch_size": batch_size, "seed": seed,
            "device": str(device), **{f"{p}_test_error": r["test_error"] for p, r in results.items()},
            **{f"{p}_train_seconds": r["train_seconds"] for p, r in results.items()},
            "max_difference": max(errors) - min(errors)}


# --- the fixed cost of a stage process ------------------------------------------------------------

# The parts of a stage's start that `bench_startup` times, in about the order the stages run them.
STARTUP_PHASES = {
    "imports": "imports of the stage script",
    "load_net": "load the trained net",
    "ffcv_import": "import FFCV (ffcv backend)",
    "loaders": "build the loaders",
    "mlflow": "start (or reopen) the MLflow run",
    "first_batch": "first training batch",
    "first_step": "first training step",
    "first_evaluation": "first pass over the test split",
    "evaluation_again": "second pass over the test split",
}
# What each stage script imports (pipeline/_stage.py, pipeline/<stage>.py), timed in a fresh interpreter.
_STAGE_IMPORTS = {
    "train": "resnet_repro.config, resnet_repro.data.errors, resnet_repro.layout, resnet_repro.train.errors, "
             "resnet_repro.stages.train",
    "evaluate": "resnet_repro.config, resnet_repro.data.errors, resnet_repro.layout, resnet_repro.train.errors, "
                "resnet_repro.stages.evaluate",
}
# A stage process: its imports first, then the rest of its start, timed by `time_stage_start`.
_STAGE_PROCESS = """
import json, sys, time
start = time.perf_counter()
import {imports}
imported = time.perf_counter() - start
from resnet_repro.benchmarks import time_stage_start
time_stage_start(*json.loads(sys.argv[1]), imports_seconds=imported)
"""


def bench_startup(params_path: Path, archive: Path, *, model: str = "resnet20", backend: str | None = None,
                  cold: bool = False) -> dict:
    """Seconds of each part of the start of a train@ and an evaluate@ stage of `model` (STARTUP_PHASES),
    each in a fresh Python process, with the settings of `params_path` on the real CIFAR-10, prepared
    in a temporary project that also holds the MLflow store. `backend` overrides loader.backend; `cold`
    gives the stages an empty numba cache (NUMBA_CACHE_DIR), as the first stage after installing has.

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
    result_path = root / f"{stage}-startup.json"
    arguments = json.dumps([stage, str(root), model, run_id, str(result_path)])
    subprocess.run([sys.executable, "-c", _STAGE_PROCESS.format(imports=_STAGE_IMPORTS[stage]), arguments],
                   env=environment, stdout=sys.stderr, check=True)
    result = json.loads(result_path.read_text())
    seconds = result["seconds"]
    first, again = seconds["first_evaluation"], seconds["evaluation_again"]
    seconds["fixed"] = sum(seconds.values()) - first - again + max(0.0, first - again)
    return result


class _Stopwatch:
    def __init__(self, **seconds: float):
        self.seconds = dict(seconds)

    @contextlib.contextmanager
    def part(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start


def time_stage_start(stage: str, root: str, model: str, run_id: str | None, result_path: str, *,
                     imports_seconds: float) -> None:
    """The start of a `stage` (train or evaluate) in the project at `root`, as the stage runs it, part
    by part; writes {"seconds": {part: seconds}, ...} as JSON to `result_path`. Run by bench_startup in
    a fresh process, after the stage's imports."""
    params = load_params(Path(root) / "params.yaml")
    layout = Layout(root, params.data.dataset)
    stopwatch = _Stopwatch(imports=imports_seconds)
    if stage == "train":
        result = _time_train_start(params, layout, model, stopwatch)
    else:
        result = _time_evaluate_start(params, layout, model, run_id, stopwatch)
    Path(result_path).write_text(json.dumps({"seconds": stopwatch.seconds, **result}))


def _import_loader_backend(params: Params, stopwatch: _Stopwatch) -> None:
    # make_split_loader imports FFCV when it first builds a loader; timed apart here.
    if params.loader.backend == "ffcv":
        with stopwatch.part("ffcv_import"):
            import resnet_repro.data.ffcv_io  # noqa: F401


def _time_train_start(params: Params, layout: Layout, variant: str, stopwatch: _Stopwatch) -> dict:
    """stages.train's start, with its own pieces, up to its first evaluation, on one process."""
    device, processes = resolve_device(params.train.device), Processes()
    configure_determinism(params.train.deterministic, params.train.cudnn_benchmark)
    mean_image = mean_image_tensor(load_stats(layout.prepared_dir / STATS),
                                   size=augmentation_from(params, layout).crop_size).to(device)
    class_names = json.loads((layout.prepared_dir / META).read_text())["class_names"]
    model = train_stage.build_net(variant, len(class_names), 0, params.train, device)
    step = TrainingStep(model, optimizer_for(model, params.train), params.train, device)

    _import_loader_backend(params, stopwatch)
    with stopwatch.part("loaders"):
        train_loader = train_stage.training_loader(params, layout, mean_image, device, 0, processes)
        evaluate = train_stage.evaluation(params, layout, model, mean_image, device, processes)
    with stopwatch.part("mlflow"):
        run = train_stage.start_run(params, layout, variant, 0, device, processes, resume_run_id=None)
    with run:
        batches = iter(train_loader)
        assert isinstance(batches, Generator)  # both backends' batches are generators, which can be closed
        with stopwatch.part("first_batch"):
            images, labels = next(batches)
        batches.close()  # the loader's threads or workers stop with their epoch
        with stopwatch.part("first_step"):
            loss, _ = step(images, labels, params.train.lr)
            loss.item()  # waits for the device
        with stopwatch.part("first_evaluation"):
            evaluate()
        with stopwatch.part("evaluation_again"):
            evaluate()
    train_stage.save_net(layout, variant, 0, model, mean_image, class_names, params)  # for the evaluate stage
    return {"run_id": run.run_id}


def _time_evaluate_start(params: Params, layout: Layout, variant: str, run_id: str | None,
                         stopwatch: _Stopwatch) -> dict:
    """stages.evaluate's start, with its own pieces, on the test split."""
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


def precision_table(result: dict) -> str:
    """`bench_precisions`'s result as a table, a row per precision and a column per device; a cell that was
    not measured says `skipped`, and a line under the table says why."""
    table, devices, settings = result["images_per_second"], result["devices"], result["settings"]
    headers = ["precision", *(f"{device} ({devices[device] or 'none'})" for device in BENCH_DEVICES)]
    rows: list[list[str]] = []
    reasons: dict[str, list[str]] = {}
    for precision in BENCH_PRECISIONS:
        row = [precision]
        for device in BENCH_DEVICES:
            cell = table[device][precision]
            if "skipped" in cell:
                row.append("skipped")
                reasons.setdefault(cell["skipped"], []).append(f"{device} {precision}")
            else:
                row.append(f"{cell['img_per_s']:,.0f}" + (" (compiled)" if cell["compiled"] else ""))
        rows.append(row)
    widths = [max(len(line[i]) for line in [headers, *rows]) for i in range(len(headers))]
    lines = [f"Training images/s, loader + step (resnet-repro bench train's configured run): {settings['model']}, "
             f"batch {settings['batch_size']}, {settings['backend']} loader with {settings['workers']} "
             f"worker{'' if settings['workers'] == 1 else 's'}, "
             f"channels_last {'on' if settings['channels_last'] else 'off'}, {settings['timed_steps']} steps timed "
             f"after {settings['warmup_steps']}",
             *("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [headers, *rows])]
    lines += [f"skipped {', '.join(where)}: {reason}" for reason, where in reasons.items()]
    return "\n".join(lines)
