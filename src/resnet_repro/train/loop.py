"""The training loop: SGD steps until train.iterations, with logging, evaluations and checkpoints.

    state = resume_or_start(path, fingerprint(...))
    step = TrainingStep(model, optimizer_for(model, train), train, device)
    result = fit(step, PaperSchedule(train, depth), loader, train,
                 hooks=Hooks(on_log=run.log_metrics, on_checkpoint=lambda state: state.save(path)), state=state)

Each step runs in `TrainingStep` (train.step) and leaves its loss on the device; the loop reads the loss back every
train.log_every steps only, so it never waits on the GPU inside a step. Where the training stands lives
in a `TrainingState` (train.state), which the loop keeps up to date and hands to `on_checkpoint`. `fit`
continues such a state at the iteration it was saved at (the loader starts mid-epoch itself) and, in
deterministic mode with a loader whose data is a function of (seed, epoch, position), ends with the
same weights, bit for bit, as a run that was never interrupted. That loader is the torch backend
(data.torch_loader). The FFCV backend resumes at the same position in the same data order, but FFCV
1.0.2 draws its augmentations from numba's per-thread generators, which cannot be seeded: the resumed
run sees other crops and flips, so it ends close to, not equal to, the uninterrupted one.

SIGTERM (what a cluster sends before it kills a job) and Ctrl-C are honoured at the next step boundary:
a checkpoint is written and TrainingInterrupted raised. A second Ctrl-C stops at once. A NaN or
infinite loss raises TrainingDiverged, and no checkpoint of the diverged state is written.

Under torchrun (train.distributed) every process runs this loop on its share of each batch, through
DistributedDataParallel. The processes agree at each log step, the loop's one synchronisation: the
window's loss and error are summed over all of them (so the curves, the warm-up and the divergence
check see the global batch) together with any stop request, so that all stop at the same iteration.
Rank 0 alone logs and saves.
"""

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from tqdm import tqdm

from resnet_repro.config import TrainParams
from resnet_repro.data.loading import Loader
from resnet_repro.train.distributed import Processes
from resnet_repro.train.errors import TrainingDiverged, TrainingInterrupted
from resnet_repro.train.recipe import PaperSchedule
from resnet_repro.train.state import Curves, TrainingState, code_version
from resnet_repro.train.step import TrainingStep

def _ignore(*arguments) -> None:
    pass


@dataclass(frozen=True)
class Hooks:
    """What the loop tells its caller; each is optional.

    on_log(metrics, iteration): a log row (loss, train_error, lr, images_per_second), or an evaluation's errors.
    on_evaluate(): held-out errors, every train.eval_every iterations and at the end, e.g.
        {"test_error": 0.31, "val_error": 0.30}: test_error draws the error curve, val_error feeds a
        plateau schedule. Distributed, every process calls it, and val_error must be the same on all.
    on_checkpoint(state): the state to save, every train.checkpoint_every iterations or
        train.checkpoint_seconds, at the end and when stopped; rank 0 only.
    """

    on_log: Callable[[dict, int], None] = _ignore
    on_evaluate: Callable[[], dict[str, float]] | None = None
    on_checkpoint: Callable[[TrainingState], None] = _ignore


@dataclass
class FitResult:
    curves: Curves
    final_loss: float
    final_train_error: float
    final_test_error: float | None
    seconds: float  # of training, evaluations excluded
    images_per_second: float


def fit(step: TrainingStep, schedule: PaperSchedule, loader: Loader, train: TrainParams, *,
        hooks: Hooks = Hooks(), state: TrainingState | None = None) -> FitResult:
    """Train `step.model` to train.iterations, from `state` if it holds a started training (which it
    then keeps up to date), else from the start. Distributed (`step.processes`), every process calls
    this with its own shard of the loader."""
    state = state if state is not None else TrainingState(fingerprint="", code=code_version())
    if state.started:
        state.restore(step.model, step.optimizer, schedule, step.scaler)
    processes = step.processes
    # Rank 0 saved its own window: the others start theirs empty, so the sums over processes stay exact.
    window = _Window(step.device, state.window if processes.is_main else None)
    lr, last_checkpoint = math.nan, time.monotonic()  # lr: the last step's, which error messages name
    step.model.train()
    with _stop_requests() as stop, _progress_bar(train, state, processes) as progress:
        for images, labels in _batches(loader, state.iteration, stop, processes):
            lr = schedule.lr(state.iteration)
            window.add(*step(images, labels, lr), labels)
            state.iteration += 1
            progress.update()

            done = state.iteration == train.iterations
            evaluating = done or _every(train.eval_every, state.iteration)
            # A single process stops at any step; processes stop together, at a step where they agree.
            stopping = stop.requested and not processes.distributed
            # An evaluation closes the logging window too, so that its row of the error curve has the
            # training error of the iterations since the last one, whatever log_every is.
            if evaluating or _every(train.log_every, state.iteration):
                stopping = window.add_other_processes(processes, stop.requested)
                row = _close_window(window, state, lr)
                hooks.on_log({key: value for key, value in row.items() if key != "step"}, state.iteration)
                progress.set_postfix(loss=f"{row['loss']:.3f}", err=f"{row['train_error']:.3f}", lr=f"{lr:g}",
                                     img_s=f"{row['images_per_second']:.0f}")
                _observe_training_error(schedule, state.iteration, row["train_error"])
                if evaluating and hooks.on_evaluate is not None:
                    _evaluate(hooks, schedule, state)
                    step.model.train()
                window = _Window(step.device)  # its clock starts after the evaluation: that is not training

            if processes.is_main and (stopping or done or _every(train.checkpoint_every, state.iteration)
                                      or time.monotonic() - last_checkpoint >= train.checkpoint_seconds):
                _checkpoint(step, schedule, window, state, lr, hooks, complete=done)
                last_checkpoint = time.monotonic()
            if stopping and not done:
                raise TrainingInterrupted(stop.signal or signal.SIGTERM, state.iteration, train.iterations)
            if done:
                break
        if state.iteration < train.iterations:  # the loader stopped early: its workers got the signal too
            if processes.is_main:
                _checkpoint(step, schedule, window, state, lr, hooks, complete=False)
            raise TrainingInterrupted(stop.signal, state.iteration, train.iterations)
    return _result(state)


def _every(interval: int, iteration: int) -> bool:
    """Whether `iteration` ends a period of `interval` iterations (an interval of 0: never)."""
    return bool(interval) and iteration % interval == 0


def _progress_bar(train: TrainParams, state: TrainingState, processes: Processes) -> tqdm:
    return tqdm(total=train.iterations, initial=state.iteration, unit="it", dynamic_ncols=True, desc="train",
                mininterval=1.0, disable=not processes.is_main)


def _batches(loader: Loader, iteration: int, stop: "_StopRequest", processes: Processes) -> Iterator:
    """The batches of `loader` from the position of `iteration` on, epoch after epoch: that position
    is a function of the iteration (epoch, and batch within it). Once a stop is requested, a failing
    loader just ends its epoch, and a single process's batches end with it: a cluster's SIGTERM reaches
    the loader's worker processes too, and the state after the last complete step is still worth its
    checkpoint. (Distributed processes go on to the step where they agree to stop.)"""
    epoch, first_batch = divmod(iteration, len(loader))
    while True:
        loader.set_epoch(epoch, first_batch)
        batches = iter(loader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except Exception:
                if stop.requested:
                    break
                raise
            yield batch
        if stop.requested and not processes.distributed:
            return
        epoch, first_batch = epoch + 1, 0


def _close_window(window: "_Window", state: TrainingState, lr: float) -> dict:
    """The window as a row of the curve, added to `state` with its time and images; the loop's one
    host-device synchronisation. A loss that is not finite ends the training."""
    loss, train_error = window.loss.item() / window.images, window.wrong.item() / window.images
    if not math.isfinite(loss):
        raise _diverged(f"loss is {loss}", state.iteration, lr)
    seconds = window.elapsed()
    state.seconds += seconds
    state.images_trained += window.images
    row = {"step": state.iteration, "loss": loss, "train_error": train_error, "lr": lr,
           "images_per_second": window.images / seconds}
    state.curves.steps.append(row)
    return row


def _observe_training_error(schedule: PaperSchedule, iteration: int, train_error: float) -> None:
    """Feed the warm-up (Section 4.2: until the training error is below a threshold) and say when it ends."""
    if schedule.observe(iteration, train_error):
        tqdm.write(f"Warm-up done at iteration {iteration} (training error {train_error:.3f}); "
                   f"lr back to {schedule.lr(iteration):g}")


def _evaluate(hooks: Hooks, schedule: PaperSchedule, state: TrainingState) -> None:
    """Measure the held-out errors: log them, feed val_error to a plateau schedule, and add test_error
    to the error curve beside the training error since the last evaluation."""
    assert hooks.on_evaluate is not None  # fit calls this only where there is one
    errors = hooks.on_evaluate()
    hooks.on_log(errors, state.iteration)
    if "val_error" in errors and schedule.observe_validation(state.iteration, errors["val_error"]):
        tqdm.write(f"Validation error {errors['val_error']:.4f} has plateaued at iteration "
                   f"{state.iteration}: lr down to {schedule.lr(state.iteration):g}")
    if "test_error" in errors:
        since = state.curves.errors[-1]["step"] if state.curves.errors else 0
        recent = [row["train_error"] for row in state.curves.steps if row["step"] > since]
        state.curves.errors.append({"step": state.iteration, "test_error": errors["test_error"],
                                    "train_error": sum(recent) / len(recent)})


def _checkpoint(step: TrainingStep, schedule: PaperSchedule, window: "_Window", state: TrainingState, lr: float,
                hooks: Hooks, *, complete: bool) -> None:
    """Capture the training into `state` and hand it to on_checkpoint; never a diverged one. Between
    log rows the loss is unchecked, and a finite loss can still hide overflowed weights or BN statistics."""
    if not window.loss.isfinite():
        raise _diverged(f"loss is {window.loss.item() / window.images}", state.iteration, lr)
    if not all(t.isfinite().all() for t in step.model.state_dict().values() if t.is_floating_point()):
        raise _diverged("weights became non-finite", state.iteration, lr)
    state.window, state.complete = window.state_dict(), complete
    state.capture(step.model, step.optimizer, schedule, step.scaler)
    hooks.on_checkpoint(state)


def _diverged(what: str, iteration: int, lr: float) -> TrainingDiverged:
    return TrainingDiverged(f"{what} at iteration {iteration} (lr {lr:g}); the last good checkpoint is kept")


def _result(state: TrainingState) -> FitResult:
    """The last row of each curve, and the training's speed."""
    last = state.curves.steps[-1] if state.curves.steps else {}
    return FitResult(curves=state.curves, final_loss=last.get("loss", math.nan),
                     final_train_error=last.get("train_error", math.nan),
                     final_test_error=state.curves.errors[-1]["test_error"] if state.curves.errors else None,
                     seconds=state.seconds,
                     images_per_second=state.images_trained / state.seconds if state.seconds else math.nan)


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

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss += loss.float() * labels.numel()
        self.wrong += (logits.argmax(dim=1) != labels).sum()
        self.images += labels.numel()

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

    def elapsed(self) -> float:
        return self.seconds + time.perf_counter() - self.started

    def state_dict(self) -> dict:
        return {"loss": self.loss.cpu(), "wrong": self.wrong.cpu(), "images": self.images, "seconds": self.elapsed()}


class _StopRequest:
    """Set by SIGTERM or Ctrl-C (SIGINT), read at step boundaries. A second Ctrl-C does not wait:
    KeyboardInterrupt, as without the loop."""

    def __init__(self):
        self.signal: signal.Signals | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def set(self, signum: int, frame) -> None:
        if signum == signal.SIGINT and self.signal == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum)


@contextlib.contextmanager
def _stop_requests():
    """A stop request for the duration of the loop. Only the main thread can own signal handlers;
    elsewhere (a test calling fit from a thread) no stop is ever requested."""
    request = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {number: signal.signal(number, request.set) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


