"""Named studies: `resnet-repro study select` rewrites params.yaml, and DVC's matrix then holds exactly
the study's nets."""

import re
import shutil
from pathlib import Path

import pytest
import yaml

from projects import committed_file, copy_repository, run
from resnet_repro import models
from resnet_repro.cli import main
from resnet_repro.config import load_params
from resnet_repro.studies import STUDIES


@pytest.fixture
def params_file(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    shutil.copy(committed_file("params.yaml"), path)
    return path


def test_every_study_names_known_nets_and_valid_settings(params_file, tmp_path):
    for study in STUDIES.values():
        assert set(study.variants) <= set(models.names()), study.name
        root = ["--root", str(tmp_path)] if study.settings.get("data.dataset") == "imagefolder" else []
        assert main(["study", "select", study.name, "--params", str(params_file), *root]) == 0
        params = load_params(params_file)
        assert (params.study.name, params.study.variants) == (study.name, study.variants)


def test_select_keeps_comments_and_seeds_and_restores_the_paper_recipe(params_file):
    original = params_file.read_text()
    main(["study", "select", "cifar-degradation-cpu", "--params", str(params_file), "--seeds", "0", "1"])
    params = load_params(params_file)
    assert params.study.seeds == [0, 1] and params.train.iterations == 400
    assert params.study.variants == ["plain20", "plain56", "resnet20", "resnet56"]
    # The main job's seed spread, measured at its scale, comes with it; another study does not inherit it.
    assert (params.study.seed_spread.iterations, params.study.seed_spread.subset) == (400, None)
    assert set(params.study.seed_spread.margins) == {"C1", "C2", "C3", "C4", "C5"}
    main(["study", "select", "cifar-paper", "--params", str(params_file)])
    params = load_params(params_file)
    assert params.study.seed_spread.iterations is None and params.study.seed_spread.margins == {}
    assert params.study.seeds == [0, 1]  # seeds are the user's: kept
    # The cifar recipe is written back: the paper's values, in the file.
    assert params.train.iterations == 64000 and params.train.milestones == [32000, 48000]
    assert yaml.safe_load(params_file.read_text())["train"]["iterations"] == 64000
    comments = [line for line in original.splitlines() if line.lstrip().startswith("#")]
    assert [line for line in params_file.read_text().splitlines() if line.lstrip().startswith("#")] == comments
    # Selecting the default study again gives back the committed file, line for line but for seeds.
    main(["study", "select", "cifar-paper", "--params", str(params_file), "--seeds", "0"])
    assert yaml.safe_load(params_file.read_text()) == yaml.safe_load(original)


def test_refused_selection_leaves_the_file_as_it_was(params_file, capsys):
    before = params_file.read_text()
    assert main(["study", "select", "imagenet-depth", "--params", str(params_file)]) == 2
    assert "has no data.root: pass --root DIR" in capsys.readouterr().err
    assert main(["study", "select", "cifar-deep", "--params", str(params_file)]) == 2
    assert "no study named 'cifar-deep'; the studies are: cifar-paper" in capsys.readouterr().err
    # A value the study does not set stays, so a bad one makes the result invalid: refused, file kept.
    broken = before.replace("num_workers: 2", "num_workers: -1")
    params_file.write_text(broken)
    assert main(["study", "select", "cifar-depth", "--params", str(params_file)]) == 2
    assert "loader.num_workers = -1" in capsys.readouterr().err
    assert params_file.read_text() == broken
    # A file that is not YAML is never rewritten.
    broken = before.replace("  lr: 0.1\n", "  lr: [0.1\n")
    params_file.write_text(broken)
    assert main(["study", "select", "cifar-depth", "--params", str(params_file)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert params_file.read_text() == broken


def test_dvc_matrix_holds_exactly_the_selected_study(tmp_path):
    project = copy_repository(tmp_path / "project")
    run(["resnet-repro", "study", "select", "cifar-depth"], project)
    stages = set(re.findall(r"^(train@\S+)", run(["dvc", "stage", "list"], project).stdout, re.MULTILINE))
    assert stages == {f"train@resnet{depth}-0" for depth in (20, 32, 44, 56, 110)}
