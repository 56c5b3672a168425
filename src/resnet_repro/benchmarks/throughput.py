"""Training images/s end to end (loader + step) on the real CIFAR-10: `bench train` and `bench precisions`.

`bench_training` runs the training loop (train.loop.fit, the code the train stage runs) twice on the
same net, workers and batch size, with the recipe of params.yaml at a constant lr:
  - configured: the loader backend and speed paths (precision, channels_last, compile) of the settings;
  - baseline:   fp32, eager, NCHW, fed by torchvision's usual pipeline (data.bench), i.e. a typical
                PyTorch CIFAR script.
Images per second are counted after `warmup_steps` (loader start-up, FFCV's numba compilation,
torch.compile, oneDNN's first calls), over `timed_steps`. `bench_precisions` runs the configured one
alone, in each precision on the GPU and on the CPU (the table of scripts/first-gpu.sh).
"""

import gc
import math
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Self

import torch

from resnet_repro import models
from resnet_repro.config import Params, TrainParams
from resnet_repro.data import cifar10
from resnet_repro.data.augment import augmentation_for
from resnet_repro.data.bench import PilArrays, torchvision_loader, torchvision_transforms
from resnet_repro.data.loading import Loader
from resnet_repro.data.stats import image_stats, mean_image_tensor
from resnet_repro.device import autocast_dtype, configure_determinism, cpu_has_native_bf16, resolve_compile, resolve_device
from resnet_repro.train.cuda_check import no_cuda_line, skipped_on_cuda
from resnet_repro.train.loop import TrainingStep, fit
from resnet_repro.train.optimizer import optimizer_for
from resnet_repro.train.recipe import PaperSchedule


@dataclass(frozen=True)
class TrainBenchSettings:
    """What a timed training run measures. Built by `from_params`: the values a training of the project
    gets from params.yaml, unless the command line sets them."""

    model: str
    batch_size: int
    workers: int
    backend: str
    precision: str
    channels_last: bool
    compile: str | bool
    device: str
    warmup_steps: int
    timed_steps: int

    @classmethod
    def from_params(cls, params: Params, *, model: str, warmup_steps: int, timed_steps: int, **given: Any) -> Self:
        """train.batch_size, loader.num_workers, loader.backend and train's precision, channels_last,
        compile and device of `params`, each replaced by its field in `given` where there is one."""
        train = params.train
        of_params = {"batch_size": train.batch_size, "workers": params.loader.num_workers,
                     "backend": params.loader.backend, "precision": train.precision,
                     "channels_last": train.channels_last, "compile": train.compile, "device": train.device}
        unknown = given.keys() - of_params.keys()
        if unknown:
            raise TypeError(f"TrainBenchSettings.from_params: no setting {sorted(unknown)} comes from params.yaml")
        return cls(model=model, warmup_steps=warmup_steps, timed_steps=timed_steps, **{**of_params, **given})


def shortened(train: TrainParams, **changes) -> TrainParams:
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


def bench_training(archive: Path, settings: TrainBenchSettings, params: Params, *, baseline: bool) -> dict:
    """Training images/s with `settings`, and of the baseline if `baseline`; the optimizer and
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
    configured_train = shortened(
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
            write_beton(beton, images, labels)
            loader = make_loader(beton, augmentation=augmentation, **common)
        else:
            from resnet_repro.data.torch_loader import ArrayImages, TorchLoader

            loader = TorchLoader(ArrayImages(images, labels, augmentation, train=True), **common)
        memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        # Module.to takes memory_format beside a device; torch's overloads of it do not say so.
        model = models.build(settings.model).to(device, memory_format=memory_format)  # type: ignore[call-overload]
        configured = _training_images_per_second(model, depth, loader, configured_train, device)
        del loader  # and its threads, before the baseline's DataLoader starts its workers
        gc.collect()

    dtype = autocast_dtype(settings.precision, device)
    described = {**asdict(settings), "device": str(device),
                 "precision_resolved": str(dtype).removeprefix("torch.") if dtype else "float32",
                 "compile_resolved": resolve_compile(settings.compile, device),
                 "torch_threads": torch.get_num_threads(), "cpu_native_bf16": cpu_has_native_bf16()}
    if not baseline:
        return {"img_per_s": configured, "settings": described}

    torchvision_batches = torchvision_loader(PilArrays(images, labels, torchvision_transforms(augmentation, stats)),
                                             settings.batch_size, settings.workers, device)
    baseline_rate = _training_images_per_second(models.build(settings.model).to(device), depth, torchvision_batches,
                                                baseline_train, device)
    return {"img_per_s": configured, "baseline_img_per_s": baseline_rate, "speedup": configured / baseline_rate,
            "settings": described}


# --- bench precisions: the configured run in each precision, on the GPU and on the CPU --------------

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
