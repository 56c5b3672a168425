"""The precision check, `bench train --compare-precision`: does bf16 train as well as fp32?

The same short training in each precision (same seed, data order and augmentations: the torch
backend, whose augmentation of each image is a function of seed, epoch and index), then the test
error of each net on CIFAR-10's 10,000 test images.
"""

import tempfile
import time
from pathlib import Path

import torch

from resnet_repro import models
from resnet_repro.benchmarks.throughput import shortened
from resnet_repro.config import Params
from resnet_repro.data import cifar10
from resnet_repro.data.augment import augmentation_for
from resnet_repro.data.stats import image_stats, mean_image_tensor
from resnet_repro.data.torch_loader import ArrayImages, TorchLoader
from resnet_repro.device import autocast_dtype, configure_determinism, resolve_device
from resnet_repro.evaluate.accuracy import top_k_errors
from resnet_repro.train.loop import TrainingStep, fit
from resnet_repro.train.optimizer import optimizer_for
from resnet_repro.train.recipe import PaperSchedule

# What the check compares; the command line prints both errors by these names.
COMPARED = ("fp32", "bf16")


def compare_precisions(archive: Path, params: Params, *, model_name: str, iterations: int, batch_size: int,
                       workers: int) -> dict:
    """Test error after the same short training in each precision of COMPARED, on the real CIFAR-10 (50k
    training images, 10k test images), from the first seed of study.seeds. The schedule is the recipe
    of `params` shrunk to `iterations` (the paper's: lr 0.1, /10 at 1/2 and 3/4 of them; no warm-up), so
    that both end with a settled, not a still-jumping, test error."""
    # The recipe's milestones, at the same fractions of the shortened run.
    milestones = [milestone * iterations // params.train.iterations for milestone in params.train.milestones]
    if milestones != sorted(set(milestones)) or (milestones and milestones[0] < 1):
        raise ValueError(f"iterations = {iterations}: too few for the recipe's lr steps, whose milestones "
                         f"{params.train.milestones} of {params.train.iterations} iterations shrink to {milestones}")
    seed = params.study.seeds[0]
    device = resolve_device("auto")
    configure_determinism(False, cudnn_benchmark=True)
    arrays = cifar10.load_archive(cifar10.fetch_archive(str(archive), Path(tempfile.gettempdir())))
    stats = image_stats(arrays.train_images)
    mean_image = mean_image_tensor(stats).to(device)
    augmentation = augmentation_for("cifar10", params.augment, stats)
    results = {}
    for precision in COMPARED:
        train = shortened(params.train, iterations=iterations, log_every=50, batch_size=batch_size, schedule="steps",
                          milestones=milestones, warmup_max_iterations=0, linear_warmup_iterations=0,
                          precision=precision, channels_last=True, compile=False)
        torch.manual_seed(seed)
        # Module.to takes memory_format beside a device; torch's overloads of it do not say so.
        model = models.build(model_name).to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        train_loader = TorchLoader(ArrayImages(arrays.train_images, arrays.train_labels, augmentation, train=True),
                                   batch_size=batch_size, train=True, mean_image=mean_image, device=device,
                                   num_workers=workers, seed=seed)
        test_loader = TorchLoader(ArrayImages(arrays.test_images, arrays.test_labels, augmentation, train=False),
                                  batch_size=params.evaluate.batch_size, train=False, mean_image=mean_image,
                                  device=device, num_workers=workers)
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
