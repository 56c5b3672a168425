"""The paper's recipes (CIFAR and ImageNet) as data, and the learning-rate schedules they drive."""

import copy
import math

import pytest
import torch
import yaml
from test_config import PROJECT_PARAMS
from test_loop import FixedBatches, make_run, train_params

from resnet_repro.config import ConfigError, load_params, parse_params
from resnet_repro.train.loop import Hooks, fit
from resnet_repro.train.recipe import RECIPES, PaperSchedule, recipe_settings
from resnet_repro.train.state import resume_or_start


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(PROJECT_PARAMS.read_text())


def with_train(raw: dict, **train) -> dict:
    changed = copy.deepcopy(raw)
    changed["train"].update(train)
    return changed


def test_step_schedule_divides_by_ten_at_milestones():
    schedule = PaperSchedule(load_params(PROJECT_PARAMS).train, depth=56)
    assert schedule.lr(0) == 0.1
    assert schedule.lr(31_999) == 0.1
    assert abs(schedule.lr(32_000) - 0.01) < 1e-12
    assert abs(schedule.lr(48_000) - 0.001) < 1e-12


def test_warmup_only_for_110_and_deeper_and_ends_below_80_percent_error():
    train = load_params(PROJECT_PARAMS).train
    assert not PaperSchedule(train, 56).warming_up
    schedule = PaperSchedule(train, 110)
    assert schedule.warming_up and schedule.lr(0) == 0.01
    assert not schedule.observe(100, train_error=0.85)
    assert schedule.lr(101) == 0.01
    assert schedule.observe(200, train_error=0.79)
    assert schedule.lr(201) == 0.1


def test_linear_warmup_ramps_every_net_up_to_the_lr_then_follows_the_milestones(raw):
    train = parse_params(with_train(raw, linear_warmup_iterations=100, milestones=[300, 400])).train
    for depth in (20, 56):
        schedule = PaperSchedule(train, depth)
        assert not schedule.warming_up  # the paper's constant warm-up stays for 110 layers and more
        assert [schedule.lr(i) for i in (0, 49, 99)] == pytest.approx([0.001, 0.05, 0.1])
        assert [schedule.lr(i) for i in (100, 299, 300, 400)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert PaperSchedule(parse_params(raw).train, 56).lr(0) == 0.1  # default: none, as in the paper


def test_warmup_state_survives_a_checkpoint():
    train = load_params(PROJECT_PARAMS).train
    schedule = PaperSchedule(train, 1202)
    schedule.observe(400, train_error=0.5)
    restored = PaperSchedule(train, 1202)
    restored.load_state_dict(schedule.state_dict())
    assert not restored.warming_up and restored.lr(401) == 0.1


def test_the_project_trains_with_the_papers_cifar_recipe_written_out(raw):
    # params.yaml writes every value of the recipe: DVC sees them, and `-S train.<key>` can change them.
    assert {key: raw["train"][key] for key in RECIPES["cifar"]} == RECIPES["cifar"]
    train = parse_params(raw).train
    assert (train.iterations, train.batch_size, train.lr, train.momentum, train.weight_decay) == \
        (64_000, 128, 0.1, 0.9, 1e-4)
    assert (train.schedule, train.milestones, train.lr_decay, train.warmup_min_depth) == \
        ("steps", [32_000, 48_000], 0.1, 110)


def test_selecting_the_imagenet_recipe_writes_its_values_and_keeps_the_rest(tmp_path):
    from resnet_repro.cli import main

    params_file = tmp_path / "params.yaml"
    params_file.write_text(PROJECT_PARAMS.read_text())
    assert main(["recipe", "select", "imagenet", "--params", str(params_file)]) == 0
    text = params_file.read_text()
    assert "# The paper's CIFAR-10 recipe (Section 4.2)" in text  # comments kept
    train = load_params(params_file).train
    assert (train.iterations, train.batch_size, train.lr, train.momentum, train.weight_decay) == \
        (600_000, 256, 0.1, 0.9, 1e-4)
    assert (train.schedule, train.milestones, train.warmup_max_iterations) == ("plateau", [], 0)
    assert (train.precision, train.log_every) == ("auto", 20)  # not the recipe's: as they were
    schedule = PaperSchedule(train, 152)
    assert not schedule.warming_up and schedule.lr(0) == 0.1
    assert main(["recipe", "select", "cifar", "--params", str(params_file)]) == 0
    assert load_params(params_file).train == load_params(PROJECT_PARAMS).train


def test_selecting_a_recipe_leaves_a_broken_params_file_untouched(tmp_path):
    from resnet_repro.cli import main

    params_file = tmp_path / "params.yaml"
    broken = PROJECT_PARAMS.read_text().replace("  lr: 0.1\n", "  lr: [0.1\n")
    params_file.write_text(broken)
    assert main(["recipe", "select", "imagenet", "--params", str(params_file)]) == 2
    assert params_file.read_text() == broken


@pytest.mark.parametrize("train, message", [
    ({"recipe": "cifar"}, "params.yaml: train.recipe: unknown key"),
    ({"schedule": "plateau", "eval_every": 0}, "params.yaml: train.eval_every = 0: the plateau schedule needs"),
    ({"schedule": "linear"}, "params.yaml: train.schedule = 'linear': "),
    ({"schedule": "cosine"}, "params.yaml: train.milestones = [32000, 48000]: the cosine schedule lowers the lr "
                             "every iteration and has no milestones; set train.milestones to []"),
    ({"plateau_patience": 0}, "params.yaml: train.plateau_patience = 0: "),
    ({"iterations": 40_000}, "params.yaml: train.milestones = [32000, 48000]: [48000] not below train.iterations = 40000"),
    ({"iterations": 300, "milestones": [150], "linear_warmup_iterations": 400},
     "params.yaml: train.linear_warmup_iterations = 400: longer than train.iterations = 300"),
])
def test_bad_recipe_keys_get_one_line_naming_the_key(raw, train, message):
    with pytest.raises(ConfigError) as error:
        parse_params(with_train(raw, **train), "params.yaml")
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_key_missing_from_params_yaml_is_an_error_not_a_hidden_default(raw):
    del raw["train"]["milestones"]
    with pytest.raises(ConfigError, match=r"^params.yaml: train.milestones: required key is missing$"):
        parse_params(raw, "params.yaml")


def test_plateau_divides_by_ten_after_patience_measurements_without_improvement(raw):
    train = parse_params(with_train(raw, schedule="plateau", milestones=[], plateau_patience=2,
                                    plateau_threshold=0.01)).train
    schedule = PaperSchedule(train, depth=56)
    assert not schedule.observe_validation(1000, 0.60)
    assert not schedule.observe_validation(2000, 0.50)   # improved
    assert not schedule.observe_validation(3000, 0.495)  # by less than the threshold: 1 without improvement
    restored = PaperSchedule(train, depth=56)
    restored.load_state_dict(schedule.state_dict())  # the plateau count is part of the checkpoint
    assert restored.observe_validation(4000, 0.50)       # 2 without improvement: the plateau
    assert math.isclose(restored.lr(4000), 0.01)
    assert not restored.observe_validation(5000, 0.45)
    assert not restored.observe_validation(6000, 0.45)
    assert restored.observe_validation(7000, 0.45)
    assert math.isclose(restored.lr(7000), 0.001)
    # A step schedule ignores the validation error.
    steps = PaperSchedule(parse_params(raw).train, depth=56)
    assert not any(steps.observe_validation(i, 0.5) for i in range(10))


def test_the_loop_feeds_the_validation_error_to_the_schedule_every_eval_every_and_resumes_it():
    errors = iter([0.5, 0.5, 0.5, 0.5])
    logged = []
    train = train_params(8, eval_every=2, log_every=2, schedule="plateau", milestones=[], plateau_patience=1)
    checkpoints = []
    fit(*make_run(train), FixedBatches(), train,
        hooks=Hooks(on_log=lambda metrics, step: logged.append((step, metrics)),
                    on_evaluate=lambda: {"val_error": next(errors)},
                    on_checkpoint=lambda state: checkpoints.append(state.schedule)))
    # Measured at 2, 4, 6, 8: 0.5 sets the best, then each equal measurement is a plateau.
    assert [step for step, metrics in logged if "val_error" in metrics] == [2, 4, 6, 8]
    lrs = {step: metrics["lr"] for step, metrics in logged if "lr" in metrics}
    assert lrs[2] == 0.05 and math.isclose(lrs[6], 0.005) and math.isclose(lrs[8], 0.0005)
    last = checkpoints[-1]
    assert last is not None and last["plateau_decays"] == 3


def cosine_recipe(raw: dict) -> dict:
    """params.yaml with the cifar-cosine recipe written in, as `resnet-repro recipe select cifar-cosine` does."""
    recipe = recipe_settings("cifar-cosine")
    return with_train(raw, **{key.removeprefix("train."): value for key, value in recipe.items()})


def test_cosine_recipe_is_200_epochs_at_lr_0_1_with_weight_decay_5e_4(raw):
    train = parse_params(cosine_recipe(raw)).train
    # 200 epochs of the 50k training images in whole batches of 128 (the last partial batch is dropped).
    assert train.iterations == 200 * (50_000 // 128) == 78_000
    assert (train.batch_size, train.lr, train.momentum, train.weight_decay) == (128, 0.1, 0.9, 5e-4)
    assert (train.schedule, train.milestones, train.linear_warmup_iterations) == ("cosine", [], 0)
    assert not PaperSchedule(train, depth=110).warming_up  # no constant warm-up, even for the deepest nets


def test_cosine_schedule_falls_from_lr_to_zero_along_half_a_cosine(raw):
    train = parse_params(cosine_recipe(raw)).train
    schedule = PaperSchedule(train, depth=18)
    assert schedule.lr(0) == 0.1
    assert schedule.lr(19_500) == pytest.approx(0.05 * (1 + math.sqrt(0.5)))  # a quarter of the way
    assert schedule.lr(39_000) == pytest.approx(0.05)  # half way
    assert 0 < schedule.lr(77_999) < 1e-9  # the last step still trains, barely
    lrs = [schedule.lr(i) for i in range(0, 78_000, 100)]
    assert all(later < earlier for earlier, later in zip(lrs, lrs[1:]))
    assert not any(schedule.observe_validation(i, 0.5) for i in range(10))  # no plateau decays
    # With the linear warm-up, the ramp multiplies the cosine.
    ramped = PaperSchedule(parse_params(with_train(cosine_recipe(raw), linear_warmup_iterations=100)).train, 18)
    assert ramped.lr(49) == pytest.approx(0.5 * schedule.lr(49)) and ramped.lr(100) == schedule.lr(100)


def test_a_cosine_run_resumed_from_its_checkpoint_follows_the_same_lr_and_ends_the_same(tmp_path):
    train = train_params(10, schedule="cosine", milestones=[])
    step, schedule = make_run(train)
    uninterrupted = fit(step, schedule, FixedBatches(), train)
    # A logged lr is the one the last step used: iteration s - 1 at step s.
    assert [row["lr"] for row in uninterrupted.curves.steps] == \
        pytest.approx([0.025 * (1 + math.cos(math.pi * (step - 1) / 10)) for step in (2, 4, 6, 8, 10)])
    weights = step.model.state_dict()
    checkpoints = []
    step, schedule = make_run(train)
    fit(step, schedule, FixedBatches(), train,
        hooks=Hooks(on_checkpoint=lambda state: checkpoints.append(copy.deepcopy(state))))
    path = tmp_path / "checkpoint.pt"
    next(state for state in checkpoints if state.iteration == 6).save(path)
    step, schedule = make_run(train)
    resumed = fit(step, schedule, FixedBatches(), train, state=resume_or_start(path, fingerprint=""))
    assert [row["lr"] for row in resumed.curves.steps] == [row["lr"] for row in uninterrupted.curves.steps]
    for name, tensor in weights.items():
        assert torch.equal(tensor, step.model.state_dict()[name]), name


def test_selecting_the_cosine_recipe_writes_it_and_the_paper_recipe_comes_back(tmp_path):
    from resnet_repro.cli import main

    params_file = tmp_path / "params.yaml"
    params_file.write_text(PROJECT_PARAMS.read_text())
    assert main(["recipe", "select", "cifar-cosine", "--params", str(params_file)]) == 0
    train = load_params(params_file).train
    assert {key: getattr(train, key) for key in RECIPES["cifar-cosine"]} == RECIPES["cifar-cosine"]
    assert main(["recipe", "select", "cifar", "--params", str(params_file)]) == 0
    assert load_params(params_file).train == load_params(PROJECT_PARAMS).train
