"""The training loop on a tiny deterministic problem: exact resume, divergence guard, SIGTERM, warm-up, curves."""

import copy
import math
import os
import signal

import pytest
import torch

from resnet_repro import models
from resnet_repro.train.loop import LoopSettings, TrainingDiverged, TrainingInterrupted, fit
from resnet_repro.train.recipe import PaperSchedule


class FixedBatches:
    """A loader with the interface of the data loaders (data.loading) whose epoch e is a fixed function of e."""

    def __init__(self, num_batches: int = 4, batch_size: int = 8):
        generator = torch.Generator().manual_seed(0)
        self.batches = [(torch.randn(batch_size, 3, 32, 32, generator=generator),
                         torch.randint(0, 10, (batch_size,), generator=generator)) for _ in range(num_batches)]
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        shift = self.epoch % len(self.batches)
        yield from self.batches[shift:] + self.batches[:shift]
        self.epoch += 1


def make_run(lr: float = 0.05, warmup: bool = False):
    torch.manual_seed(0)
    model = models.build("resnet20")
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    schedule = PaperSchedule(base_lr=lr, milestones=[6], decay=0.1, warmup_lr=lr / 10 if warmup else None,
                             warmup_until_error=0.0, warmup_max_iterations=4)
    return model, optimizer, schedule


def settings(iterations: int, **overrides) -> LoopSettings:
    values = dict(iterations=iterations, log_every=2, checkpoint_every=3, checkpoint_seconds=3600, eval_every=0,
                  device=torch.device("cpu"), dtype=None)
    return LoopSettings(**{**values, **overrides})


def test_resumed_run_ends_bitwise_equal_to_uninterrupted_run(capsys):
    model, optimizer, schedule = make_run()
    fit(model, optimizer, schedule, FixedBatches(), settings(10))
    uninterrupted = model.state_dict()

    checkpoints = []
    model, optimizer, schedule = make_run()
    fit(model, optimizer, schedule, FixedBatches(), settings(10), save_checkpoint=lambda state: checkpoints.append(copy.deepcopy(state)))
    # Pretend the process died right after the checkpoint at iteration 6 (mid-epoch: 6 % 4 = 2).
    saved = next(state for state in checkpoints if state["iteration"] == 6)
    model, optimizer, schedule = make_run()
    result = fit(model, optimizer, schedule, FixedBatches(), settings(10), resume=saved)

    assert "Resumed from checkpoint at iteration 6" in capsys.readouterr().out
    for name, tensor in uninterrupted.items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    assert [row["step"] for row in result.curves.steps] == [2, 4, 6, 8, 10]  # the same rows as without the kill


def test_checkpoints_are_taken_every_n_and_at_the_end():
    checkpoints = []
    model, optimizer, schedule = make_run()
    fit(model, optimizer, schedule, FixedBatches(), settings(7), save_checkpoint=lambda state: checkpoints.append(copy.deepcopy(state)))
    assert [state["iteration"] for state in checkpoints] == [3, 6, 7]


def test_nan_loss_stops_with_the_iteration_and_keeps_last_good_checkpoint():
    checkpoints = []
    model, optimizer, schedule = make_run(lr=1e6)
    with pytest.raises(TrainingDiverged, match=r"at iteration \d+"):
        fit(model, optimizer, schedule, FixedBatches(), settings(50), save_checkpoint=lambda state: checkpoints.append(copy.deepcopy(state)))
    for state in checkpoints:
        assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
        assert all(math.isfinite(row["loss"]) for row in state["curves"]["steps"])


def test_warmup_lr_until_the_error_condition_then_base_lr():
    logged = []
    model, optimizer, schedule = make_run(warmup=True)
    fit(model, optimizer, schedule, FixedBatches(), settings(8),
        log_metrics=lambda metrics, step: logged.append((step, metrics["lr"])))
    # warmup_until_error=0 is never met, so warmup_max_iterations (4) ends it; then 0.05 until the
    # milestone at 6. A logged lr is the one the last step used (iteration 5 at step 6). Checkpoints
    # (every 3) add no rows: the rows do not depend on when checkpoints happen to be taken.
    assert logged == [(2, 0.005), (4, 0.005), (6, 0.05), (8, pytest.approx(0.005))]


def test_test_error_curve_is_measured_every_eval_every():
    model, optimizer, schedule = make_run()
    result = fit(model, optimizer, schedule, FixedBatches(), settings(6, eval_every=3),
                 measure_test_error=lambda: 0.5)
    assert [row["step"] for row in result.curves.errors] == [3, 6]
    assert all(0 <= row["train_error"] <= 1 and row["test_error"] == 0.5 for row in result.curves.errors)
    assert model.training


def test_sigterm_saves_a_checkpoint_at_the_next_step_and_stops():
    checkpoints = []

    def log_metrics(metrics, step):
        if step == 4:  # a cluster sends SIGTERM while step 4 is being logged
            os.kill(os.getpid(), signal.SIGTERM)

    model, optimizer, schedule = make_run()
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match=r"^stopped by SIGTERM at iteration 4 of 10; checkpoint saved"):
        fit(model, optimizer, schedule, FixedBatches(), settings(10, checkpoint_every=100), log_metrics=log_metrics,
            save_checkpoint=lambda state: checkpoints.append(copy.deepcopy(state)))
    assert [state["iteration"] for state in checkpoints] == [4]
    assert signal.getsignal(signal.SIGTERM) is previous  # the loop's handler is gone with the loop
