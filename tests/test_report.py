"""The report stage on real-format metrics files: tables, plain vs residual, figures, errors.

The fixture writes what the train and evaluate stages write (resnet_repro.io.write_tsv / write_json,
the columns of stages/train.py, the keys of stages/evaluate.py and evaluate/responses.py) for a few nets
and seeds, with chosen final errors, so that every number in the report can be checked by hand.
"""

import json
import math

import numpy as np
import pytest
from PIL import Image

from projects import params_with
from resnet_repro.config import parse_params
from resnet_repro.data.errors import DataError
from resnet_repro.io import write_json, write_tsv
from resnet_repro.layout import Layout
from resnet_repro.report.paper import CIFAR10, IMAGENET_10CROP
from resnet_repro.stages.report import write_report

# The file format the train stage writes (train.state.Curves: STEP_COLUMNS in curve.tsv, ERROR_COLUMNS in
# errors.tsv), spelled out here so that a change to it shows.
STEP_COLUMNS = ["step", "loss", "train_error", "lr", "images_per_second"]
ERROR_COLUMNS = ["step", "train_error", "test_error"]
ITERATIONS = 400

# Final test / training errors (fractions) per variant and seed: the numbers the report must average.
CIFAR_RUNS = {
    "plain20": {0: (0.100, 0.05), 1: (0.096, 0.07)},
    "resnet20": {0: (0.085, 0.02), 1: (0.089, 0.04)},
}


def write_run(layout: Layout, variant: str, seed: int, test_error: float, train_error: float,
              evaluation: dict | None = None, layers: int = 18) -> None:
    """The files of one trained and evaluated net, in the formats the stages write."""
    directory = layout.metrics_dir(variant, seed)
    rng = np.random.default_rng(seed)
    steps = list(range(10, ITERATIONS + 1, 10))
    if seed == 1:
        steps = sorted(steps + [155])  # a timed checkpoint adds a step to one seed only

    def decay(step: int, final: float) -> float:
        return final + (0.9 - final) * math.exp(-step / 80)

    curve = [{"step": step, "loss": 2.3 * decay(step, train_error), "train_error": decay(step, train_error),
              "lr": 0.1, "images_per_second": 500.0} for step in steps]
    curve[-1]["train_error"] = train_error  # the last window is train.json's final_train_error
    write_tsv(directory / "curve.tsv", curve, STEP_COLUMNS)
    errors = [{"step": step, "train_error": decay(step, train_error), "test_error": decay(step, test_error)}
              for step in range(100, ITERATIONS + 1, 100)]
    errors[-1]["test_error"] = test_error
    write_tsv(directory / "errors.tsv", errors, ERROR_COLUMNS)
    write_json(directory / "train.json", {
        "variant": variant, "seed": seed, "iterations": ITERATIONS, "final_loss": 0.3,
        "final_train_error": train_error, "final_test_error": test_error, "train_seconds": 60.0,
        "images_per_second": 500.0, "parameters": 272_474,
    })
    write_json(directory / "eval.json", evaluation or {
        "test_top1_error": test_error, "test_top5_error": test_error / 10, "test_images": 10_000,
        "val_top1_error": 0.5, "val_top5_error": 0.1, "val_images": 5000,
    })
    plain = variant.startswith("plain")
    write_json(directory / "responses.json", [
        {"layer": layer, "name": f"layer{layer}.bn", "std": float((1.5 if plain else 0.8) + 0.3 * rng.random())}
        for layer in range(1, layers + 1)])


def cifar_params(tmp_path, variants=("plain20", "resnet20"), seeds=(0, 1)):
    return parse_params(params_with({
        "data": {"dataset": "cifar10", "archive": str(tmp_path / "cifar-10-python.tar.gz")},
        "train": {"iterations": ITERATIONS, "milestones": []},
        "study": {"name": "test-study", "variants": list(variants), "seeds": list(seeds)},
    }))


@pytest.fixture(scope="module")
def cifar_report(tmp_path_factory, store):
    tmp_path = tmp_path_factory.mktemp("report")
    layout = Layout(tmp_path, "cifar10")
    for variant, seeds in CIFAR_RUNS.items():
        for seed, (test_error, train_error) in seeds.items():
            write_run(layout, variant, seed, test_error, train_error)
    rows = write_report(cifar_params(tmp_path), layout)
    report = json.loads((layout.reports_dir / "study.json").read_text())
    markdown = (layout.reports_dir / "study.md").read_text()
    return layout, rows, report, markdown


def table_line(markdown: str, net: str) -> list[str]:
    """The cells of the first table row whose first cell starts with `net`."""
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(net):
            return cells
    raise AssertionError(f"no table row for {net!r} in\n{markdown}")


def test_rows_are_mean_and_sample_std_over_seeds(cifar_report):
    _, rows, report, markdown = cifar_report
    by_variant = {row["variant"]: row for row in report["rows"]}
    assert [row["variant"] for row in rows] == ["plain20", "resnet20"]  # plain first, as in the paper
    for variant, seeds in CIFAR_RUNS.items():
        row = by_variant[variant]
        tests = [100 * test for test, _ in seeds.values()]
        trains = [100 * train for _, train in seeds.values()]
        assert row["seeds"] == 2 and row["iterations"] == [ITERATIONS]
        assert row["top1_error_mean"] == pytest.approx(np.mean(tests))
        assert row["top1_error_std"] == pytest.approx(np.std(tests, ddof=1))
        assert row["train_error_mean"] == pytest.approx(np.mean(trains))
        assert [run["seed"] for run in row["runs"]] == [0, 1]
    # plain-20: (10.0, 9.6) -> 9.80 +/- 0.28; ResNet-20: (8.5, 8.9) -> 8.70 +/- 0.28.
    plain = table_line(markdown, "plain-20")
    assert plain[1:5] == ["2", "400", "0.27 / 0.27", "9.80 ± 0.28"]
    assert plain[5] == "6.00 ± 1.41"  # final training error (5%, 7%)
    resnet = table_line(markdown, "ResNet-20")
    assert resnet[1:5] == ["2", "400", "0.27 / 0.27", "8.70 ± 0.28"]


def test_paper_column_and_difference(cifar_report):
    _, _, report, markdown = cifar_report
    by_variant = {row["variant"]: row for row in report["rows"]}
    resnet, plain = by_variant["resnet20"], by_variant["plain20"]
    assert resnet["paper_top1_error"] == CIFAR10[20].resnet_test_error == 8.75
    assert resnet["paper_source"] == "Table 6" and not resnet["paper_approximate"]
    assert resnet["difference_top1"] == pytest.approx(8.70 - 8.75)
    assert plain["paper_top1_error"] == CIFAR10[20].plain_test_error
    assert plain["paper_approximate"] and plain["paper_source"] == "Figure 6 (approx.)"
    assert plain["difference_top1"] == pytest.approx(9.80 - 9.0)
    assert table_line(markdown, "ResNet-20")[6:] == ["8.75", "Table 6", "-0.05"]
    assert table_line(markdown, "plain-20")[6:] == ["≈ 9", "Figure 6 (approx.)", "≈ +0.80"]
    assert "not expected to reach its errors" in markdown  # 400 iterations, not the paper's 64k


def test_plain_vs_residual(cifar_report):
    _, _, report, markdown = cifar_report
    [pair] = report["plain_vs_residual"]
    assert (pair["depth"], pair["plain"], pair["residual"]) == (20, "plain20", "resnet20")
    assert pair["difference"] == pytest.approx(9.80 - 8.70)
    assert pair["train_difference"] == pytest.approx(6.0 - 3.0)
    assert pair["paper_difference"] == pytest.approx(9.0 - 8.75)
    section = markdown[markdown.index("## Plain vs residual"):]
    assert table_line(section, "20")[1:] == ["plain-20", "ResNet-20", "9.80", "8.70", "+1.10", "+3.00", "≈ +0.25"]


def test_figures_are_png_and_listed(cifar_report):
    layout, _, report, markdown = cifar_report
    files = [figure["file"] for figure in report["figures"]]
    assert files == ["figures/training_curves.png", "figures/layer_responses.png"]
    for file in files:
        path = layout.reports_dir / file
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG"
            width, height = image.size
            assert 1000 <= width <= 3000 and 500 <= height <= 1500, image.size
            # Not a blank canvas: curves in several colours.
            colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colors is not None and len(colors) > 50
        assert f"]({file})" in markdown  # a relative link, which GitHub renders
    assert not list(layout.reports_dir.glob(".*"))  # no temporary files left behind


def test_missing_metrics_file_is_named(tmp_path):
    layout = Layout(tmp_path, "cifar10")
    for variant, seeds in CIFAR_RUNS.items():
        for seed, (test_error, train_error) in seeds.items():
            write_run(layout, variant, seed, test_error, train_error)
    missing = layout.metrics_dir("resnet20", 1) / "responses.json"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=str(missing)) as error:
        write_report(cifar_params(tmp_path), layout)
    assert "evaluate@resnet20-1" in str(error.value)
    assert not (layout.reports_dir / "study.md").exists()  # nothing written from incomplete inputs

    (layout.metrics_dir("resnet20", 1) / "responses.json").write_text("[]")
    (layout.metrics_dir("plain20", 0) / "errors.tsv").write_text("step\ttrain_error\n100\t0.5\n")
    with pytest.raises(DataError, match=r"plain20/seed0/errors\.tsv: column 'test_error' is missing"):
        write_report(cifar_params(tmp_path), layout)


def test_imagenet_study_compares_ten_crop_with_tables_2_and_3(tmp_path, store):
    layout = Layout(tmp_path, "imagefolder")
    errors = {"plain34": (0.30, 0.11), "resnet34": (0.26, 0.08)}
    for variant, (top1, top5) in errors.items():
        for seed in (0, 1):
            shift = 0.01 * seed
            write_run(layout, variant, seed, top1, 0.2, layers=32, evaluation={
                "val_top1_error": top1 + 0.02 + shift, "val_top5_error": top5 + 0.02 + shift, "val_images": 50,
                "val_ten_crop_top1_error": top1 + shift, "val_ten_crop_top5_error": top5 + shift,
                "val_multi_scale_top1_error": top1 - 0.01 + shift, "val_multi_scale_top5_error": top5 - 0.01 + shift,
            })
    params = parse_params(params_with({
        "data": {"dataset": "imagefolder", "root": str(tmp_path / "photos"), "val_size": 0},
        "train": {"iterations": ITERATIONS, "milestones": []},
        "study": {"variants": ["resnet34", "plain34"], "seeds": [0, 1]},
    }))
    write_report(params, layout)
    report = json.loads((layout.reports_dir / "study.json").read_text())
    markdown = (layout.reports_dir / "study.md").read_text()
    by_variant = {row["variant"]: row for row in report["rows"]}
    resnet = by_variant["resnet34"]
    assert resnet["view"] == "10-crop" and resnet["split"] == "val"
    assert resnet["top1_error_mean"] == pytest.approx(26.5) and resnet["top5_error_mean"] == pytest.approx(8.5)
    assert (resnet["paper_top1_error"], resnet["paper_top5_error"]) == IMAGENET_10CROP["resnet34"]
    assert resnet["difference_top1"] == pytest.approx(26.5 - 24.52)
    assert resnet["difference_top5"] == pytest.approx(8.5 - 7.46)
    assert resnet["views"]["1-crop"]["top1_error_mean"] == pytest.approx(28.5)
    assert table_line(markdown, "ResNet-34")[3:6] == ["10-crop", "26.50 ± 0.71", "8.50 ± 0.71"]
    assert table_line(markdown, "ResNet-34")[7:] == ["24.52", "7.46", "Table 3", "+1.98", "+1.04"]
    [pair] = report["plain_vs_residual"]
    assert pair["view"] == "10-crop" and pair["difference"] == pytest.approx(30.5 - 26.5)
    assert pair["paper_difference"] == pytest.approx(28.54 - 24.52)
    section = markdown[markdown.index("## Plain vs residual"):]
    assert table_line(section, "34")[1:] == ["plain-34", "ResNet-34", "10-crop", "30.50", "26.50", "+4.00", "+0.00",
                                             "+4.02"]
    assert "multi-scale (shorter sides 224, 256, 384, 480, 640)" in markdown  # every view, labelled
    assert "training (dashed) and validation (bold) error" in report["figures"][0]["title"]


def test_plain_vs_residual_compares_the_same_view(tmp_path, store):
    """A net without a 10-crop evaluation is compared with its plain twin on the 1-crop view."""
    layout = Layout(tmp_path, "imagefolder")
    for variant, top1 in {"plain18": 0.30, "resnet18": 0.28}.items():
        evaluation = {"val_top1_error": top1, "val_top5_error": 0.1, "val_images": 50}
        if variant == "plain18":
            evaluation.update(val_ten_crop_top1_error=top1 - 0.02, val_ten_crop_top5_error=0.08)
        write_run(layout, variant, 0, top1, 0.2, layers=16, evaluation=evaluation)
    params = parse_params(params_with({
        "data": {"dataset": "imagefolder", "root": str(tmp_path / "photos"), "val_size": 0},
        "train": {"iterations": ITERATIONS, "milestones": []}, "study": {"variants": ["plain18", "resnet18"], "seeds": [0]},
    }))
    rows = {row["variant"]: row for row in write_report(params, layout)}
    assert rows["plain18"]["view"] == "10-crop" and rows["resnet18"]["view"] == "1-crop"
    assert rows["plain18"]["top1_error_std"] is None  # one seed: no spread to report
    assert rows["resnet18"]["paper_top1_error"] is None  # the paper's ResNet-18 is option A
    [pair] = json.loads((layout.reports_dir / "study.json").read_text())["plain_vs_residual"]
    assert pair["view"] == "1-crop" and pair["difference"] == pytest.approx(2.0)
    markdown = (layout.reports_dir / "study.md").read_text()
    assert "its ResNet-18 is `resnet18-a`" in markdown


def test_report_is_logged_to_the_study_parent_run(cifar_report, store):
    from mlflow import MlflowClient

    from resnet_repro.tracking.runs import STUDY_RUN_TAG

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("resnet-repro-cifar10")
    assert experiment is not None
    [parent] = client.search_runs([experiment.experiment_id], filter_string=f"tags.{STUDY_RUN_TAG} = 'test-study'")
    assert parent.info.run_name == "test-study"
    artifacts = {entry.path for entry in client.list_artifacts(parent.info.run_id)}
    assert {"study.md", "study.json", "figures"} <= artifacts
    figures = {entry.path for entry in client.list_artifacts(parent.info.run_id, "figures")}
    assert "figures/training_curves.png" in figures
    assert parent.data.metrics["resnet20.test_error"] == pytest.approx(8.7)
    # The claims table: C3 (plain-20 against ResNet-20) and its verdict, as on the report's first page.
    assert parent.data.metrics["claims.C3.margin"] == pytest.approx(1.1)
    assert parent.data.tags["claim.C3"].startswith("shown: margin 1.10 > spread 0.80")
    assert parent.data.tags["claim.C1"].startswith("not tested: the study lacks two plain nets")


# --- the claims (report/claims.py) ---------------------------------------------------------------------

# Four nets, one seed, final (test, training) errors chosen so that each claim lands where a test can say.
FOUR_NETS = {"plain20": (0.40, 0.38), "plain56": (0.55, 0.52), "resnet20": (0.35, 0.33), "resnet56": (0.37, 0.34)}


def claims_of(tmp_path, runs: dict, seeds=(0,), seed_spread: dict | None = None, iterations: int = ITERATIONS,
              layers: int = 18) -> dict:
    layout = Layout(tmp_path, "cifar10")
    for variant, errors in runs.items():
        for seed in seeds:
            test_error, train_error = errors[seed] if isinstance(errors, dict) else errors
            write_run(layout, variant, seed, test_error, train_error, layers=layers)
    params = params_with({
        "data": {"dataset": "cifar10", "archive": str(tmp_path / "cifar-10-python.tar.gz")},
        "train": {"iterations": iterations, "milestones": []},
        "study": {"name": "claims", "variants": list(runs), "seeds": list(seeds)},
    })
    if seed_spread is not None:  # params.yaml's quoted spreads unless it says otherwise
        params["study"]["seed_spread"] = {"quoted": params["study"]["seed_spread"]["quoted"], **seed_spread}
    write_report(parse_params(params), layout)
    report = json.loads((layout.reports_dir / "study.json").read_text())
    return {entry["id"]: entry for entry in report["claims"]} | {
        "markdown": (layout.reports_dir / "study.md").read_text(),
        "metrics": json.loads((layout.reports_dir / "metrics.json").read_text())}


def test_claims_with_one_seed_are_judged_against_the_spread_measured_at_that_scale(tmp_path, store):
    spread = {"iterations": ITERATIONS, "subset": None, "seeds": 3,
              "margins": {"C1": 2.0, "C2": 20.0, "C3": 2.0, "C4": 1.0, "C5": 0.1}}
    claims = claims_of(tmp_path, FOUR_NETS, seed_spread=spread)
    # C1: plain-56 trains worse than plain-20 by 52 - 38 = 14 points, more than the spread of 2.
    assert claims["C1"]["nets"] == ["plain56", "plain20"]
    assert claims["C1"]["margin"] == pytest.approx(14.0) and claims["C1"]["verdict"] == "shown"
    assert claims["C1"]["numbers"] == {"plain-56 final training error": pytest.approx(52.0),
                                       "plain-20 final training error": pytest.approx(38.0)}
    # C2: 15 points of test error, but the seeds were measured to spread by 20: not shown.
    assert claims["C2"]["margin"] == pytest.approx(15.0) and claims["C2"]["verdict"] == "not shown"
    assert "within the seed spread 20.00" in claims["C2"]["reason"]
    # C3 at depth 56: the smaller of the training (52 - 34) and test (55 - 37) margins.
    assert claims["C3"]["nets"] == ["plain56", "resnet56"] and claims["C3"]["margin"] == pytest.approx(18.0)
    assert claims["C3"]["verdict"] == "shown"
    # C4: ResNet-56 is 2 points worse than ResNet-20 at 400 of the paper's 64,000 iterations.
    assert claims["C4"]["margin"] == pytest.approx(-2.0) and claims["C4"]["verdict"] == "not tested"
    assert claims["C4"]["reason"].startswith("not tested at this length: the paper's nets train 64,000 iterations")
    # C5: write_run gives plain layers a std of 1.5-1.8 and residual ones 0.8-1.1.
    assert claims["C5"]["verdict"] == "shown" and 0.4 < claims["C5"]["margin"] < 1.0
    # DVC's metric: one flat row of numbers, each net's test error (%) and each claim's margin (points).
    assert claims["metrics"] == pytest.approx({"plain20": 40.0, "plain56": 55.0, "resnet20": 35.0, "resnet56": 37.0,
                                               "C1": 14.0, "C2": 15.0, "C3": 18.0, "C4": -2.0,
                                               "C5": claims["C5"]["margin"]})
    # The report opens with the claims, before the paper's tables.
    markdown = claims["markdown"]
    assert markdown.index("## The paper's claims, judged") < markdown.index("## CIFAR-10: Table 6")
    assert table_line(markdown, "**C4**")[-1].startswith("**not tested**: not tested at this length")


def test_a_seed_spread_of_another_scale_or_none_tests_nothing_with_one_seed(tmp_path, store):
    other_scale = {"iterations": 2 * ITERATIONS, "subset": None, "seeds": 3, "margins": {"C1": 2.0}}
    claims = claims_of(tmp_path / "other", FOUR_NETS, seed_spread=other_scale)
    assert claims["C1"]["verdict"] == "not tested" and claims["C1"]["spread"] is None
    assert "measured at 800 iterations" in claims["C1"]["reason"]
    claims = claims_of(tmp_path / "none", FOUR_NETS)  # params.yaml's default: nothing measured
    assert claims["C1"]["verdict"] == "not tested"
    assert claims["C1"]["reason"] == ("one seed, and no seed spread measured at this scale (study.seed_spread); the "
                                      "quoted spreads are of 64,000 iterations on the whole training set, not this "
                                      "study's 400 on all images")
    assert claims["C4"]["verdict"] == "not tested"  # too short, whatever the spread
    # A margin the other way round is not shown, spread or not, once the length is the paper's.
    claims = claims_of(tmp_path / "long", FOUR_NETS, iterations=64_000)
    assert claims["C4"]["verdict"] == "not shown" and claims["C4"]["reason"] == "the margin is -2.00: the other way round"


def test_one_seed_at_the_papers_length_judges_test_error_claims_against_the_quoted_spread(tmp_path, store):
    # params.yaml quotes each net's std of test error over seeds: ResNet-20 0.22, ResNet-56 0.27, plain-20
    # 0.13, plain-56 0.22 points. ResNet-56 beats ResNet-20 by 5 points here.
    runs = {**FOUR_NETS, "resnet56": (0.30, 0.28)}
    claims = claims_of(tmp_path, runs, iterations=64_000)
    c4 = claims["C4"]
    assert c4["margin"] == pytest.approx(5.0) and c4["spread"] == pytest.approx(2 * (0.22**2 + 0.27**2) ** 0.5)
    assert c4["verdict"] == "shown" and c4["spread_kind"] == "quoted"
    assert c4["reason"] == "margin 5.00 > quoted spread (not measured here) 0.70"
    assert c4["spread_from"].startswith("quoted, not measured: 2 × √(0.22² + 0.27²), the test-error stds over seeds "
                                        "of ResNet-20 and ResNet-56 in a public reproduction")
    assert claims["C2"]["verdict"] == "shown" and claims["C2"]["spread"] == pytest.approx(2 * (0.22**2 + 0.13**2) ** 0.5)
    # No spread of training error or of layer responses is quoted: those claims stay untested on one seed.
    for claim in ("C1", "C3", "C5"):
        assert claims[claim]["verdict"] == "not tested" and claims[claim]["spread_kind"] is None
        assert claims[claim]["reason"] == ("one seed, and no seed spread measured at this scale (study.seed_spread); "
                                           "the quoted spreads are of test error only")
    assert "| 0.70 (quoted, not measured: 2 × √(0.22² + 0.27²)" in claims["markdown"]
    assert "2 × √(σ_a² + σ_b²)" in claims["markdown"]  # the table says how a quoted spread is derived


def test_a_measured_spread_replaces_the_quoted_one(tmp_path, store):
    measured = {"iterations": 64_000, "subset": None, "seeds": 3, "margins": {"C2": 20.0}}
    claims = claims_of(tmp_path, FOUR_NETS, seed_spread=measured, iterations=64_000)
    assert claims["C2"]["spread"] == 20.0 and claims["C2"]["spread_kind"] == "measured"
    assert claims["C2"]["verdict"] == "not shown" and claims["C2"]["reason"] == "margin 15.00 is within the seed spread 20.00"
    # A net without a quoted std leaves its claims untested, saying which.
    partial = {"iterations": None, "subset": None, "seeds": None, "margins": {},
               "quoted": {"source": "someone's runs", "iterations": 64_000, "test_error_std": {"plain20": 0.13}}}
    claims = claims_of(tmp_path / "partial", FOUR_NETS, seed_spread=partial, iterations=64_000)
    assert claims["C2"]["verdict"] == "not tested" and claims["C2"]["reason"].endswith("no spread is quoted for plain-56")


def test_quoted_spreads_without_their_source_are_refused():
    params = params_with({"study": {"seed_spread": {
        "iterations": None, "subset": None, "seeds": None, "margins": {},
        "quoted": {"source": None, "iterations": 64_000, "test_error_std": {"resnet20": 0.22}}}}})
    with pytest.raises(ValueError, match=r"study\.seed_spread\.quoted: test_error_std needs its source and iterations"):
        parse_params(params)


def test_several_seeds_measure_their_own_spread(tmp_path, store):
    runs = {"plain20": {0: (0.40, 0.30), 1: (0.40, 0.36)}, "plain56": {0: (0.50, 0.40), 1: (0.50, 0.38)}}
    claims = claims_of(tmp_path, runs, seeds=(0, 1))
    # C1 per seed: 40 - 30 = 10 and 38 - 36 = 2; mean 6 > spread 8? No: not shown.
    assert claims["C1"]["seed_margins"] == {"0": pytest.approx(10.0), "1": pytest.approx(2.0)}
    assert claims["C1"]["spread"] == pytest.approx(8.0) and claims["C1"]["spread_from"] == "2 seeds of this study"
    assert claims["C1"]["verdict"] == "not shown"
    assert claims["C2"]["margin"] == pytest.approx(10.0) and claims["C2"]["spread"] == pytest.approx(0.0)
    assert claims["C2"]["verdict"] == "shown"


def test_a_study_without_the_nets_a_claim_needs_marks_it_not_tested(tmp_path, store):
    claims = claims_of(tmp_path, {"resnet20": (0.35, 0.33)})
    assert {claims[c]["verdict"] for c in ("C1", "C2", "C3", "C4", "C5")} == {"not tested"}
    assert claims["C3"]["reason"] == "the study lacks a plain and a residual net of the same depth (ResNet-20)"
    assert claims["metrics"] == {"resnet20": pytest.approx(35.0)}  # no claim measured, no margin


def test_nets_the_paper_lacks_get_rows_without_its_numbers_and_pair_only_with_their_plain_twin(tmp_path, store):
    """ImageNet's ResNet-18 and ResNet-50 with the CIFAR stem beside the paper's CIFAR nets: no paper number for
    them, and plain-vs-residual pairs and depth trends never mix the two designs, though depths 18-56 interleave
    and 50 is both."""
    layout = Layout(tmp_path, "cifar10")
    errors = {"plain20": 0.10, "plain56": 0.13, "resnet20": 0.09, "plain18-cifar": 0.08, "resnet18-cifar": 0.06,
              "cifar-plain50": 0.12, "resnet50-cifar": 0.05}
    for variant, error in errors.items():
        write_run(layout, variant, 0, error, error / 2, layers=16)
    rows = {row["variant"]: row for row in write_report(cifar_params(tmp_path, variants=errors, seeds=(0,)), layout)}
    report = json.loads((layout.reports_dir / "study.json").read_text())
    markdown = (layout.reports_dir / "study.md").read_text()
    for variant in ("plain18-cifar", "resnet18-cifar", "resnet50-cifar"):
        assert rows[variant]["paper_top1_error"] is None and rows[variant]["difference_top1"] is None
    assert table_line(markdown, "ResNet-18 (CIFAR stem)")[6:] == ["-", "-", "-"]
    assert [(pair["plain"], pair["residual"]) for pair in report["plain_vs_residual"]] == [
        ("plain18-cifar", "resnet18-cifar"), ("plain20", "resnet20")]  # not cifar-plain50 with resnet50-cifar
    section = markdown[markdown.index("## Plain vs residual"):]
    assert table_line(section, "18")[1:6] == ["plain-18 (CIFAR stem)", "ResNet-18 (CIFAR stem)", "8.00", "6.00",
                                              "+2.00"]
    trends = {trend["family"]: (trend["deep"], trend["shallow"]) for trend in report["depth_trends"]}
    assert trends == {"plain": ("plain56", "plain20"), "residual": ("resnet50-cifar", "resnet18-cifar")}


def test_claims_compare_nets_of_one_design(tmp_path, store):
    """ImageNet's ResNet-18 with the CIFAR stem beside the paper's CIFAR nets: the claims judge the paper's
    nets (the design most of the study has), never plain-18 (CIFAR stem) against plain-56."""
    runs = {**FOUR_NETS, "plain18-cifar": (0.30, 0.28), "resnet18-cifar": (0.25, 0.24)}
    claims = claims_of(tmp_path, runs, layers=16)
    assert claims["C1"]["nets"] == ["plain56", "plain20"] and claims["C3"]["nets"] == ["plain56", "resnet56"]
