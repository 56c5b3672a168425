"""The paper's CIFAR learning-rate schedule, including the warm-up of the deepest nets."""

from resnet_repro.config import load_params
from resnet_repro.train.recipe import PaperSchedule, cifar_schedule

from test_config import PROJECT_PARAMS


def test_step_schedule_divides_by_ten_at_milestones():
    schedule = PaperSchedule(base_lr=0.1, milestones=[32_000, 48_000], decay=0.1)
    assert schedule.lr(0) == 0.1
    assert schedule.lr(31_999) == 0.1
    assert abs(schedule.lr(32_000) - 0.01) < 1e-12
    assert abs(schedule.lr(48_000) - 0.001) < 1e-12


def test_warmup_only_for_110_and_deeper_and_ends_below_80_percent_error():
    train = load_params(PROJECT_PARAMS).train
    assert not cifar_schedule(train, 56).warming_up
    schedule = cifar_schedule(train, 110)
    assert schedule.warming_up and schedule.lr(0) == 0.01
    assert not schedule.observe(100, train_error=0.85)
    assert schedule.lr(101) == 0.01
    assert schedule.observe(200, train_error=0.79)
    assert schedule.lr(201) == 0.1


def test_warmup_state_survives_a_checkpoint():
    train = load_params(PROJECT_PARAMS).train
    schedule = cifar_schedule(train, 1202)
    schedule.observe(400, train_error=0.5)
    restored = cifar_schedule(train, 1202)
    restored.load_state_dict(schedule.state_dict())
    assert not restored.warming_up and restored.lr(401) == 0.1
