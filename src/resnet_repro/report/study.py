"""The report stage: the paper's CIFAR-10 numbers beside the measured ones, as Markdown and JSON.

Errors are reported as mean +/- std over seeds of the final model, evaluated once at the end of
training: never the best test epoch.
"""

import json
import statistics

from resnet_repro import models
from resnet_repro.config import Layout, Params
from resnet_repro.io import atomic_write, write_json
from resnet_repro.report.paper import CIFAR10


def paper_error(variant: str) -> tuple[float | None, str]:
    """The paper's test error (percent) for a CIFAR variant and where it comes from."""
    spec = models.spec(variant)
    result = CIFAR10.get(spec.depth)
    if spec.dataset != "cifar10" or result is None:
        return None, ""
    if spec.family == "residual" and spec.shortcut == "A":
        return result.resnet_test_error, "Table 6"
    if spec.family == "plain" and result.plain_test_error is not None:
        return result.plain_test_error, "Figure 6 (approx.)"
    return None, ""


def collect(params: Params, layout: Layout) -> list[dict]:
    rows = []
    for variant in params.study.variants:
        runs = []
        for seed in params.study.seeds:
            metrics_dir = layout.metrics_dir(variant, seed)
            evaluation = json.loads((metrics_dir / "eval.json").read_text())
            training = json.loads((metrics_dir / "train.json").read_text())
            runs.append({"seed": seed, "test_error": 100 * evaluation["test_top1_error"],
                         "train_error": 100 * training["final_train_error"], "iterations": training["iterations"]})
        errors = [run["test_error"] for run in runs]
        paper, source = paper_error(variant)
        mean = statistics.fmean(errors)
        rows.append({
            "variant": variant, "seeds": len(runs), "iterations": sorted({run["iterations"] for run in runs}),
            "test_error_mean": mean, "test_error_std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
            "train_error_mean": statistics.fmean(run["train_error"] for run in runs),
            "paper_test_error": paper, "paper_source": source,
            "difference_from_paper": mean - paper if paper is not None else None, "runs": runs,
        })
    return rows


def _markdown(params: Params, rows: list[dict]) -> str:
    lines = [
        f"# Study `{params.study.name}` on {params.data.dataset}",
        "",
        f"Test error (%) of the final model, mean +/- std over seeds; the paper trains {64_000} iterations.",
        "",
        "| variant | seeds | iterations | measured test error | final train error | paper | source | difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        paper = f"{row['paper_test_error']:.2f}" if row["paper_test_error"] is not None else "-"
        difference = f"{row['difference_from_paper']:+.2f}" if row["difference_from_paper"] is not None else "-"
        lines.append(
            f"| {row['variant']} | {row['seeds']} | {', '.join(map(str, row['iterations']))} "
            f"| {row['test_error_mean']:.2f} +/- {row['test_error_std']:.2f} | {row['train_error_mean']:.2f} "
            f"| {paper} | {row['paper_source'] or '-'} | {difference} |")
    if any(row["iterations"] != [64_000] for row in rows):
        lines += ["", "Runs shorter than the paper's 64k iterations are not expected to reach its errors."]
    return "\n".join(lines) + "\n"


def write_report(params: Params, layout: Layout) -> list[dict]:
    rows = collect(params, layout)
    write_json(layout.reports_dir / "study.json", {"study": params.study.name, "dataset": params.data.dataset,
                                                   "rows": rows})
    markdown = _markdown(params, rows)
    atomic_write(layout.reports_dir / "study.md", lambda temporary: temporary.write_text(markdown))
    print(markdown, flush=True)
    return rows
