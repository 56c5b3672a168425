"""Open the MLflow UI's compare view of a study's runs in headless Chromium and check that it plots test
error against depth for every run: the harness of tests/test_mlflow_ui.py, which also runs on a real study.

    python tests/check_mlflow_ui.py --study cifar-degradation-cpu --experiment resnet-repro-cifar10-cpu \
        --screenshot reports/mlflow-compare.png

It starts `mlflow server` on a free loopback port against the project's mlflow.db and opens the compare
view of the study's runs: the newest run of each name nested under the study's parent run (a training
started again from scratch replaces the older run). It closes MLflow's assistant panel, plots the test
error (test_top1_error, which the evaluate stage logs) against the depth (the param model.depth, which
the train stage logs) in the scatter plot, and reads back which runs are points of it. Then it draws
the parallel coordinates plot of variant, family, depth and test error, one line per run, and saves a
screenshot of it. It exits 0 if every run is plotted, 1 naming those that are not (a run that was never
evaluated has no test error to plot). Needs Chromium (Debian's package `chromium`, as scripts/setup.sh
installs it) and the `playwright` package.
"""

import argparse
import html
import json
import math
import re
import sys
from pathlib import Path

from mlflow import MlflowClient
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from resnet_repro.tracking.runs import STUDY_RUN_TAG
from resnet_repro.tracking.server import TrackingServerError, tracking_server

# What the plots show, as the train stage (params) and the evaluate stage (metric) log them. The variant
# labels each line of the parallel coordinates plot.
VARIANT_PARAM = "model.variant"
FAMILY_PARAM = "model.family"
DEPTH_PARAM = "model.depth"
TEST_ERROR_METRIC = "test_top1_error"
# Without the background-networking flags Chromium keeps dialling Google's hosts, which a closed
# network refuses; --no-sandbox because CI runs as root.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# MLflow 3 opens its assistant beside the page on the first visit from localhost, over the plots. Its
# close button, by the component id MLflow gives it.
ASSISTANT_CLOSE_BUTTON = '[data-component-id="mlflow.assistant.chat_panel.close"]'
ACTIVE_TAB = "[role=tabpanel][data-state=active]"  # the visualization tab shown
ACTIVE_PLOT = f"{ACTIVE_TAB} .js-plotly-plot"
# The scatter plot's hover text of a point starts with its run's name, HTML-escaped, in bold.
RUN_NAME_IN_HOVER_TEXT = re.compile(r"<b>(.*?)</b>")


def study_runs(client: MlflowClient, experiment: str, study: str) -> tuple[str, dict[str, str]]:
    """(experiment id, {run id: run name}) of the newest run of each name nested under the study's parent run."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no MLflow experiment named {experiment!r}")
    # The oldest parent, as resnet_repro.tracking.runs.study_run_id finds it.
    parents = client.search_runs([found.experiment_id], filter_string=f"tags.{STUDY_RUN_TAG} = '{study}'",
                                 order_by=["attributes.start_time ASC"], max_results=1)
    if not parents:
        raise SystemExit(f"experiment {experiment!r} has no parent run of study {study!r}; run `dvc repro` first")
    children = client.search_runs([found.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'",
                                  order_by=["attributes.start_time DESC"])
    newest: dict[str, str] = {}
    for run in children:
        newest.setdefault(run.info.run_name, run.info.run_id)
    return found.experiment_id, {run_id: name for name, run_id in newest.items()}


def check_compare_view(url: str, experiment_id: str, runs: dict[str, str], screenshot: Path,
                       chromium: str = "/usr/bin/chromium", timeout_ms: int = 60_000) -> list[str]:
    """Open the compare view of `runs`, plot them, save the screenshot; the names of the runs not plotted."""
    page_url = f"{url}/#/compare-runs?runs={json.dumps(list(runs))}&experiments={json.dumps([experiment_id])}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(timeout_ms)
            page.goto(page_url)
            page.get_by_role("tab", name="Scatter Plot").click()
            close_assistant_panel(page, wait_ms=5000)
            plotted = scatter_plot_points(page, x_param=DEPTH_PARAM, y_metric=TEST_ERROR_METRIC)
            missing = [name for name in runs.values() if name not in plotted]

            page.get_by_role("tab", name="Parallel Coordinates Plot").click()
            lines = parallel_coordinates_lines(page, params=[VARIANT_PARAM, FAMILY_PARAM, DEPTH_PARAM],
                                               metrics=[TEST_ERROR_METRIC])
            if lines != len(runs):
                raise SystemExit(f"the parallel coordinates plot draws {lines} lines for the {len(runs)} runs")
            close_assistant_panel(page)
            # No focus ring or hover highlight on the controls in the screenshot.
            page.evaluate("document.activeElement.blur()")
            page.mouse.move(0, 0)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return missing


def close_assistant_panel(page, wait_ms: int = 0) -> None:
    """Close MLflow's assistant panel if it is open, or opens within `wait_ms` (it opens by itself)."""
    close = page.locator(ASSISTANT_CLOSE_BUTTON)
    if wait_ms:
        try:
            close.wait_for(state="visible", timeout=wait_ms)
        except PlaywrightTimeout:
            return  # this MLflow did not open it
    if close.is_visible():
        close.click()
        close.wait_for(state="hidden")


def scatter_plot_points(page, x_param: str, y_metric: str) -> dict[str, tuple[float, float]]:
    """{run name: (x, y)} of the points of the scatter plot of `y_metric` against `x_param`.

    A run lacking the param or the metric is not a point. The names come from the points' hover text.
    """
    for axis, kind, key in (("x", "param", x_param), ("y", "metric", y_metric)):
        page.locator(f"#{axis}-axis-selector").click()
        page.get_by_role("listbox").wait_for()
        option = page.get_by_role("option", name=key, exact=True)
        if option.count() == 0:
            raise SystemExit(f"the scatter plot offers no {kind} {key!r}: no run of the study logged it")
        option.click()
    # Plotly redraws after React has passed it the new axes; its layout says when.
    page.wait_for_function(
        "([selector, x, y]) => { const plot = document.querySelector(selector);"
        " return plot && plot._fullLayout && plot._fullLayout.xaxis.title.text === x"
        " && plot._fullLayout.yaxis.title.text === y; }", arg=[ACTIVE_PLOT, x_param, y_metric])
    trace = page.evaluate("selector => { const t = document.querySelector(selector).data[0];"
                          " return {text: t.text, x: t.x, y: t.y}; }", ACTIVE_PLOT)
    points = {}
    for text, x, y in zip(trace["text"], trace["x"], trace["y"]):
        name = RUN_NAME_IN_HOVER_TEXT.match(text)
        if name is None:
            raise SystemExit(f"a point of the scatter plot does not name its run in its hover text: {text!r}")
        if math.isfinite(float(x)) and math.isfinite(float(y)):
            points[html.unescape(name[1])] = (float(x), float(y))
    return points


def parallel_coordinates_lines(page, params: list[str], metrics: list[str]) -> int:
    """Show `params` then `metrics` as the axes of the parallel coordinates plot; the number of lines drawn."""
    page.get_by_test_id("clear-button").click()
    parameters_select, metrics_select = page.locator(ACTIVE_TAB).get_by_role("combobox").all()
    _choose(page, parameters_select, params)
    _choose(page, metrics_select, metrics)
    page.wait_for_function(
        "([selector, labels]) => { const plot = document.querySelector(selector);"
        " return plot && plot.data && JSON.stringify(plot.data[0].dimensions.map(d => d.label))"
        " === JSON.stringify(labels); }", arg=[ACTIVE_PLOT, params + metrics])
    # One value per run on every axis: each run is a line.
    return page.evaluate("selector => document.querySelector(selector).data[0].dimensions[0].values.length",
                         ACTIVE_PLOT)


def _choose(page, select, keys: list[str]) -> None:
    """Select `keys`, in this order, in one of the plot's multiple-choice lists.

    The list draws only the options in view, so each is reached with the arrow keys; the option they
    reach is the one the list's input names as its active descendant (ARIA).
    """
    select.focus()
    for key in keys:
        seen = set()
        page.keyboard.press("ArrowDown")  # opens the list, or moves to the next option
        while True:
            active_id = select.get_attribute("aria-activedescendant")
            active = page.locator(f"[id='{active_id}']").get_attribute("aria-label")
            if active == key:
                page.keyboard.press("Enter")
                break
            if active in seen:  # the arrow went round the whole list
                raise SystemExit(f"the parallel coordinates plot offers no {key!r}: no run of the study logged it")
            seen.add(active)
            page.keyboard.press("ArrowDown")
    page.keyboard.press("Escape")


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
    if not runs:
        raise SystemExit(f"study {args.study!r} has no runs in experiment {args.experiment!r}")
    try:
        with tracking_server(tracking_uri, args.screenshot.with_suffix(".server.log")) as url:
            missing = check_compare_view(url, experiment_id, runs, args.screenshot)
    except TrackingServerError as error:
        raise SystemExit(str(error)) from None
    plotted = [name for name in runs.values() if name not in missing]
    print(json.dumps({"plotted": plotted, "missing": missing, "screenshot": str(args.screenshot)}))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
