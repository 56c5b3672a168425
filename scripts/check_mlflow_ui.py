"""Open the MLflow UI in headless Chromium and check that a study's runs appear in its compare view.

    python scripts/check_mlflow_ui.py --study cifar-degradation-cpu --screenshot reports/mlflow-compare.png

It starts `mlflow server` on a free loopback port against the project's mlflow.db, opens the compare
view of every run nested under the study's parent run, waits until each run's name is on the page,
saves a screenshot and exits 0; it exits 1 naming the runs the page does not show. Needs Chromium
(Debian's package `chromium`, as scripts/setup.sh installs it) and the `playwright` package.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient

STUDY_RUN_TAG = "study_run"  # resnet_repro.tracking.runs.STUDY_RUN_TAG
# Without the background-networking flags Chromium keeps dialling Google's hosts, which a closed
# network refuses; --no-sandbox because CI runs as root.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def study_runs(client: MlflowClient, experiment: str, study: str) -> tuple[str, dict[str, str]]:
    """(experiment id, {run id: run name}) of the runs nested under the study's parent run."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no MLflow experiment named {experiment!r}")
    parents = client.search_runs([found.experiment_id], filter_string=f"tags.{STUDY_RUN_TAG} = '{study}'")
    if not parents:
        raise SystemExit(f"experiment {experiment!r} has no parent run of study {study!r}; run `dvc repro` first")
    children = client.search_runs([found.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    return found.experiment_id, {run.info.run_id: run.info.run_name for run in children}


@contextmanager
def mlflow_server(tracking_uri: str, log_path: Path, startup_seconds: float = 120):
    """`mlflow server` on a free 127.0.0.1 port until the block ends; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", tracking_uri,
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"mlflow server did not start; its log:\n{log_path.read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def check_compare_view(url: str, experiment_id: str, runs: dict[str, str], screenshot: Path,
                       chromium: str = "/usr/bin/chromium", timeout_ms: int = 60_000) -> list[str]:
    """Open the compare view of `runs` and return the names the page does not show (empty: all there)."""
    from playwright.sync_api import sync_playwright

    page_url = f"{url}/#/compare-runs?runs={json.dumps(list(runs))}&experiments={json.dumps([experiment_id])}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(page_url)
            missing = []
            for name in runs.values():
                try:
                    page.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=timeout_ms)
                except Exception:  # playwright's TimeoutError: the name never showed
                    missing.append(name)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=Path("mlflow.db"), help="the sqlite store (default ./mlflow.db)")
    parser.add_argument("--experiment", default="resnet-repro-cifar10")
    parser.add_argument("--study", required=True, help="study.name of the runs to compare")
    parser.add_argument("--screenshot", type=Path, default=Path("mlflow-compare.png"))
    args = parser.parse_args(argv)
    if not args.db.is_file():
        raise SystemExit(f"{args.db}: no such MLflow database")
    tracking_uri = f"sqlite:///{args.db.resolve()}"
    experiment_id, runs = study_runs(MlflowClient(tracking_uri), args.experiment, args.study)
    with mlflow_server(tracking_uri, args.screenshot.with_suffix(".server.log")) as url:
        missing = check_compare_view(url, experiment_id, runs, args.screenshot)
    shown = [name for name in runs.values() if name not in missing]
    print(json.dumps({"compare_view_shows": shown, "missing": missing, "screenshot": str(args.screenshot)}))
    return 1 if missing or not runs else 0


if __name__ == "__main__":
    sys.exit(main())
