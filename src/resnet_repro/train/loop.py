"""The training loop: SGD steps until `iterations`, with logging, curves and resumable checkpoints.

The loss is read back from the device only every `log_every` steps, so the loop never waits on the
GPU inside a step. Everything the loop needs to continue lives in `training_state()`: weights,
optimizer, schedule, scaler, iteration (hence the position in the data order), the half-filled logging
window and every RNG state. `fit` resumes from such a state at the exact iteration it was saved at and,
in deterministic mode with a loader whose data is a function of (seed, epoch, position), ends with the
same weights, bit for bit, as a run that was never interrupted. That loader is the torch backend
(data.torch_loader). The FFCV backend resumes at the same position in the same data order, but FFCV
1.0.2 draws its augmentations from numba's per-thread generators, which cannot be seeded: the resumed
run sees other crops and flips, so it ends close to, not equal to, the uninterrupted one.

SIGTERM (what a cluster sends before it kills a job) is honoured at the next step boundary: a
checkpoint is written and TrainingInterrupted raised.

Under torchrun (resnet_repro.train.distributed) every process runs this loop on its share of each
batch, through DistributedDataParallel. The processes agree at each log step, the loop's one
synchronisation: the window's loss and error are summed over all of them (so the curves, the warm-up
and the divergence check see the global batch) together with any stop request, so that all stop at
the same iteration. Rank 0 alone measures test error, logs and saves.
"""

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from resnet_repro.device import autocast
from resnet_repro.train.checkpoint import restore_rng_states, rng_states
from resnet_repro.train.distributed import Processes
from resnet_repro.train.recipe import PaperSchedule


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the iteration."""


class TrainingInterrupted(RuntimeError):
    """A stop signal arrived; a checkpoint was saved at the iteration the message names."""

    run_status = "KILLED"  # how tracking.runs.TrainingRun ends the MLflow run: stopped, not failed


@dataclass
class LoopSettings:
    iterations: int
    log_every: int
    checkpoint_every: int
    checkpoint_seconds: float
    eval_every: int  # 0: measure test error only at the end
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None for fp32
    channels_last: bool = True
    compile: bool = False


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


class _Window:
    """Loss, mistakes, images and time since the last log row. Part of the checkpoint, so that a resumed
    run logs the same rows (and feeds the warm-up the same training error) as an uninterrupted one."""

    def __init__(self, device: torch.device, state: dict | None = None):
        self.loss = torch.zeros((), device=device)
        self.wrong = torch.zeros((), device=device, dtype=torch.long)
        self.images, self.seconds = 0, 0.0
        if state is not None:
            self.loss += state["loss"].to(device)
            self.wrong += state["wrong"].to(device)
            self.images, self.seconds = state["images"], state["seconds"]
        self.started = time.perf_counter()

    def add_other_processes(self, processes: Processes, stop_requested: bool) -> bool:
        """Sum loss, mistakes and images over all processes; True if any of them was asked to stop."""
        if not processes.distributed:
            return stop_requested
        local = [self.images, float(stop_requested)]
        totals = processes.sum(torch.cat([self.loss.double().view(1), self.wrong.double().view(1),
                                          torch.tensor(local, dtype=torch.float64, device=self.loss.device)]))
        self.loss.copy_(totals[0])
        self.wrong.copy_(totals[1].long())
        self.images = int(totals[2])
        return bool(totals[3] > 0)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss += loss.detach().float() * labels.numel()
        self.wrong += (logits.detach().argmax(dim=1) != labels).sum()
        self.images += labels.numel()

    def elapsed(self) -> float:
        return self.seconds + time.perf_counter() - self.started

    def pause(self) -> None:
        """Stop the clock (evaluation is not training throughput); `resume` restarts it."""
        self.seconds += time.perf_counter() - self.started

    def resume(self) -> None:
        self.started = time.perf_counter()

    def state_dict(self) -> dict:
        return {"loss": self.loss.cpu(), "wrong": self.wrong.cpu(), "images": self.images, "seconds": self.elapsed()}


@contextlib.contextmanager
def _stop_requests():
    """A flag set by SIGTERM, read at step boundaries. Only the main thread can own signal handlers;
    elsewhere (a test calling fit from a thread) the flag simply never gets set."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: requested.set())
    try:
        yield requested
    finally:
        signal.signal(signal.SIGTERM, previous)


def fit(model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: PaperSchedule, loader,
        settings: LoopSettings, *, resume: dict | None = None,
        save_checkpoint: Callable[[dict], None] = lambda state: None,
        log_metrics: Callable[[dict, int], None] = lambda metrics, step: None,
        measure_test_error: Callable[[], float] | None = None,
        measure_validation_error: Callable[[], float] | None = None,
        processes: Processes = Processes()) -> FitResult:
    """Train `model` to `settings.iterations`. `measure_validation_error`, if given, feeds the schedule
    (a plateau schedule) every eval_every iterations; `measure_test_error` draws the curves.

    Distributed (`processes`), every process calls this with its own loader shard; `measure_test_error`
    is rank 0's alone, `measure_validation_error` must return the same value on every rank."""
    with _stop_requests() as stop_requested:
        return _fit(model, optimizer, schedule, loader, settings, resume, save_checkpoint, log_metrics,
                    measure_test_error, measure_validation_error, stop_requested, processes)


def _fit(model, optimizer, schedule, loader, settings, resume, save_checkpoint, log_metrics, measure_test_error,
         measure_validation_error, stop_requested, processes) -> FitResult:
    device = settings.device
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    # `model` keeps its plain state_dict keys for checkpoints and export; the step runs `forward`, which
    # averages the gradients over the processes (DDP) and is compiled, if asked, around that.
    forward = model
    if processes.distributed:
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None)
    if settings.compile:
        forward = torch.compile(forward)
    scaler = torch.amp.GradScaler(device.type, enabled=settings.dtype == torch.float16)
    curves, iteration, seconds, images_trained, window = Curves(), 0, 0.0, 0, _Window(device)
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        scaler.load_state_dict(resume["scaler"])
        restore_rng_states(resume["rng"])
        curves = Curves(resume["curves"]["steps"], resume["curves"]["errors"])
        iteration, seconds, images_trained = resume["iteration"], resume["seconds"], resume["images_trained"]
        # Rank 0 saved its own window: the others start theirs empty, so the sums stay exact.
        window = _Window(device, resume["window"] if processes.is_main else None)
        if processes.is_main:
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
            "rng": rng_states(),
            "window": window.state_dict(),
            "curves": {"steps": curves.steps, "errors": curves.errors},
        }

    def checkpoint() -> None:
        # Between log rows the loss is unchecked; and a finite loss can still hide overflowed weights
        # or BN statistics. Never save either.
        if not window.loss.isfinite():
            raise TrainingDiverged(f"loss is not finite at iteration {iteration} (lr {lr:g}); "
                                   f"the last good checkpoint is kept")
        if not all(t.isfinite().all() for t in model.state_dict().values() if t.is_floating_point()):
            raise TrainingDiverged(f"weights became non-finite at iteration {iteration} (lr {lr:g}); "
                                   f"the last good checkpoint is kept")
        save_checkpoint(training_state())

    def stop() -> None:
        if processes.is_main:
            checkpoint()
        progress.close()
        raise TrainingInterrupted(f"stopped by SIGTERM at iteration {iteration} of {settings.iterations}; "
                                  f"checkpoint saved, run again to resume")

    # The position in the data order is a function of the iteration: epoch and batch within it.
    batches_per_epoch = len(loader)
    epoch, first_batch = divmod(iteration, batches_per_epoch)
    loss_value = train_error = math.nan
    test_error = None
    last_checkpoint = time.monotonic()
    model.train()
    progress = tqdm(total=settings.iterations, initial=iteration, unit="it", dynamic_ncols=True,
                    desc="train", mininterval=1.0, disable=not processes.is_main)
    while iteration < settings.iterations:
        batches_to_skip = _start_epoch(loader, epoch, first_batch)
        first_batch = 0
        for images, labels in _batches(loader, stop_requested):
            if batches_to_skip:  # a loader that cannot start mid-epoch: read past what was already seen
                batches_to_skip -= 1
                continue
            lr = schedule.lr(iteration)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = images.contiguous(memory_format=memory_format)  # a no-op when the loader made it so
            with autocast(device, settings.dtype):
                logits = forward(images)
                loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            window.add(loss, logits, labels)
            iteration += 1
            progress.update()

            is_last = iteration == settings.iterations
            wants_eval = settings.eval_every and iteration % settings.eval_every == 0
            # A single process stops at any step; processes stop together, at a step where they agree.
            must_stop = stop_requested.is_set() and not processes.distributed
            # An evaluation closes the logging window too, so that its row of the error curve has the
            # training error of the iterations since the last one, whatever log_every is.
            if iteration % settings.log_every == 0 or is_last or wants_eval:
                # The only host-device synchronisation of the loop (and exchange between processes).
                must_stop = window.add_other_processes(processes, stop_requested.is_set())
                loss_value = window.loss.item() / window.images
                train_error = window.wrong.item() / window.images
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(
                        f"loss is {loss_value} at iteration {iteration} (lr {lr:g}); "
                        f"the last good checkpoint is kept")
                elapsed = window.elapsed()
                seconds += elapsed
                images_trained += window.images
                row = {"step": iteration, "loss": loss_value, "train_error": train_error, "lr": lr,
                       "images_per_second": window.images / elapsed}
                curves.steps.append(row)
                log_metrics({k: v for k, v in row.items() if k != "step"}, iteration)
                progress.set_postfix(loss=f"{loss_value:.3f}", err=f"{train_error:.3f}", lr=f"{lr:g}",
                                     img_s=f"{row['images_per_second']:.0f}")
                if schedule.observe(iteration, train_error):
                    tqdm.write(f"Warm-up done at iteration {iteration} (training error {train_error:.3f}); "
                               f"lr back to {schedule.lr(iteration):g}")
                window = _Window(device)

            if wants_eval or is_last:
                window.pause()
                if measure_validation_error is not None and wants_eval:
                    validation_error = measure_validation_error()
                    log_metrics({"val_error": validation_error}, iteration)
                    if schedule.observe_validation(iteration, validation_error):
                        tqdm.write(f"Validation error {validation_error:.4f} has plateaued at iteration "
                                   f"{iteration}: lr down to {schedule.lr(iteration):g}")
                if measure_test_error is not None:
                    test_error = measure_test_error()
                    recent = [r["train_error"] for r in curves.steps if r["step"] > _last_step(curves.errors)]
                    curves.errors.append({"step": iteration, "train_error": sum(recent) / len(recent),
                                          "test_error": test_error})
                    log_metrics({"test_error": test_error}, iteration)
                model.train()
                window.resume()

            if processes.is_main and (iteration % settings.checkpoint_every == 0 or is_last
                                      or time.monotonic() - last_checkpoint >= settings.checkpoint_seconds):
                checkpoint()
                last_checkpoint = time.monotonic()
            if must_stop and not is_last:
                stop()
            if is_last:
                break
        if stop_requested.is_set() and iteration < settings.iterations and not processes.distributed:
            stop()  # the loader ended early: its workers got the same SIGTERM
        epoch += 1
    progress.close()
    return FitResult(curves=curves, final_loss=loss_value, final_train_error=train_error,
                     final_test_error=test_error, seconds=seconds,
                     images_per_second=images_trained / seconds if seconds else math.nan)


def _batches(loader, stop_requested: threading.Event):
    """The batches of `loader`; once a stop is requested, a failing loader just ends the epoch. A
    cluster's SIGTERM reaches the loader's worker processes too, and the state after the last complete
    step is still worth its checkpoint."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception:
            if stop_requested.is_set():
                return
            raise
        yield batch


def _start_epoch(loader, epoch: int, first_batch: int) -> int:
    """Point `loader` at batch `first_batch` of `epoch`; returns how many batches the loop must still
    skip itself (the FFCV backend can only start an epoch at its beginning)."""
    if first_batch and getattr(loader, "starts_mid_epoch", False):
        loader.set_epoch(epoch, first_batch)
        return 0
    loader.set_epoch(epoch)
    return first_batch


def _last_step(rows: list[dict]) -> int:
    return rows[-1]["step"] if rows else 0
