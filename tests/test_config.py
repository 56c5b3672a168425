"""params.yaml validation: every bad value stops a stage with one line naming the key path and value."""

import copy

import pytest
import yaml

from projects import REPOSITORY, committed_file
from resnet_repro.config import ConfigError, load_params, parse_params
from resnet_repro.layout import Layout

# The project's params.yaml as committed: the working tree's may hold a user's experiment (issue 31).
PROJECT_PARAMS = committed_file("params.yaml")


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(PROJECT_PARAMS.read_text())


def with_value(raw: dict, dotted: str, value) -> dict:
    changed = copy.deepcopy(raw)
    *parents, leaf = dotted.split(".")
    section = changed
    for key in parents:
        section = section[key]
    section[leaf] = value
    return changed


def test_project_params_are_the_papers_recipe():
    params = load_params(PROJECT_PARAMS)
    assert params.train.iterations == 64_000
    assert params.train.milestones == [32_000, 48_000]
    assert (params.train.lr, params.train.momentum, params.train.weight_decay) == (0.1, 0.9, 1e-4)
    assert params.train.batch_size == 128
    # Table 6's nets train on all 50k training images (the 45k/5k split only chose the schedule).
    assert params.data.val_size == 0 and params.data.subset is None
    assert "resnet110" in params.study.variants and "plain56" in params.study.variants


@pytest.mark.parametrize("dotted, value, expected", [
    ("train.lr", -0.1, "train.lr = -0.1"),
    ("train.iterations", "many", "train.iterations = 'many'"),
    ("data.subset", 60_000, "data.subset = 60000"),
    ("data.val_size", -1, "data.val_size = -1"),
    ("train.milestones", [48_000, 32_000], "train.milestones = [48000, 32000]"),
    ("study.variants", ["resnet21"], "resnet21"),
    ("study.variants", ["plain20", "plain20"], "study.variants"),
    ("study.seeds", [0, 0], "study.seeds"),
    ("train.device", "tpu", "train.device = 'tpu'"),
    ("train.precision", "fp8", "train.precision = 'fp8'"),
    ("evaluate.views", ["ten_crop"], "evaluate.views = ['ten_crop']: must start with center"),
    ("evaluate.views", ["center", "twelve_crop"], "evaluate.views.1 = 'twelve_crop'"),
    # The default dataset is CIFAR-10, evaluated on its single 32x32 view, as in the paper.
    ("evaluate.views", ["center", "ten_crop"], "evaluate.views = ['center', 'ten_crop']: ten_crop and multi_scale"),
])
def test_bad_value_names_key_path_and_value(raw, dotted, value, expected):
    with pytest.raises(ConfigError) as error:
        parse_params(with_value(raw, dotted, value))
    message = str(error.value)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize("dataset, variants, expected", [
    ("cifar10", ["resnet18"], "params.yaml: study.variants: resnet18 is an ImageNet net (7x7 stride-2 stem and "
                              "max-pool, for 224-pixel images); on CIFAR-10 use resnet18-cifar, the same net with a "
                              "3x3 stem"),
    ("cifar10", ["plain20", "resnet34-c"], "resnet34-c is an ImageNet net (7x7 stride-2 stem and max-pool, for "
                                           "224-pixel images); on CIFAR-10 use resnet34-c-cifar"),
    ("imagefolder", ["resnet18-cifar"], "params.yaml: study.variants: resnet18-cifar is a CIFAR-10 net (3x3 stem, "
                                        "for 32-pixel images); on an image folder use resnet18, the same net with "
                                        "ImageNet's stem"),
    ("imagefolder", ["resnet18", "resnet20"], "resnet20 is a CIFAR-10 net (3x3 stem, for 32-pixel images) with no "
                                              "ImageNet version; an image folder trains the ImageNet nets: resnet18, "),
])  # fmt: skip
def test_a_net_made_for_the_other_image_size_is_refused_naming_the_one_to_use(raw, dataset, variants, expected):
    changed = with_value(raw, "study.variants", variants)
    if dataset == "imagefolder":
        changed = with_value(with_value(changed, "data.dataset", "imagefolder"), "data.root", "photos")
    with pytest.raises(ConfigError) as error:
        parse_params(changed, "params.yaml")
    assert expected in str(error.value) and "\n" not in str(error.value)
    # The net it names is accepted.
    named = "resnet18-cifar" if dataset == "cifar10" else "resnet18"
    assert parse_params(with_value(changed, "study.variants", [named])).study.variants == [named]


def test_cifar_depth_must_be_6n_plus_2(raw):
    with pytest.raises(ConfigError, match=r"resnet21.*6n\+2"):
        parse_params(with_value(raw, "study.variants", ["resnet21"]))


def test_unknown_key_is_refused(raw):
    with pytest.raises(ConfigError, match=r"train\.learning_rate: unknown key"):
        parse_params(with_value(raw, "train.learning_rate", 0.1))


def test_missing_required_key(raw):
    changed = copy.deepcopy(raw)
    del changed["study"]["variants"]
    with pytest.raises(ConfigError, match=r"study\.variants: required key is missing"):
        parse_params(changed)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("- a list")
    with pytest.raises(ConfigError, match="mapping"):
        load_params(tmp_path / "params.yaml")


def test_layout_paths_match_dvc_yaml():
    """dvc.yaml spells the same paths as layout.Layout; a drift would make DVC track the wrong files."""
    root = REPOSITORY
    layout = Layout(root)
    dvc = (root / "dvc.yaml").read_text()
    for path in (layout.prepared_dir, layout.ffcv_dir):
        assert str(path.relative_to(root)).replace("cifar10", "${data.dataset}") in dvc
    model_dir = layout.model_dir("V", 0).relative_to(root)
    metrics_dir = layout.metrics_dir("V", 0).relative_to(root)
    assert str(model_dir).replace("V", "${item.variant}").replace("seed0", "seed${item.seed}") in dvc
    assert str(metrics_dir).replace("V", "${item.variant}").replace("seed0", "seed${item.seed}") in dvc
