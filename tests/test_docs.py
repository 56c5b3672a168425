"""The documentation a user reads: README.md, docs/*.md, data/README.md and results/*/README.md.

Every relative link resolves to a file of the repository and every #anchor to a heading of its page
(GitHub's rule for heading ids); no page reaches outside the repository by a relative path; the README
stays a five-minute read and cites no file outside the repository; docs/architecture.md's layer table
is the import contract of pyproject.toml and names every module; docs/studies.md lists every study;
docs/resources.md's CPU times per net are the published segments they cite.
"""

import re
import tomllib
from pathlib import Path
from urllib.parse import unquote

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
README = REPOSITORY / "README.md"
DOCS = REPOSITORY / "docs"
PACKAGE = REPOSITORY / "src" / "resnet_repro"


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md")), REPOSITORY / "data" / "README.md",
            *sorted((REPOSITORY / "results").glob("*/README.md"))]


FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
# [text](target "title") and ![alt](target); the text may hold one level of brackets.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]*)\"", re.IGNORECASE)
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
EXTERNAL = re.compile(r"^([a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)


def prose(text: str) -> str:
    """The page without its fenced code blocks: what GitHub renders as Markdown."""
    return FENCE.sub("", text)


def link_targets(text: str) -> list[str]:
    """Every link and image target of a page, outside code blocks and code spans."""
    rendered = CODE_SPAN.sub("", prose(text))
    targets = INLINE_LINK.findall(rendered) + REFERENCE_DEFINITION.findall(rendered) + HTML_LINK.findall(rendered)
    return [target.strip("<>") for target in targets]


def slug(heading: str) -> str:
    """GitHub's id for a heading: its text, lowercased, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The ids of a page's headings, with GitHub's -1, -2 ... for repeated ones."""
    seen: dict[str, int] = {}
    ids = set()
    for _, heading in HEADING.findall(prose(page.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        ids.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return ids


def link_problems(page: Path, root: Path = REPOSITORY) -> list[str]:
    """What is wrong with the relative links of `page`: each as 'page: target: why'."""
    problems = []
    where = page.relative_to(root)
    for target in link_targets(page.read_text()):
        if EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not destination.is_relative_to(root):
            problems.append(f"{where}: {target}: leads outside the repository")
        elif not destination.exists():
            problems.append(f"{where}: {target}: no such file")
        elif anchor:
            if destination.suffix != ".md" or not destination.is_file():
                problems.append(f"{where}: {target}: an anchor into something that is not a Markdown page")
            elif unquote(anchor) not in anchors(destination):
                problems.append(f"{where}: {target}: no heading with that id in {destination.relative_to(root)} "
                                f"(it has: {', '.join(sorted(anchors(destination)))})")
    return problems


def test_every_relative_link_and_anchor_resolves():
    problems = [problem for page in pages() for problem in link_problems(page)]
    assert not problems, "\n".join(problems)


def test_the_link_check_finds_broken_links_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## The paper's claims, judged\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text("# A page\n\n## Section one\n\n"
                    "[fine](other.md#the-papers-claims-judged) [fine too](#section-one) "
                    "![figure](other.md) [web](https://example.org/x.md) `[in code](missing.md)`\n\n"
                    "```bash\n[in a block](missing.md)\n```\n\n"
                    "[gone](missing.md) [bad anchor](other.md#no-such-heading) [here](#section-two) "
                    "[outside](../../shared/data/README.md)\n")
    problems = link_problems(page, root=tmp_path)
    assert [problem.split(": ")[1] for problem in problems] == [
        "missing.md", "other.md#no-such-heading", "#section-two", "../../shared/data/README.md"]
    assert "no such file" in problems[0] and "leads outside the repository" in problems[3]


@pytest.mark.parametrize(("heading", "expected"), [
    ("The paper's claims, judged", "the-papers-claims-judged"),
    ("Training a study's nets at once, on one multi-GPU node or a cluster (Ray)",
     "training-a-studys-nets-at-once-on-one-multi-gpu-node-or-a-cluster-ray"),
    ("`resnet-repro bench train`", "resnet-repro-bench-train"),
    ("params.yaml is the whole truth", "paramsyaml-is-the-whole-truth"),
    ("ResNet-20 at full length", "resnet-20-at-full-length"),
    ("A [linked](x.md) heading_name", "a-linked-heading_name"),
])
def test_heading_ids_follow_githubs_rule(heading, expected):
    assert slug(heading) == expected


def test_readme_is_a_five_minute_read():
    lines = len(README.read_text().splitlines())
    assert lines <= 220, f"README.md has {lines} lines; move detail into a page of docs/ and link it"


def test_readme_and_docs_cite_no_file_outside_the_repository():
    for page in [README, *DOCS.glob("*.md")]:
        assert "PAPER.md" not in page.read_text(), (
            f"{page.relative_to(REPOSITORY)} cites PAPER.md, which is not in the repository")


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def _table_rows(section: str) -> list[list[str]]:
    """The cells of a Markdown table's body rows ('\\|' inside a cell does not split it)."""
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [[cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def test_architecture_layer_table_is_the_import_contract_and_names_every_module():
    layers_section = _section((DOCS / "architecture.md").read_text(), "## Layers")
    rows = _table_rows(layers_section)
    contract = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    documented = [{"resnet_repro." + name.strip(" `").removesuffix(".py").removesuffix("/")
                   for name in layer.split("|")} for layer, _ in rows]
    assert documented == [{name.strip() for name in layer.split("|")} for layer in contract["layers"]], (
        "docs/architecture.md's layer table differs from the layers contract of pyproject.toml")
    owner = {name.strip(" `"): owns for layer, owns in rows for name in layer.split("|")}
    unnamed = []
    for module in sorted(PACKAGE.rglob("*.py")):
        if module.name == "__init__.py":
            continue
        package = module.parent.relative_to(PACKAGE)
        if package == Path("."):
            named = f"`{module.name}`" in layers_section
        else:
            named = f"`{module.name}`" in owner.get(f"{package.as_posix()}/", "")
        if not named:
            unnamed.append(module.relative_to(PACKAGE).as_posix())
    assert not unnamed, f"docs/architecture.md's layer table does not name: {', '.join(unnamed)}"


def test_studies_page_lists_every_study():
    from resnet_repro.studies import STUDIES

    rows = _table_rows(_section((DOCS / "studies.md").read_text(), "## Studies"))
    listed = [match.group(1) for row in rows if (match := re.match(r"`([^`]+)`", row[0]))]
    assert listed == list(STUDIES), "docs/studies.md's table of studies differs from resnet_repro/studies.py"


def test_testing_page_covers_every_test_module():
    # A module missing from docs/testing.md's table is a tier nobody reading the page knows to run.
    table = (DOCS / "testing.md").read_text().split("## What each module covers", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(test_\w+\.py)`", table))
    modules = {path.name for path in (REPOSITORY / "tests").glob("test_*.py")}
    assert modules - listed == set(), f"docs/testing.md's module table leaves out {sorted(modules - listed)}"
    assert listed - modules == set(), f"docs/testing.md's module table names {sorted(listed - modules)}, not in tests/"


def test_resources_page_cpu_times_are_the_published_segments():
    """docs/resources.md's seconds per 1,000 iterations are the quiet ("alone") segments of the published
    8,000-iteration nets (results/cifar10-figure6-8k/<net>/segments.tsv), and its 64k times follow from them."""
    section = _section((DOCS / "resources.md").read_text(), "## Time on a CPU")
    rows = _table_rows(section[:section.index("\n### ")])  # the first table: the nets' rates
    folders = {"plain-20": "plain20", "plain-56": "plain56", "ResNet-20": "resnet20", "ResNet-56": "resnet56"}
    assert [row[0] for row in rows] == list(folders)
    for name, rate_cell, full_length in rows:
        lines = (REPOSITORY / "results" / "cifar10-figure6-8k" / folders[name] / "segments.tsv").read_text().splitlines()
        header = lines[0].split("\t")
        [alone] = [dict(zip(header, line.split("\t"))) for line in lines[1:] if line.split("\t")[0].endswith(", alone")]
        seconds, iterations = int(alone["seconds"]), int(alone["last_iteration"]) - int(alone["first_iteration"])
        assert rate_cell == f"{1000 * seconds / iterations:.0f} ({seconds:,} s for {iterations:,})", (name, rate_cell)
        assert full_length == f"{64 * seconds / iterations / 3.6:.1f} h (estimate)", (name, full_length)
