"""The study report: the paper's table beside the measured one, plain against residual, and figures.

stages/report.py writes it under `layout.reports_dir`: study.md (GitHub Markdown, `markdown`),
study.json (the same numbers, a DVC metrics file, `study_json`) and figures/*.png. CIFAR-10 studies compare with Table 6 (ResNets) and Figure 6 (plain
nets, approximate); image-folder studies of the ImageNet nets with Tables 2 and 3 (10-crop).

Errors are reported as mean +/- sample std over seeds of the final model, evaluated once at the end of
training: never the best test epoch. Every difference is measured minus paper (or plain minus
residual), in percentage points.
"""

from resnet_repro import models
from resnet_repro.config import Params
from resnet_repro.layout import Layout
from resnet_repro.report import claims, figures
from resnet_repro.report.measured import VIEWS, Run, label, mean_std, read_run, sort_key
from resnet_repro.report.paper import CIFAR10, IMAGENET_10CROP, IMAGENET_10CROP_SOURCE
from resnet_repro.train.recipe import RECIPES

# The per-net numbers study.json also lists flat, for `dvc metrics show`.
SUMMARY_KEYS = ("seeds", "top1_error_mean", "top1_error_std", "top5_error_mean", "top5_error_std", "train_error_mean",
                "paper_top1_error", "difference_top1")


# --- the paper's side ---------------------------------------------------------------------------------

def paper_entry(variant: str, dataset: str) -> dict | None:
    """What the paper says about `variant` trained on `dataset`, or None if it says nothing comparable.

    `compare_to` is the number the measured mean is compared with (None where only a bound is known),
    `text` how the paper column prints it.
    """
    s = models.spec(variant)
    if dataset == "cifar10" and s.dataset == "cifar10":
        result = CIFAR10.get(s.depth)
        if result is None:
            return None
        if s.family == "residual" and s.shortcut == "A" and result.resnet_test_error is not None:
            entry = {"top1": result.resnet_test_error, "top5": None, "source": "Table 6", "approximate": False,
                     "compare_to": result.resnet_test_error, "text": f"{result.resnet_test_error:.2f}", "note": ""}
            if result.resnet_mean_error is not None:
                entry.update(compare_to=result.resnet_mean_error, mean=result.resnet_mean_error,
                             std=result.resnet_std_error,
                             text=f"{result.resnet_test_error:.2f} (best of 5; mean {result.resnet_mean_error:.2f} "
                                  f"± {result.resnet_std_error:.2f})",
                             note=f"{label(variant)}: the difference is against the paper's mean of 5 runs")
            return entry
        if s.family == "plain" and result.plain_test_error is not None:
            if result.plain_fails:
                return {"top1": result.plain_test_error, "top5": None, "source": "Figure 6 (approx.)",
                        "approximate": True, "lower_bound": True, "compare_to": None,
                        "text": f"> {result.plain_test_error:g} (fails)",
                        "note": f"{label(variant)}: the paper reports more than {result.plain_test_error:g}% error "
                                f"(it fails to train), a bound, so no difference is given"}
            return {"top1": result.plain_test_error, "top5": None, "source": "Figure 6 (approx.)",
                    "approximate": True, "compare_to": result.plain_test_error,
                    "text": f"≈ {result.plain_test_error:g}", "note": ""}
        return None
    if dataset != "cifar10" and s.dataset == "imagenet" and s.name in IMAGENET_10CROP:
        top1, top5 = IMAGENET_10CROP[s.name]
        return {"top1": top1, "top5": top5, "source": IMAGENET_10CROP_SOURCE[s.name], "approximate": False,
                "compare_to": top1, "text": f"{top1:.2f}", "note": ""}
    return None


# --- the measured side --------------------------------------------------------------------------------

def collect_runs(params: Params, layout: Layout) -> dict[str, list[Run]]:
    """Every (variant, seed) run of the study, read and checked; raises naming the first bad file."""
    return {variant: [read_run(layout, variant, seed) for seed in params.study.seeds]
            for variant in params.study.variants}


def _stats(values: list[float | None]) -> tuple[float | None, float | None]:
    measured = [value for value in values if value is not None]
    if len(measured) < len(values):
        return None, None
    return mean_std(measured)


def summarise(variant: str, runs: list[Run], dataset: str) -> dict:
    """One table row: measured mean +/- std over seeds beside the paper's number."""
    s = models.spec(variant)
    paper = paper_entry(variant, dataset)
    views = [view for view in VIEWS if all(run.error(view, 1) is not None for run in runs)]
    # The paper's ImageNet tables are 10-crop; CIFAR (and the fallback) is the single original view.
    view = "10-crop" if dataset != "cifar10" and "10-crop" in views else "1-crop"
    measured = {}
    for each in views:
        top1, top1_std = _stats([run.error(each, 1) for run in runs])
        top5, top5_std = _stats([run.error(each, 5) for run in runs])
        measured[each] = {"top1_error_mean": top1, "top1_error_std": top1_std,
                          "top5_error_mean": top5, "top5_error_std": top5_std}
    train, train_std = mean_std([100 * float(run.training["final_train_error"]) for run in runs])
    chosen = measured[view]
    parameters = {run.training.get("parameters") for run in runs}

    def difference(mean: float | None, reference: float | None) -> float | None:
        return mean - reference if mean is not None and reference is not None else None

    return {
        "variant": variant, "label": label(variant), "family": s.family, "depth": s.depth, "shortcut": s.shortcut,
        "seeds": len(runs), "seed_list": [run.seed for run in runs],
        "iterations": sorted({int(run.training["iterations"]) for run in runs}),
        "parameters": parameters.pop() if len(parameters) == 1 else None,
        "split": runs[0].split, "view": view, "views": measured,
        "top1_error_mean": chosen["top1_error_mean"], "top1_error_std": chosen["top1_error_std"],
        "top5_error_mean": chosen["top5_error_mean"], "top5_error_std": chosen["top5_error_std"],
        "train_error_mean": train, "train_error_std": train_std,
        "paper_top1_error": paper["top1"] if paper else None, "paper_top5_error": paper["top5"] if paper else None,
        "paper_source": paper["source"] if paper else None, "paper_approximate": bool(paper and paper["approximate"]),
        "paper_text": paper["text"] if paper else None, "paper_note": paper["note"] if paper else "",
        "difference_top1": difference(chosen["top1_error_mean"], paper["compare_to"] if paper else None),
        "difference_top5": difference(chosen["top5_error_mean"], paper["top5"] if paper else None),
        "runs": [{"seed": run.seed, "iterations": int(run.training["iterations"]),
                  "train_error": 100 * float(run.training["final_train_error"]),
                  **{f"{each}_top{k}_error": run.error(each, k) for each in views for k in (1, 5)}}
                 for run in runs],
    }


def _common_view(rows: list[dict]) -> str:
    """The view every row measured, 10-crop where all have it: differences compare like with like."""
    return "10-crop" if all(row["view"] == "10-crop" for row in rows) else "1-crop"


def _top1(row: dict, view: str) -> float:
    return row["views"][view]["top1_error_mean"]


def _stage_layout(variant: str) -> tuple:
    """What a plain net and its residual twin share: the stem (dataset) and the stages (widths, blocks).
    Depth alone does not pair them: cifar-plain50 (Section 4.2) is not the plain resnet50-cifar (Table 1)."""
    s = models.spec(variant)
    return s.dataset, s.widths, s.blocks_per_stage, s.block


def plain_vs_residual(rows: list[dict], dataset: str) -> list[dict]:
    """For each depth with both a plain and a residual net of the same layers: plain minus residual (the
    paper's key finding)."""
    pairs = []
    for plain in [row for row in rows if row["family"] == "plain"]:
        for residual in [row for row in rows if row["family"] != "plain" and row["depth"] == plain["depth"]
                         and _stage_layout(row["variant"]) == _stage_layout(plain["variant"])]:
            view = _common_view([plain, residual])
            paper_plain, paper_residual = (paper_entry(row["variant"], dataset) for row in (plain, residual))
            paper_difference, paper_text = None, None
            if paper_plain and paper_residual and paper_residual["compare_to"] is not None:
                paper_difference = paper_plain["top1"] - paper_residual["compare_to"]
                if paper_plain.get("lower_bound"):
                    paper_text = f"> {paper_difference:+.2f}"
                else:
                    paper_text = f"{'≈ ' if paper_plain['approximate'] else ''}{paper_difference:+.2f}"
            pairs.append({
                "depth": plain["depth"], "plain": plain["variant"], "residual": residual["variant"],
                "plain_label": plain["label"], "residual_label": residual["label"], "view": view,
                "plain_error_mean": _top1(plain, view), "residual_error_mean": _top1(residual, view),
                "difference": _top1(plain, view) - _top1(residual, view),
                "train_difference": plain["train_error_mean"] - residual["train_error_mean"],
                "paper_difference": paper_difference, "paper_difference_text": paper_text,
                "paper_difference_is_bound": bool(paper_plain and paper_plain.get("lower_bound")),
            })
    return sorted(pairs, key=lambda pair: (pair["depth"], sort_key(pair["residual"])))


def depth_trends(rows: list[dict]) -> list[dict]:
    """Deepest minus shallowest net of each family, at one shortcut option and one stage width (Section
    4.2's 16-64 or Table 1's 64-512 channels): the paper finds it positive for plain nets (the degradation
    problem, in training error too) and negative for ResNets."""
    trends = []
    for family, expectation in (("plain", "higher"), ("residual", "lower")):
        groups: dict[tuple, list[dict]] = {}
        for row in rows:
            if row["family"] == family:
                groups.setdefault((row["shortcut"], models.spec(row["variant"]).widths), []).append(row)
        groups = {key: members for key, members in groups.items()
                  if len({row["depth"] for row in members}) >= 2}
        if not groups:
            continue
        members = max(groups.values(), key=lambda members: len({row["depth"] for row in members}))
        shallow = min(members, key=lambda row: row["depth"])
        deep = max(members, key=lambda row: row["depth"])
        view = _common_view([shallow, deep])
        trends.append({"family": family, "shallow": shallow["variant"], "deep": deep["variant"],
                       "shallow_label": shallow["label"], "deep_label": deep["label"], "view": view,
                       "test_difference": _top1(deep, view) - _top1(shallow, view),
                       "train_difference": deep["train_error_mean"] - shallow["train_error_mean"],
                       "paper_expects": expectation})
    return trends


def collect(params: Params, layout: Layout, runs: dict[str, list[Run]] | None = None) -> list[dict]:
    """The table rows, in the paper's order (plain before residual, by depth)."""
    runs = collect_runs(params, layout) if runs is None else runs
    return [summarise(variant, runs[variant], params.data.dataset) for variant in sorted(runs, key=sort_key)]


# --- Markdown -----------------------------------------------------------------------------------------

def _error(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _signed(value: float | None, approximate: bool = False) -> str:
    if value is None:
        return "-"
    return f"{'≈ ' if approximate else ''}{value:+.2f}"


def _iterations(row: dict) -> str:
    return ", ".join(f"{iterations:,}" for iterations in row["iterations"])


def _name(row: dict) -> str:
    return f"{row['label']} (`{row['variant']}`)"


def _cifar_table(rows: list[dict]) -> list[str]:
    paper_iterations = RECIPES["cifar"]["iterations"]
    lines = [
        "## CIFAR-10: Table 6 (ResNets) and Figure 6 (plain nets)",
        "",
        ("Test error (%) of the final model on the test set (the single original view), evaluated once at "
         "the end of training, mean ± sample std over seeds. *difference* = measured − paper, in percentage "
         "points (positive: worse than the paper). Plain-net values are read off Figure 6 and are approximate (≈)."),
        "",
        ("| net | seeds | iterations | params (M), measured / paper | test error (%) | final training error (%) "
         "| paper test error (%) | source | difference |"),
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        result = CIFAR10.get(row["depth"]) if models.spec(row["variant"]).dataset == "cifar10" else None
        measured_params = f"{row['parameters'] / 1e6:.2f}" if row["parameters"] else "-"
        paper_params = f"{result.params_millions:g}" if result else "-"
        lines.append(
            f"| {_name(row)} | {row['seeds']} | {_iterations(row)} | {measured_params} / {paper_params} "
            f"| {_error(row['top1_error_mean'], row['top1_error_std'])} "
            f"| {_error(row['train_error_mean'], row['train_error_std'])} "
            f"| {row['paper_text'] or '-'} | {row['paper_source'] or '-'} "
            f"| {_signed(row['difference_top1'], row['paper_approximate'])} |")
    notes = [row["paper_note"] for row in rows if row["paper_note"]]
    if any(row["iterations"] != [paper_iterations] for row in rows):
        notes.append(f"The paper trains {paper_iterations:,} iterations. Runs shorter than the paper's "
                     f"{paper_iterations // 1000}k iterations are not expected to reach its errors.")
    return lines + ([""] + [f"- {note}" for note in notes] if notes else [])


def _view_text(view: str, params: Params) -> str:
    crop, resize = params.augment.crop_size, params.augment.eval_resize
    return {"1-crop": f"1-crop (centre {crop}×{crop} of shorter side {resize})",
            "10-crop": f"10-crop ({crop}×{crop}, shorter side {resize})",
            "multi-scale": f"multi-scale (shorter sides {', '.join(map(str, params.augment.test_scales))})"}[view]


def _imagenet_table(rows: list[dict], params: Params) -> list[str]:
    paper_iterations = RECIPES["imagenet"]["iterations"]
    lines = [
        "## ImageNet: Tables 2 and 3 (10-crop validation error)",
        "",
        ("Validation error (%) of the final model, mean ± sample std over seeds. The paper's numbers are "
         "10-crop (four corners and centre, and their flips); *view* says which measurement stands beside "
         "them. *difference* = measured − paper, in percentage points (positive: worse than the paper)."),
        "",
        ("| net | seeds | iterations | view | top-1 error (%) | top-5 error (%) | final training error (%) "
         "| paper top-1 (%) | paper top-5 (%) | source | difference top-1 | difference top-5 |"),
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        paper_top5 = f"{row['paper_top5_error']:.2f}" if row["paper_top5_error"] is not None else "-"
        lines.append(
            f"| {_name(row)} | {row['seeds']} | {_iterations(row)} | {row['view']} "
            f"| {_error(row['top1_error_mean'], row['top1_error_std'])} "
            f"| {_error(row['top5_error_mean'], row['top5_error_std'])} "
            f"| {_error(row['train_error_mean'], row['train_error_std'])} "
            f"| {row['paper_text'] or '-'} | {paper_top5} | {row['paper_source'] or '-'} "
            f"| {_signed(row['difference_top1'])} | {_signed(row['difference_top5'])} |")
    notes = []
    if any(row["view"] != "10-crop" and row["paper_top1_error"] is not None for row in rows):
        notes.append("Rows whose view is not 10-crop were measured on a single centre crop: their difference "
                     "from the paper's 10-crop numbers is not like for like.")
    unmatched = [row for row in rows if row["paper_top1_error"] is None]
    if unmatched:
        missing = ", ".join(f"`{row['variant']}`" for row in unmatched)
        reported = ", ".join(f"`{name}`" for name in IMAGENET_10CROP)
        notes.append(f"No 10-crop number in the paper for {missing}; it reports {reported} "
                     "(its ResNet-18 is `resnet18-a`, shortcut option A).")
    if any(row["iterations"] != [paper_iterations] for row in rows):
        notes.append(f"The paper trains up to {paper_iterations:,} iterations of batch {RECIPES['imagenet']['batch_size']}; "
                     "shorter runs are not expected to reach its errors.")
    lines += [""] + [f"- {note}" for note in notes] if notes else []
    if any(len(row["views"]) > 1 for row in rows):
        views = [view for view in VIEWS if any(view in row["views"] for row in rows)]
        lines += ["", "Every view measured (top-1 / top-5 error %, mean ± std):", "",
                  "| net | " + " | ".join(_view_text(view, params) for view in views) + " |",
                  "|---|" + "---:|" * len(views)]
        for row in rows:
            cells = []
            for view in views:
                m = row["views"].get(view)
                cells.append(f"{_error(m['top1_error_mean'], m['top1_error_std'])} / "
                             f"{_error(m['top5_error_mean'], m['top5_error_std'])}" if m else "-")
            lines.append(f"| {_name(row)} | " + " | ".join(cells) + " |")
    return lines


def _plain_vs_residual_section(pairs: list[dict], trends: list[dict], dataset: str) -> list[str]:
    measure = "test error" if dataset == "cifar10" else "top-1 error"
    with_view = dataset != "cifar10"
    lines = ["## Plain vs residual", "",
             "The paper's key finding: at equal depth and parameters, the residual net has the lower error, and "
             "deeper plain nets have *higher* training and test error than shallower ones (the degradation "
             "problem), while deeper ResNets have lower error. Below, plain − residual in percentage points "
             "(positive: the residual net is better)"
             + (", each pair in the view both nets were measured in." if with_view else "."), ""]
    if pairs:
        lines += [(f"| depth | plain | residual |{' view |' if with_view else ''} plain {measure} (%) "
                   f"| residual {measure} (%) | plain − residual, measured "
                   "| plain − residual, final training error | plain − residual, paper |"),
                  f"|---:|---|---|{'---|' if with_view else ''}---:|---:|---:|---:|---:|"]
        for pair in pairs:
            view_cell = f" {pair['view']} |" if with_view else ""
            lines.append(
                f"| {pair['depth']} | {pair['plain_label']} | {pair['residual_label']} "
                f"|{view_cell} {pair['plain_error_mean']:.2f} "
                f"| {pair['residual_error_mean']:.2f} | {pair['difference']:+.2f} | {pair['train_difference']:+.2f} "
                f"| {pair['paper_difference_text'] or '-'} |")
    else:
        lines.append("No depth of this study has both a plain and a residual net.")
    if trends:
        lines.append("")
        for trend in trends:
            nets = "plain nets" if trend["family"] == "plain" else "ResNets"
            view = f" ({trend['view']})" if with_view else ""
            lines.append(f"- {nets}, deeper minus shallower ({trend['deep_label']} − {trend['shallow_label']}): "
                         f"{measure}{view} {trend['test_difference']:+.2f}, final training error "
                         f"{trend['train_difference']:+.2f} (the paper: {trend['paper_expects']} for the deeper net).")
    return lines


def markdown(params: Params, rows: list[dict], pairs: list[dict], trends: list[dict], judged: list[dict],
             drawn: list[figures.ReportFigure]) -> str:
    dataset = params.data.dataset
    seeds = ", ".join(map(str, params.study.seeds))
    iterations = ", ".join(f"{n:,}" for n in sorted({n for row in rows for n in row["iterations"]}))
    lines = [f"# Study `{params.study.name}` on {dataset}", "",
             f"{len(rows)} nets × {len(params.study.seeds)} seed(s) ({seeds}), {iterations} iterations. Errors in %.",
             ""]
    lines += claims.markdown(judged) + [""]
    lines += _cifar_table(rows) if dataset == "cifar10" else _imagenet_table(rows, params)
    lines += [""] + _plain_vs_residual_section(pairs, trends, dataset)
    lines += ["", "## Figures", ""]
    for figure in drawn:
        lines += [f"- [{figure.file}]({figure.file}): {figure.title}"]
    for figure in drawn:
        lines += ["", f"![{figure.title}]({figure.file})"]
    return "\n".join(lines) + "\n"


def study_json(params: Params, rows: list[dict], pairs: list[dict], trends: list[dict], judged: list[dict],
               drawn: list[figures.ReportFigure]) -> dict:
    table = "Table 6 and Figure 6" if params.data.dataset == "cifar10" else "Tables 2 and 3 (10-crop)"
    return {
        "study": params.study.name, "dataset": params.data.dataset, "seeds": list(params.study.seeds),
        "paper_table": table, "claims": judged,
        "summary": {row["variant"]: {key: row[key] for key in SUMMARY_KEYS if row[key] is not None} for row in rows},
        "plain_minus_residual": {f"{pair['plain']}-vs-{pair['residual']}": pair["difference"] for pair in pairs},
        "rows": rows, "plain_vs_residual": pairs, "depth_trends": trends,
        "figures": [{"file": figure.file, "title": figure.title} for figure in drawn],
    }


def metrics_json(rows: list[dict], judged: list[dict]) -> dict[str, float]:
    """The study in one row of numbers, for `dvc metrics show/diff` and `dvc exp show`: each net's test
    error (%, mean over seeds; the view of its table row) under its name, and each tested claim's margin
    (points) under its id. Flat and short, so that `dvc exp show` names the columns `resnet56` and `C3`."""
    nets = {row["variant"]: row["top1_error_mean"] for row in rows if row["top1_error_mean"] is not None}
    margins = {entry["id"]: entry["margin"] for entry in judged if entry["margin"] is not None}
    return {**nets, **margins}
