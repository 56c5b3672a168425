"""The MLflow UI, in a real headless Chromium, shows a study's runs side by side in its compare view.

The runs are logged the way the train stage logs them (TrainingRun, study tags, the same metric keys
and steps); scripts/check_mlflow_ui.py serves the store with `mlflow server` and drives the browser.
The screenshot's path is printed (pytest -s shows it) and the file is kept in pytest's tmp directory.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from resnet_repro.tracking.runs import TrainingRun

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_mlflow_ui.py"
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def study_store(tmp_path_factory) -> Path:
    database = tmp_path_factory.mktemp("ui") / "mlflow.db"
    for variant, final_loss in (("plain56", 1.4), ("resnet56", 1.1)):
        tags = {"study": "ui-study", "variant": variant, "seed": 0}
        with TrainingRun.start(f"sqlite:///{database}", "ui-test", f"{variant} seed 0", {"train": {"lr": 0.1}},
                               tags) as run:
            for step in range(10, 110, 10):
                run.log_metrics({"loss": final_loss + 1 / step, "train_error": 0.5}, step)
    return database


def test_compare_view_shows_every_run_of_the_study(study_store, tmp_path):
    screenshot = tmp_path / "mlflow-compare.png"
    result = subprocess.run([sys.executable, str(SCRIPT), "--db", str(study_store), "--experiment", "ui-test",
                             "--study", "ui-study", "--screenshot", str(screenshot)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(report["compare_view_shows"]) == ["plain56 seed 0", "resnet56 seed 0"]
    with Image.open(screenshot) as image:
        assert image.format == "PNG" and image.width >= 1600
    print(f"\nMLflow compare view screenshot: {screenshot}")


def test_a_name_the_page_does_not_show_is_reported_missing(study_store, tmp_path):
    spec = importlib.util.spec_from_file_location("check_mlflow_ui", SCRIPT)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    from mlflow import MlflowClient

    tracking_uri = f"sqlite:///{study_store}"
    experiment_id, runs = check.study_runs(MlflowClient(tracking_uri), "ui-test", "ui-study")
    renamed = {run_id: f"{name} (not a real name)" for run_id, name in runs.items()}
    with check.mlflow_server(tracking_uri, tmp_path / "server.log") as url:
        missing = check.check_compare_view(url, experiment_id, renamed, tmp_path / "shot.png", timeout_ms=5000)
    assert sorted(missing) == sorted(renamed.values())
