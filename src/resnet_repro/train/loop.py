"""The training loop: SGD steps until `iterations`, with logging, curves and resumable checkpoints.

The loss is read back from the device only every `log_every` steps, so the loop never waits on the
GPU inside a step. Everything the loop needs to continue lives in `training_state()`; `fit` resumes
from such a state at the exact iteration it was saved at.
"""

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from resnet_repro.train.device import autocast
from resnet_repro.train.recipe import PaperSchedule


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the iteration."""


@dataclass
class LoopSettings:
    iterations: int
    log_every: int
    checkpoint_every: int
    checkpoint_seconds: float
    eval_every: int  # 0: measure test error only at the end
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None for fp32


@dataclass
class Curves:
    """Per-log-step loss, error and lr, and per-evaluation train/test error (the DVC plots)."""

    steps: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)


@dataclass
class FitResult:
    curves: Curves
    final_loss: float
    final_train_error: float
    final_test_error: float | None
    seconds: float
    images_per_second: float


def fit(model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: PaperSchedule, loader,
        settings: LoopSettings, *, resume: dict | None = None,
        save_checkpoint: Callable[[dict], None] = lambda state: None,
        log_metrics: Callable[[dict, int], None] = lambda metrics, step: None,
        measure_test_error: Callable[[], float] | None = None) -> FitResult:
    device = settings.device
    scaler = torch.amp.GradScaler(device.type, enabled=settings.dtype == torch.float16)
    curves, iteration, seconds, images_trained = Curves(), 0, 0.0, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        scaler.load_state_dict(resume["scaler"])
        torch.set_rng_state(resume["rng"]["torch"])
        curves = Curves(resume["curves"]["steps"], resume["curves"]["errors"])
        iteration, seconds, images_trained = resume["iteration"], resume["seconds"], resume["images_trained"]
        print(f"Resumed from checkpoint at iteration {iteration} of {settings.iterations}", flush=True)

    def training_state() -> dict:
        return {
            "iteration": iteration,
            "seconds": seconds,
            "images_trained": images_trained,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "curves": {"steps": curves.steps, "errors": curves.errors},
        }

    batches_per_epoch = len(loader)
    epoch, batches_to_skip = divmod(iteration, batches_per_epoch)
    window_loss = torch.zeros((), device=device)
    window_wrong = torch.zeros((), device=device, dtype=torch.long)
    window_images, window_start = 0, time.perf_counter()
    loss_value = train_error = math.nan
    test_error = None
    last_checkpoint = time.monotonic()
    model.train()
    progress = tqdm(total=settings.iterations, initial=iteration, unit="it", dynamic_ncols=True,
                    desc="train", mininterval=1.0)
    while iteration < settings.iterations:
        loader.set_epoch(epoch)
        for images, labels in loader:
            if batches_to_skip:  # resuming mid-epoch: this epoch's first batches were already seen
                batches_to_skip -= 1
                continue
            lr = schedule.lr(iteration)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(device, settings.dtype):
                logits = model(images)
                loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            window_loss += loss.detach().float() * labels.numel()
            window_wrong += (logits.detach().argmax(dim=1) != labels).sum()
            window_images += labels.numel()
            iteration += 1
            progress.update()

            is_last = iteration == settings.iterations
            wants_checkpoint = (iteration % settings.checkpoint_every == 0 or is_last
                                or time.monotonic() - last_checkpoint >= settings.checkpoint_seconds)
            if iteration % settings.log_every == 0 or wants_checkpoint:
                # The only host-device synchronisation of the loop.
                loss_value = window_loss.item() / window_images
                train_error = window_wrong.item() / window_images
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(
                        f"loss is {loss_value} at iteration {iteration} (lr {lr:g}); "
                        f"the last good checkpoint is kept")
                elapsed = time.perf_counter() - window_start
                seconds += elapsed
                images_trained += window_images
                row = {"step": iteration, "loss": loss_value, "train_error": train_error, "lr": lr,
                       "images_per_second": window_images / elapsed}
                curves.steps.append(row)
                log_metrics({k: v for k, v in row.items() if k != "step"}, iteration)
                progress.set_postfix(loss=f"{loss_value:.3f}", err=f"{train_error:.3f}", lr=f"{lr:g}",
                                     img_s=f"{row['images_per_second']:.0f}")
                if schedule.observe(iteration, train_error):
                    tqdm.write(f"Warm-up done at iteration {iteration} (training error {train_error:.3f}); "
                               f"lr back to {schedule.lr(iteration):g}")
                window_loss.zero_()
                window_wrong.zero_()
                window_images, window_start = 0, time.perf_counter()

            wants_eval = settings.eval_every and iteration % settings.eval_every == 0
            if measure_test_error is not None and (wants_eval or is_last):
                test_error = measure_test_error()
                model.train()
                recent = [r["train_error"] for r in curves.steps if r["step"] > _last_step(curves.errors)]
                errors_row = {"step": iteration, "train_error": sum(recent) / len(recent), "test_error": test_error}
                curves.errors.append(errors_row)
                log_metrics({"test_error": test_error}, iteration)
                window_start = time.perf_counter()  # evaluation time is not training throughput

            if wants_checkpoint:
                # A finite loss can still hide overflowed weights or BN statistics: never save those.
                if not all(t.isfinite().all() for t in model.state_dict().values() if t.is_floating_point()):
                    raise TrainingDiverged(f"weights became non-finite at iteration {iteration} (lr {lr:g}); "
                                           f"the last good checkpoint is kept")
                save_checkpoint(training_state())
                last_checkpoint = time.monotonic()
            if is_last:
                break
        epoch += 1
    progress.close()
    return FitResult(curves=curves, final_loss=loss_value, final_train_error=train_error,
                     final_test_error=test_error, seconds=seconds,
                     images_per_second=images_trained / seconds if seconds else math.nan)


def _last_step(rows: list[dict]) -> int:
    return rows[-1]["step"] if rows else 0
