"""ImageNet's ResNet-18 with the CIFAR stem, and its plain twin, through the whole DVC pipeline as a user
runs it: `resnet-repro study select cifar-resnet18` in a copy of the repository, CPU-scale overrides, then
`dvc repro` trains, evaluates, registers and reports both on a small subset of the real CIFAR-10. A
CIFAR-10 study that names ImageNet's resnet18 instead is refused before any training.

Slow: evaluating an 11M-parameter net on the 10,000 test images in float32 takes minutes on a CPU. The
refusal itself is in tests/test_config.py; the default tier's pipelines train the paper's nets.
"""

import json
import math
import sys
from pathlib import Path

import pytest

from projects import commit, copy_repository, run, set_params

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]

VARIANTS = ["plain18-cifar", "resnet18-cifar"]
ITERATIONS = 20


@pytest.fixture(scope="module")
def project(tmp_path_factory, cifar10_archive) -> Path:
    project = copy_repository(tmp_path_factory.mktemp("project"))
    run(["resnet-repro", "study", "select", "cifar-resnet18"], project)
    # The study's recipe (cosine lr from 0.1, weight decay 5e-4) over 20 iterations of batch 32 instead of
    # 200 epochs; the test error once, at the end, on the whole real test set.
    set_params(project, **{
        "data.archive": str(cifar10_archive), "data.subset": 1000, "train.iterations": ITERATIONS,
        "train.batch_size": 32, "train.eval_every": 0, "train.log_every": 5, "train.checkpoint_every": 10,
        "study.seeds": [0],
    })
    commit(project, "cifar-resnet18 at CPU scale")
    run(["dvc", "repro"], project, timeout=3600)
    return project


def read_json(path: Path):
    return json.loads(path.read_text())


def test_both_nets_train_on_the_cosine_recipe_and_are_evaluated_and_registered(project):
    for variant in VARIANTS:
        metrics = project / "metrics" / variant / "seed0"
        assert read_json(metrics / "train.json")["iterations"] == ITERATIONS
        header, *rows = (metrics / "curve.tsv").read_text().splitlines()
        columns = header.split("\t")
        logged = {int(cells[0]): dict(zip(columns, cells)) for cells in (row.split("\t") for row in rows)}
        # A logged lr is the one the step before it used: the cosine from 0.1 at iteration s - 1.
        for step in (5, 10, 15, 20):
            assert float(logged[step]["lr"]) == pytest.approx(0.05 * (1 + math.cos(math.pi * (step - 1) / ITERATIONS)))
            assert math.isfinite(float(logged[step]["loss"]))
        evaluation = read_json(metrics / "eval.json")
        assert evaluation["test_images"] == 10_000 and 0 <= evaluation["test_top1_error"] <= 1
        responses = read_json(metrics / "responses.json")
        assert [row["layer"] for row in responses] == list(range(1, 17))  # ResNet-18's sixteen 3x3 layers
        registry = read_json(metrics / "registry.json")
        assert registry["name"] == f"cifar10-{variant}" and "champion" in registry["aliases"]


def test_the_registered_net_is_resnet18_with_the_cifar_stem(project, tmp_path):
    script = f"""
import resnet_repro
from resnet_repro.models import count_params
net = resnet_repro.load_registered("cifar10-resnet18-cifar@champion", tracking_uri="sqlite:///{project / 'mlflow.db'}")
print(count_params(net), net.conv1.kernel_size[0], net.maxpool is None)
"""
    printed = run([sys.executable, "-c", script], tmp_path).stdout.split()[-3:]
    assert printed == ["11173962", "3", "True"]


def test_report_gives_each_its_own_row_without_a_paper_number_and_pairs_them(project):
    report = read_json(project / "reports" / "study.json")
    rows = {row["variant"]: row for row in report["rows"]}
    assert set(rows) == set(VARIANTS)
    assert rows["resnet18-cifar"]["parameters"] == 11_173_962
    assert all(row["paper_top1_error"] is None and row["difference_top1"] is None for row in rows.values())
    [pair] = report["plain_vs_residual"]
    assert (pair["depth"], pair["plain"], pair["residual"]) == (18, "plain18-cifar", "resnet18-cifar")
    assert pair["difference"] == pytest.approx(rows["plain18-cifar"]["top1_error_mean"]
                                               - rows["resnet18-cifar"]["top1_error_mean"])
    markdown = (project / "reports" / "study.md").read_text()
    [line] = [line for line in markdown.splitlines() if "(`resnet18-cifar`)" in line]
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[0] == "ResNet-18 (CIFAR stem) (`resnet18-cifar`)" and cells[3] == "11.17 / -"
    assert cells[6:] == ["-", "-", "-"]  # no paper number, source or difference: the paper lacks the net
    assert "| 18 | plain-18 (CIFAR stem) | ResNet-18 (CIFAR stem) |" in markdown


def test_a_cifar_study_naming_imagenets_resnet18_stops_dvc_repro_with_one_line(project):
    original = (project / "params.yaml").read_text()
    try:
        set_params(project, **{"study.variants": ["resnet18"]})
        result = run(["dvc", "repro"], project, check=False, timeout=600)
        assert result.returncode != 0
        output = result.stdout + result.stderr
        # The train stage's params validation, DVC's first stage to run, stops it in one line.
        [line] = [line for line in output.splitlines() if "study.variants" in line]
        assert line == (f"train: error: {project.resolve() / 'params.yaml'}: study.variants: resnet18 is an ImageNet "
                        "net (7x7 stride-2 stem and max-pool, for 224-pixel images); on CIFAR-10 use resnet18-cifar, "
                        "the same net with a 3x3 stem")
        assert "Traceback" not in output
        assert not (project / "models" / "resnet18").exists() and not (project / "checkpoints" / "resnet18").exists()
    finally:
        (project / "params.yaml").write_text(original)
