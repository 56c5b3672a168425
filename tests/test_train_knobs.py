"""The train section's knobs against each other: every combination params.yaml accepts trains to the end.

A valid params.yaml must never crash mid-run (an image-folder training with eval_every 10 and
log_every 20 once died at iteration 10 dividing by zero), and an impossible one is refused before any
work with one line naming the keys.
"""

import itertools
import math

import pytest
import torch
from test_loop import FixedBatches

from projects import params_with
from resnet_repro.config import ConfigError, parse_params
from resnet_repro.train.loop import Hooks, TrainingStep, fit
from resnet_repro.train.recipe import PaperSchedule


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10))


# The speed paths stay off: a tiny net on a CPU, where bf16 autocast would only add conversions.
FP32_NCHW = {"precision": "fp32", "channels_last": False, "compile": False, "checkpoint_seconds": 3600}
ITERATIONS = [1, 7, 20]
EVERY = [1, 3, 10, 50]  # log_every and eval_every (also 0) take these, below, at and beyond the run's length


def combinations():
    """log_every and eval_every crossed (below, at and beyond the run's length); checkpoint_every takes
    each value in turn; milestones and warm-up inside, at and beyond the end."""
    crossed = itertools.product(ITERATIONS, EVERY, [0, *EVERY], [None, 0.5, 1.0], [0, 2.0])
    for index, (iterations, log_every, eval_every, milestone_at, warmup) in enumerate(crossed):
        milestones = [] if milestone_at is None else [max(1, int(iterations * milestone_at))]
        yield {"iterations": iterations, "log_every": log_every, "eval_every": eval_every,
               "checkpoint_every": EVERY[index % len(EVERY)], "milestones": milestones,
               "linear_warmup_iterations": int(iterations * warmup)}


def test_every_accepted_combination_trains_to_the_end_and_every_refused_one_says_why():
    accepted = refused = 0
    for train in combinations():
        try:
            params = parse_params(params_with({"train": {**train, **FP32_NCHW}}), "params.yaml")
        except ConfigError as error:
            refused += 1
            message = str(error)
            assert "\n" not in message and message.startswith("params.yaml: train."), message
            assert any(key in message for key in ("milestones", "linear_warmup_iterations")), message
            continue
        accepted += 1
        model = tiny_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=params.train.lr, momentum=0.9)
        checkpoints = []
        # Depth 110 also takes the paper's constant warm-up at 0.01 (Section 4.2).
        schedule = PaperSchedule(params.train, 110 if accepted % 2 else 20)
        step = TrainingStep(model, optimizer, params.train, torch.device("cpu"))
        result = fit(step, schedule, FixedBatches(batch_size=4), params.train,
                     hooks=Hooks(on_checkpoint=lambda state: checkpoints.append(state.iteration),
                                 on_evaluate=lambda: {"test_error": 0.5}))
        assert checkpoints[-1] == train["iterations"], train
        assert result.curves.steps[-1]["step"] == train["iterations"], train
        errors = result.curves.errors
        assert errors and errors[-1]["step"] == train["iterations"], train
        assert all(math.isfinite(row["train_error"]) for row in errors), (train, errors)
        expected_evaluations = {step for step in range(1, train["iterations"] + 1)
                                if train["eval_every"] and step % train["eval_every"] == 0} | {train["iterations"]}
        assert [row["step"] for row in errors] == sorted(expected_evaluations), train
    # Both kinds occur: the sweep crosses the boundaries the validation draws.
    assert accepted > 50 and refused > 50


@pytest.mark.parametrize("train, message", [
    ({"iterations": 300, "milestones": [150, 300]},
     "params.yaml: train.milestones = [150, 300]: [300] not below train.iterations = 300"),
    ({"iterations": 300, "milestones": [150], "linear_warmup_iterations": 301},
     "params.yaml: train.linear_warmup_iterations = 301: longer than train.iterations = 300"),
])
def test_impossible_combinations_are_refused_naming_both_keys(train, message):
    with pytest.raises(ConfigError) as error:
        parse_params(params_with({"train": train}), "params.yaml")
    assert str(error.value) == message + (" (the lr would never drop there)" if "milestones =" in message else "")
