"""The MLflow UI, in a real headless Chromium, plots a study's test error against depth in its compare view.

The runs are logged the way the stages log them: the train stage's TrainingRun with the study tags and
the net's variant, family and depth as params, its curves, then the evaluate stage's test errors added to
the finished run. check_mlflow_ui.py (beside this file) serves the store with `mlflow server` and drives the
browser.
The screenshot's path is printed (pytest -s shows it) and the file is kept in pytest's tmp directory.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from PIL import Image

from check_mlflow_ui import study_runs
from resnet_repro.tracking.runs import TrainingRun

SCRIPT = Path(__file__).resolve().with_name("check_mlflow_ui.py")
CHROMIUM = Path("/usr/bin/chromium")
ITERATIONS = 100
# Two depths in both families: the degradation problem in small (the deeper plain net is worse).
TEST_ERRORS = {"plain20": 0.0905, "plain32": 0.1012, "resnet20": 0.0875, "resnet32": 0.0751}

pytestmark = pytest.mark.pipeline  # a server and a browser: not the quick tier
# The tests that drive the browser; the others need none.
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="needs Debian's chromium (scripts/setup.sh installs it)")


def train(database: Path, study: str, variant: str) -> str:
    """Log a training of `variant` as the train stage does; its run id."""
    family, depth = ("plain", variant.removeprefix("plain")) if variant.startswith("plain") \
        else ("residual", variant.removeprefix("resnet"))
    net = {"variant": variant, "family": family, "depth": int(depth)}
    with TrainingRun.start(f"sqlite:///{database}", "ui-test", f"{variant} seed 0",
                           {"model": net, "train": {"lr": 0.1}}, {**net, "study": study, "seed": 0}) as run:
        for step in range(10, ITERATIONS + 10, 10):
            run.log_metrics({"loss": 1.0 + 1 / step, "train_error": 0.5, "test_error": 0.5 - step / 1000}, step)
    return run.run_id


def evaluate(database: Path, variant: str, run_id: str, test_error: float) -> None:
    """Add the test errors to the finished run, as the evaluate stage does."""
    with TrainingRun.start(f"sqlite:///{database}", "ui-test", f"{variant} seed 0", {}, {},
                           resume_run_id=run_id) as run:
        run.log_metrics({"test_top1_error": test_error, "test_top5_error": test_error / 10}, ITERATIONS)


@pytest.fixture(scope="module")
def study_store(tmp_path_factory) -> Path:
    """Study `ui-study`: four evaluated runs. Study `ui-study-unevaluated`: resnet56 was never evaluated."""
    database = tmp_path_factory.mktemp("ui") / "mlflow.db"
    for variant, test_error in TEST_ERRORS.items():
        evaluate(database, variant, train(database, "ui-study", variant), test_error)
    evaluate(database, "resnet20", train(database, "ui-study-unevaluated", "resnet20"), 0.0875)
    train(database, "ui-study-unevaluated", "resnet56")
    return database


def check_ui(database: Path, study: str, screenshot: Path) -> tuple[subprocess.CompletedProcess, dict]:
    result = subprocess.run([sys.executable, str(SCRIPT), "--db", str(database), "--experiment", "ui-test",
                             "--study", study, "--screenshot", str(screenshot)],
                            capture_output=True, text=True, timeout=600)
    lines = result.stdout.strip().splitlines()
    return result, json.loads(lines[-1]) if lines else {}


@needs_chromium
def test_compare_view_plots_test_error_against_depth_for_every_run(study_store, tmp_path):
    screenshot = tmp_path / "mlflow-compare.png"
    result, report = check_ui(study_store, "ui-study", screenshot)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(report["plotted"]) == [f"{variant} seed 0" for variant in sorted(TEST_ERRORS)]
    assert report["missing"] == []
    with Image.open(screenshot) as image:
        assert image.format == "PNG" and image.width >= 1600
    print(f"\nMLflow compare view screenshot: {screenshot}")


@needs_chromium
def test_a_run_without_a_test_error_is_named_as_not_plotted(study_store, tmp_path):
    result, report = check_ui(study_store, "ui-study-unevaluated", tmp_path / "mlflow-compare.png")
    assert result.returncode == 1, result.stdout + result.stderr
    assert (report["plotted"], report["missing"]) == (["resnet20 seed 0"], ["resnet56 seed 0"])


def test_the_newest_run_of_a_name_stands_for_it(tmp_path):
    database = tmp_path / "mlflow.db"
    first, other = train(database, "ui-study", "plain20"), train(database, "ui-study", "resnet20")

    retrained = train(database, "ui-study", "plain20")  # e.g. trained again from scratch after a kill

    _, runs = study_runs(MlflowClient(f"sqlite:///{database}"), "ui-test", "ui-study")
    assert runs == {other: "resnet20 seed 0", retrained: "plain20 seed 0"} and first not in runs
