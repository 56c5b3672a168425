"""The report stage: reports/study.md, study.json and figures/ from every net's metrics, the study in
one row of numbers in reports/metrics.json (the pipeline's DVC metric), and the same table, numbers and
figures on the study's parent run in MLflow."""

from resnet_repro.config import Params
from resnet_repro.io import atomic_write, staged_directory, write_json
from resnet_repro.layout import FIGURES, STUDY_JSON, STUDY_METRICS, STUDY_TABLE, Layout
from resnet_repro.report import claims, figures
from resnet_repro.report.study import (
    collect,
    collect_runs,
    depth_trends,
    markdown,
    metrics_json,
    plain_vs_residual,
    study_json,
)
from resnet_repro.tracking.runs import log_to_study_run, resolve_tracking_uri


def write_report(params: Params, layout: Layout) -> list[dict]:
    runs = collect_runs(params, layout)  # every input is read and checked before anything is written
    rows = collect(params, layout, runs)
    pairs = plain_vs_residual(rows, params.data.dataset)
    trends = depth_trends(rows)
    judged = claims.judge(runs, params)
    with staged_directory(layout.reports_dir / FIGURES) as directory:
        drawn = figures.draw_all(runs, params.data.dataset, directory)
    write_json(layout.reports_dir / STUDY_JSON, study_json(params, rows, pairs, trends, judged, drawn))
    numbers = metrics_json(rows, judged)
    write_json(layout.reports_dir / STUDY_METRICS, numbers)
    text = markdown(params, rows, pairs, trends, judged, drawn)
    atomic_write(layout.reports_dir / STUDY_TABLE, lambda temporary: temporary.write_text(text))
    print(text, flush=True)
    summary = {f"{row['variant']}.test_error": row["top1_error_mean"] for row in rows if row["top1_error_mean"] is not None}
    summary.update({f"claims.{entry['id']}.{key}": entry[key] for entry in judged for key in ("margin", "spread")
                    if entry[key] is not None})
    tags = {f"claim.{entry['id']}": f"{entry['verdict']}: {entry['reason']}" for entry in judged}
    outputs = [layout.reports_dir / name for name in (STUDY_TABLE, STUDY_JSON, FIGURES)]
    parent = log_to_study_run(resolve_tracking_uri(layout.root, params.mlflow.tracking_uri), params.mlflow.experiment,
                              params.study.name, outputs, summary, tags)
    print(f"Logged the report to MLflow run {parent} (study {params.study.name!r})", flush=True)
    return rows
