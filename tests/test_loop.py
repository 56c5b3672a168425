"""The training loop on a tiny deterministic problem: exact resume, divergence guard, SIGTERM and Ctrl-C,
warm-up, curves."""

import copy
import math
import os
import signal

import pytest
import torch

from projects import params_with
from resnet_repro import models
from resnet_repro.config import TrainParams, parse_params
from resnet_repro.data.loading import Loader
from resnet_repro.train.errors import TrainingDiverged, TrainingInterrupted
from resnet_repro.train.loop import Hooks, TrainingStep, fit
from resnet_repro.train.optimizer import optimizer_for
from resnet_repro.train.recipe import PaperSchedule
from resnet_repro.train.state import TrainingState, resume_or_start

CPU = torch.device("cpu")


class FixedBatches:
    """A data.loading.Loader whose epoch e is a fixed function of e."""

    def __init__(self, num_batches: int = 4, batch_size: int = 8, image_size: int = 32):
        generator = torch.Generator().manual_seed(0)
        self.batches = [(torch.randn(batch_size, 3, image_size, image_size, generator=generator),
                         torch.randint(0, 10, (batch_size,), generator=generator)) for _ in range(num_batches)]
        self.epoch = self.first_batch = 0

    @property
    def num_images(self) -> int:
        return sum(len(labels) for _, labels in self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int, first_batch: int = 0) -> None:
        self.epoch, self.first_batch = epoch, first_batch

    def __iter__(self):
        shift = self.epoch % len(self.batches)
        yield from (self.batches[shift:] + self.batches[:shift])[self.first_batch:]
        self.epoch, self.first_batch = self.epoch + 1, 0


def train_params(iterations: int, **changes) -> TrainParams:
    """A short recipe: lr 0.05, /10 at iteration 6; the warm-up (for nets of 110 layers) at 0.005 ends
    after 4 iterations, since no training error is below 1e-9."""
    train = {"iterations": iterations, "log_every": 2, "checkpoint_every": 3, "checkpoint_seconds": 3600,
             "eval_every": 0, "lr": 0.05, "milestones": [6], "lr_decay": 0.1, "warmup_min_depth": 110,
             "warmup_lr": 0.005, "warmup_until_error": 1e-9, "warmup_max_iterations": 4, "precision": "fp32",
             "channels_last": True, "compile": False, "no_weight_decay_on_bn_and_bias": False}
    return parse_params(params_with({"train": {**train, **changes}})).train


def make_run(train: TrainParams, warmup: bool = False) -> tuple[TrainingStep, PaperSchedule]:
    torch.manual_seed(0)
    model = models.build("resnet20")
    return TrainingStep(model, optimizer_for(model, train), train, CPU), PaperSchedule(train, depth=110 if warmup else 20)


def collect(checkpoints: list) -> Hooks:
    return Hooks(on_checkpoint=lambda state: checkpoints.append(copy.deepcopy(state)))


def test_fixed_batches_is_a_loader():
    assert isinstance(FixedBatches(), Loader)


def test_resumed_run_ends_bitwise_equal_to_uninterrupted_run(tmp_path, capsys):
    train = train_params(10)
    step, schedule = make_run(train)
    fit(step, schedule, FixedBatches(), train)
    uninterrupted = step.model.state_dict()

    checkpoints: list[TrainingState] = []
    fit(*make_run(train), FixedBatches(), train, hooks=collect(checkpoints))
    # Pretend the process died right after the checkpoint at iteration 6 (mid-epoch: 6 % 4 = 2).
    path = tmp_path / "checkpoint.pt"
    next(state for state in checkpoints if state.iteration == 6).save(path)
    step, schedule = make_run(train)
    state = resume_or_start(path, fingerprint="")
    result = fit(step, schedule, FixedBatches(), train, state=state)

    assert f"Resumed from checkpoint at iteration 6: {path}" in capsys.readouterr().out
    for name, tensor in uninterrupted.items():
        assert torch.equal(tensor, step.model.state_dict()[name]), name
    assert [row["step"] for row in result.curves.steps] == [2, 4, 6, 8, 10]  # the same rows as without the kill
    assert state.iteration == 10 and state.complete


def test_checkpoints_are_taken_every_n_and_at_the_end():
    checkpoints: list[TrainingState] = []
    train = train_params(7)
    fit(*make_run(train), FixedBatches(), train, hooks=collect(checkpoints))
    assert [(state.iteration, state.complete) for state in checkpoints] == [(3, False), (6, False), (7, True)]


def test_nan_loss_stops_naming_the_iteration_and_loss_and_keeps_last_good_checkpoint():
    checkpoints: list[TrainingState] = []
    train = train_params(50, lr=1e6, milestones=[])
    with pytest.raises(TrainingDiverged, match=r"^(loss is (nan|inf)|weights became non-finite) at iteration \d+ "):
        fit(*make_run(train), FixedBatches(), train, hooks=collect(checkpoints))
    for state in checkpoints:
        assert state.model is not None
        assert all(torch.isfinite(t).all() for t in state.model.values() if t.is_floating_point())
        assert all(math.isfinite(row["loss"]) for row in state.curves.steps)


def test_warmup_lr_until_the_error_condition_then_base_lr():
    logged = []
    train = train_params(8)
    fit(*make_run(train, warmup=True), FixedBatches(), train,
        hooks=Hooks(on_log=lambda metrics, step: logged.append((step, metrics["lr"]))))
    # warmup_until_error=1e-9 is never met, so warmup_max_iterations (4) ends it; then 0.05 until the
    # milestone at 6. A logged lr is the one the last step used (iteration 5 at step 6). Checkpoints
    # (every 3) add no rows: the rows do not depend on when checkpoints happen to be taken.
    assert logged == [(2, 0.005), (4, 0.005), (6, 0.05), (8, pytest.approx(0.005))]


def test_test_error_curve_is_measured_every_eval_every():
    train = train_params(6, eval_every=3, milestones=[])
    step, schedule = make_run(train)
    result = fit(step, schedule, FixedBatches(), train, hooks=Hooks(on_evaluate=lambda: {"test_error": 0.5}))
    assert [row["step"] for row in result.curves.errors] == [3, 6]
    assert all(0 <= row["train_error"] <= 1 and row["test_error"] == 0.5 for row in result.curves.errors)
    assert result.final_test_error == 0.5
    assert step.model.training


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_saves_a_checkpoint_at_the_next_step_and_stops(signal_number):
    checkpoints = []

    def on_log(metrics, step):
        if step == 4:  # a cluster sends SIGTERM (or a user presses Ctrl-C) while step 4 is being logged
            os.kill(os.getpid(), signal_number)

    train = train_params(10, checkpoint_every=100)
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(TrainingInterrupted, match=rf"^stopped by {signal_number.name} at iteration 4 of 10; "
                                                  r"checkpoint saved, run again to resume$") as stopped:
        fit(*make_run(train), FixedBatches(), train,
            hooks=Hooks(on_log=on_log, on_checkpoint=lambda state: checkpoints.append(copy.deepcopy(state))))
    assert stopped.value.signal == signal_number
    assert [(state.iteration, state.complete) for state in checkpoints] == [(4, False)]
    # The loop's handlers are gone with the loop.
    assert {number: signal.getsignal(number) for number in previous} == previous


def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint():
    checkpoints = []

    def on_log(metrics, step):
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    train = train_params(10, checkpoint_every=100)
    with pytest.raises(KeyboardInterrupt):
        fit(*make_run(train), FixedBatches(), train,
            hooks=Hooks(on_log=on_log, on_checkpoint=lambda state: checkpoints.append(state.iteration)))
    assert checkpoints == []


class WorkersKilledBySigterm(FixedBatches):
    """A loader whose worker processes get a cluster's SIGTERM as the training does: its batch number
    `dies_at` fails, after the signal has reached the training."""

    def __init__(self, dies_at: int):
        super().__init__()
        self.dies_at = dies_at

    def __iter__(self):
        for index, batch in enumerate(super().__iter__()):
            if index == self.dies_at:
                os.kill(os.getpid(), signal.SIGTERM)
                raise RuntimeError("DataLoader worker (pid 1234) is killed by signal: Terminated")
            yield batch


@pytest.mark.parametrize("dies_at", [0, 2])
def test_a_loader_failing_after_sigterm_still_leaves_the_checkpoint_of_the_last_step(dies_at):
    checkpoints = []
    train = train_params(10, checkpoint_every=100)
    with pytest.raises(TrainingInterrupted, match=rf"^stopped by SIGTERM at iteration {dies_at} of 10; "):
        fit(*make_run(train), WorkersKilledBySigterm(dies_at), train,
            hooks=Hooks(on_checkpoint=lambda state: checkpoints.append((state.iteration, state.complete))))
    assert checkpoints == [(dies_at, False)]
