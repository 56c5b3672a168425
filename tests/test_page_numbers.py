"""The numbers README.md and docs/ quote are those of the files they come from.

- A number written as a link to an `eval.json` (`[16.08](results/.../eval.json)`) is that file's top-1
  test error in %, and one linked to a `study.json` in a claims table's row is that claim's margin.
- The paper's column of the README's results table is `report/paper.py` (PAPER.md's Table 6, Figure 6).
- The main job's run the README quotes (its time, its commit and the output block under it) is the
  row of docs/measurements.md with that commit; the same-seed range it states is that table's.
- The seed spreads the README states are the ones `cifar-degradation-cpu` carries, and its three-seed
  means are those of docs/studies.md's table (the run at the commit it names).
- The error docs/weights.md shows for an unknown name is the one the code raises.
"""

import json
import re
from pathlib import Path

import pytest

from resnet_repro.models import build
from resnet_repro.report.paper import CIFAR10
from resnet_repro.studies import lookup

REPOSITORY = Path(__file__).resolve().parents[1]
README = REPOSITORY / "README.md"
DOCS = REPOSITORY / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

LINKED_NUMBER = re.compile(r"\[\**([+-]?\d+(?:\.\d+)?)\**\]\(([^)\s]+\.json)\)")


def table_rows(text: str) -> list[list[str]]:
    """Every row of every Markdown table of `text`, as its cells (separator rows left out)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|[\s:|-]+\|", line.strip()):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def linked_numbers(page: Path) -> list[tuple[str, float, Path, list[str] | None]]:
    """(the number as written, its value, the file it links, the cells of its table row or None)."""
    found = []
    for line in page.read_text().splitlines():
        row = table_rows(line)[0] if table_rows(line) else None
        for written, target in LINKED_NUMBER.findall(line):
            found.append((written, float(written), (page.parent / target).resolve(), row))
    return found


def test_the_pages_link_their_numbers_to_the_files():
    # The README's results and claims tables link every measured number; a page losing them fails here.
    assert len([n for n in linked_numbers(README) if n[2].name == "eval.json"]) >= 5
    assert len([n for n in linked_numbers(README) if n[2].name == "study.json"]) >= 5


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_a_number_linked_to_a_json_file_is_that_files_number(page):
    for written, value, target, row in linked_numbers(page):
        assert target.is_file(), f"{page.name}: {written} links {target}, which does not exist"
        contents = json.loads(target.read_text())
        decimals = len(written.partition(".")[2])
        if target.name == "eval.json":
            expected = round(100 * contents["test_top1_error"], decimals)
            what = "top-1 test error (%)"
        elif target.name == "study.json":
            assert row is not None, f"{page.name}: {written} links a study.json outside a claims table"
            claim = row[0].split()[0]
            margins = {c["id"]: c["margin"] for c in contents["claims"]}
            assert claim in margins, f"{page.name}: row {row[0]!r} names no claim of {target}"
            expected = round(margins[claim], decimals)
            what = f"{claim}'s margin"
        else:
            pytest.fail(f"{page.name}: {written} links {target.name}, which this test cannot read")
        assert value == expected, f"{page.name}: {written} is not {target}'s {what}, {expected}"


def test_the_papers_column_is_the_papers():
    rows = [row for row in table_rows(README.read_text()) if re.fullmatch(r"(plain|ResNet)-\d+", row[0])]
    assert len(rows) == 4
    for row in rows:
        depth = int(row[0].split("-")[1])
        paper = CIFAR10[depth].resnet_test_error if row[0].startswith("ResNet") else CIFAR10[depth].plain_test_error
        written = re.search(r"\d+(\.\d+)?", row[-1])
        assert written and float(written.group()) == paper, (row, paper)


def main_job_rows() -> dict[str, list[str]]:
    """docs/measurements.md's runs of the main job, by commit."""
    section = (DOCS / "measurements.md").read_text().split("### The main job", 1)[1].split("\n#", 1)[0]
    rows = [row for row in table_rows(section) if row[0] != "machine"]
    return {row[-1].strip("`"): row for row in rows}


def test_the_main_job_run_the_readme_quotes_is_one_run_of_measurements_md():
    text = README.read_text()
    quoted = re.search(r"(?<!after )command 1 took (\d+ min \d+ s)\s+\(commit `([0-9a-f]{7,})`", text)
    assert quoted, "README.md no longer says which run of the main job it quotes (time and commit)"
    time, commit = quoted.groups()
    rows = main_job_rows()
    assert commit in rows, f"README.md quotes the main job at {commit}; docs/measurements.md has no such row"
    row = rows[commit]
    assert row[1] == time, f"README.md says {time}, docs/measurements.md {row[1]} for commit {commit}"
    # The output block under it is that run's: its `dvc metrics show` row holds the same four errors.
    block = text[quoted.end():].split("```", 2)[1]
    header, values = [line.split() for line in block.splitlines() if line.startswith(("Path", "reports/"))]
    measured = dict(zip(header[1:], values[1:]))
    errors = [float(e) for e in re.findall(r"\d+\.\d+", row[4])[:4]]
    assert [float(measured[net]) for net in ("plain20", "plain56", "resnet20", "resnet56")] == errors


def test_the_same_seed_range_the_readme_states_is_measurements_mds():
    rows = list(main_job_rows().values())
    errors = [[float(e) for e in re.findall(r"\d+\.\d+", row[4])[:4]] for row in rows]
    widest = max(max(net) - min(net) for net in zip(*errors))
    stated = re.search(r"by up to (\d+(?:\.\d+)?) points for a net", README.read_text())
    assert stated, "README.md no longer states how far the same seed's errors move"
    assert float(stated.group(1)) == round(widest, 1), f"the rows of docs/measurements.md give {widest:.2f}"


def test_the_seed_spreads_and_three_seed_means_are_the_studys():
    text = README.read_text()
    spread = lookup("cifar-degradation-cpu").settings["study.seed_spread"]["margins"]
    stated = re.search(r"4\.77 points between seeds for C1.*?for C5", text, re.DOTALL)
    assert stated, "README.md no longer states the main job's seed spreads"
    numbers = [float(n) for n in re.findall(r"\d+\.\d+", stated.group())]
    assert numbers == [spread[claim] for claim in ("C1", "C2", "C3", "C4", "C5")]

    studies = (DOCS / "studies.md").read_text().split("### The main job judged over three seeds", 1)[1]
    means = {row[0].split()[0]: (row[2], row[3]) for row in table_rows(studies.split("\n#", 1)[0])
             if re.fullmatch(r"C\d", row[0].split()[0])}
    assert len(means) == 5
    for row in table_rows(text):
        if re.fullmatch(r"C\d", row[0].split()[0]) and len(row) == 3:
            mean, spread_written = means[row[0].split()[0]]
            assert mean in row[2], f"README.md's {row[0]!r}: the mean margin of docs/studies.md is {mean}"
            assert spread_written == f"{spread[row[0].split()[0]]:.2f}"


def test_the_error_docs_weights_shows_for_an_unknown_name_is_the_codes():
    shown = re.search(r"`(no published weights 'imagenet' for resnet20;.*?)`", (DOCS / "weights.md").read_text(),
                      re.DOTALL)
    assert shown, "docs/weights.md no longer shows the error of an unknown name"
    with pytest.raises(LookupError) as error:
        build("resnet20", weights="imagenet")
    assert " ".join(shown.group(1).split()) == str(error.value)
