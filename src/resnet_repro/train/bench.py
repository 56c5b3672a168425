"""End-to-end training throughput (loader + step) on the real CIFAR-10, and a bf16-vs-fp32 accuracy check.

`bench_training` runs the training loop (`loop.fit`, the code the train stage runs) twice on the same
net, workers and batch size:
  - configured: the project's loader backend and speed paths (precision, channels_last, compile);
  - baseline:   fp32, eager, NCHW, fed by torchvision's usual pipeline (PIL images,
                torchvision.transforms, a shuffling DataLoader), i.e. a typical PyTorch CIFAR script.
Images per second are counted after `warmup_steps` (loader start-up, FFCV's numba compilation,
torch.compile, oneDNN's first calls), over `timed_steps`.
"""

import gc
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import transforms

from resnet_repro import models
from resnet_repro.config import AugmentParams
from resnet_repro.data import cifar10
from resnet_repro.data.augment import augmentation_for
from resnet_repro.data.bench import PilArrays
from resnet_repro.data.stats import image_stats, mean_image_tensor
from resnet_repro.evaluate.accuracy import top_k_errors
from resnet_repro.train.device import (autocast_dtype, configure_determinism, cpu_has_native_bf16, resolve_compile,
                                       resolve_device)
from resnet_repro.train.loop import LoopSettings, fit
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


class _Batches:
    """A plain DataLoader behind the loaders' interface (len, set_epoch), as the loop expects."""

    def __init__(self, loader: DataLoader, device: torch.device):
        self._loader, self._device = loader, device

    def __len__(self) -> int:
        return len(self._loader)

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        for images, labels in self._loader:
            yield images.to(self._device, non_blocking=True), labels.to(self._device, non_blocking=True)


def _training_images_per_second(model: torch.nn.Module, loader, settings: LoopSettings, batch_size: int) -> float:
    """Images/s of `fit` on `loader` after its first log window (the warm-up)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    result = fit(model, optimizer, PaperSchedule(base_lr=0.1, milestones=[], decay=0.1), loader, settings)
    images = seconds = 0.0
    for previous, row in zip(result.curves.steps, result.curves.steps[1:]):  # the first row is the warm-up
        window_images = (row["step"] - previous["step"]) * batch_size
        images, seconds = images + window_images, seconds + window_images / row["images_per_second"]
    return images / seconds


def bench_training(archive: Path, settings: TrainBenchSettings) -> dict:
    torch.manual_seed(0)
    device = resolve_device(settings.device)
    configure_determinism(False, cudnn_benchmark=True)
    arrays = cifar10.load_archive(cifar10.fetch_archive(str(archive), Path(tempfile.gettempdir())))
    images, labels = arrays.train_images, arrays.train_labels
    stats = image_stats(images)
    mean_image = mean_image_tensor(stats).to(device)
    augmentation = augmentation_for("cifar10", AugmentParams(), stats)
    dtype = autocast_dtype(settings.precision, device)
    compiled = resolve_compile(settings.compile, device)
    # Both runs log one row per warmup_steps; the first row is the warm-up, the others are timed.
    steps = settings.warmup_steps + settings.timed_steps
    loop = dict(iterations=steps, log_every=settings.warmup_steps, checkpoint_every=steps, checkpoint_seconds=math.inf,
                eval_every=0, device=device)
    common = {"batch_size": settings.batch_size, "train": True, "mean_image": mean_image, "device": device,
              "num_workers": settings.workers}

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
        model = models.build(settings.model).to(device, memory_format=memory_format)
        configured = _training_images_per_second(
            model, loader, LoopSettings(**loop, dtype=dtype, channels_last=settings.channels_last, compile=compiled),
            settings.batch_size)
        del loader  # and its threads, before the baseline's DataLoader forks its workers
        gc.collect()

    channel_mean, channel_std = stats["channel_mean"].tolist(), stats["channel_std"].tolist()
    pipeline = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), transforms.Normalize(channel_mean, channel_std)])
    torchvision_loader = DataLoader(PilArrays(images, labels, pipeline), batch_size=settings.batch_size, shuffle=True,
                                    drop_last=True, num_workers=settings.workers, persistent_workers=True,
                                    pin_memory=device.type == "cuda",
                                    # Forking this process, which now runs FFCV's and numba's threads, makes the
                                    # C runtime print warnings on stdout (where the JSON goes).
                                    multiprocessing_context="spawn" if settings.workers else None)
    baseline = _training_images_per_second(
        models.build(settings.model).to(device), _Batches(torchvision_loader, device),
        LoopSettings(**loop, dtype=None, channels_last=False, compile=False), settings.batch_size)
    return {"img_per_s": configured, "baseline_img_per_s": baseline, "speedup": configured / baseline,
            "settings": {**asdict(settings), "device": str(device),
                         "precision_resolved": str(dtype).removeprefix("torch.") if dtype else "float32",
                         "compile_resolved": compiled, "torch_threads": torch.get_num_threads(),
                         "cpu_native_bf16": cpu_has_native_bf16()}}


def compare_precisions(archive: Path, *, model_name: str = "resnet20", iterations: int = 400, batch_size: int = 128,
                       workers: int = 2, seed: int = 0, precisions: tuple[str, ...] = ("fp32", "bf16")) -> dict:
    """Test error after the same short training (same seed, data order and augmentations: torch
    backend) in each precision, on the real CIFAR-10 (50k training images, 10k test images). The
    schedule is the paper's CIFAR one shrunk to `iterations` (lr 0.1, /10 at 1/2 and 3/4 of them), so
    that both end with a settled, not a still-jumping, test error."""
    from resnet_repro.data.torch_loader import ArrayImages, TorchLoader

    device = resolve_device("auto")
    configure_determinism(False, cudnn_benchmark=True)
    arrays = cifar10.load_archive(cifar10.fetch_archive(str(archive), Path(tempfile.gettempdir())))
    stats = image_stats(arrays.train_images)
    mean_image = mean_image_tensor(stats).to(device)
    augmentation = augmentation_for("cifar10", AugmentParams(), stats)
    results = {}
    for precision in precisions:
        dtype = autocast_dtype(precision, device)
        torch.manual_seed(seed)
        model = models.build(model_name).to(device, memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        train = TorchLoader(ArrayImages(arrays.train_images, arrays.train_labels, augmentation, train=True),
                            batch_size=batch_size, train=True, mean_image=mean_image, device=device,
                            num_workers=workers, seed=seed)
        test = TorchLoader(ArrayImages(arrays.test_images, arrays.test_labels, augmentation, train=False),
                           batch_size=500, train=False, mean_image=mean_image, device=device, num_workers=workers)
        start = time.perf_counter()
        schedule = PaperSchedule(base_lr=0.1, milestones=[iterations // 2, iterations * 3 // 4], decay=0.1)
        fit(model, optimizer, schedule, train,
            LoopSettings(iterations=iterations, log_every=50, checkpoint_every=iterations, checkpoint_seconds=math.inf,
                         eval_every=0, device=device, dtype=dtype))
        seconds = time.perf_counter() - start
        results[precision] = {"test_error": top_k_errors(model, test, device=device, dtype=dtype)["top1_error"],
                              "train_seconds": seconds}
    errors = [result["test_error"] for result in results.values()]
    return {"model": model_name, "iterations": iterations, "batch_size": batch_size, "seed": seed,
            "device": str(device), **{f"{p}_test_error": r["test_error"] for p, r in results.items()},
            **{f"{p}_train_seconds": r["train_seconds"] for p, r in results.items()},
            "max_difference": max(errors) - min(errors)}
