"""dvc.yaml's deps are what its stages run: each stage depends on its script, on pipeline/_stage.py, and on
exactly the package modules its script can import (the import closure, computed with grimp, which
import-linter is built on). A module a stage imports without declaring it would leave the stage's outputs
stale after a change there while `dvc status` says "up to date"; a module declared but never imported
would re-run the stage (for train: hours of GPU) for nothing.

What runs when editing a module only the report stage imports: tests/test_pipeline.py."""

import ast
import re
from pathlib import Path

import grimp
import pytest
import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGE = "resnet_repro"
SOURCES = REPOSITORY / "src"
COMMON_SCRIPT = "pipeline/_stage.py"  # run_stage: every stage script's main


def _module_file(module: str) -> Path:
    path = SOURCES / module.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _imports_of(file: Path, top_level_only: bool = False) -> set[str]:
    """The package modules that `file` names in its import statements (`from a.b import c` names a.b,
    and a.b.c where c is a module)."""
    tree = ast.parse(file.read_text())
    statements = tree.body if top_level_only else list(ast.walk(tree))
    modules = set()
    for node in statements:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(PACKAGE):
            assert node.module is not None
            modules.add(node.module)
            modules |= {f"{node.module}.{alias.name}" for alias in node.names
                        if _module_file(f"{node.module}.{alias.name}").exists()}
        elif isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names if alias.name.startswith(PACKAGE)}
    return modules


def import_closure(script: Path, graph: grimp.ImportGraph) -> set[Path]:
    """The source files of every package module that running `script` can import: its imports (and
    pipeline/_stage.py's), what those import, anywhere in their code, and so on. Importing a.b.c also runs
    a/__init__.py and a/b/__init__.py; of those, only the imports at their top level count, since a
    package's functions (resnet_repro.load_registered) run only when called."""
    imported = _imports_of(script) | _imports_of(REPOSITORY / COMMON_SCRIPT)
    closure: set[str] = set()
    while imported:
        module = imported.pop()
        if module in closure:
            continue
        closure.add(module)
        imported |= set(graph.find_modules_directly_imported_by(module))
        parents = [".".join(module.split(".")[:depth]) for depth in range(1, module.count(".") + 1)]
        for parent in parents:
            if parent not in closure:
                closure.add(parent)
                imported |= _imports_of(_module_file(parent), top_level_only=True)
    return {_module_file(module) for module in closure}


def declared_sources(deps: list[str]) -> set[Path]:
    """The package source files that a stage's deps cover: files, and every .py file under a folder."""
    covered = set()
    for dep in deps:
        path = REPOSITORY / dep
        if dep.startswith("src/"):
            covered |= set(path.rglob("*.py")) if path.is_dir() else {path}
    return covered


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPOSITORY / "dvc.yaml").read_text())["stages"]


def script_of(stage: dict) -> str:
    match = re.match(r"python (pipeline/\S+\.py)", stage["cmd"])
    assert match, f"dvc.yaml: a stage's cmd does not run a pipeline script: {stage['cmd']!r}"
    return match.group(1)


def undeclared_and_extra(stage: dict, graph: grimp.ImportGraph) -> tuple[set[str], set[str]]:
    needed = import_closure(REPOSITORY / script_of(stage), graph)
    declared = declared_sources(stage["deps"])
    relative = lambda paths: {str(path.relative_to(REPOSITORY)) for path in paths}  # noqa: E731
    return relative(needed - declared), relative(declared - needed)


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, cache_dir=None)


@pytest.mark.parametrize("name", list(stages()))
def test_each_stage_depends_on_its_script_and_exactly_the_modules_it_imports(name, graph):
    stage = stages()[name]
    assert script_of(stage) in stage["deps"] and COMMON_SCRIPT in stage["deps"], stage["deps"]
    undeclared, extra = undeclared_and_extra(stage, graph)
    assert not undeclared and not extra, (
        f"dvc.yaml: stage {name!r} imports {sorted(undeclared)} without a dep on them, and declares "
        f"{sorted(extra)} that it never imports")


def test_an_import_without_its_dep_is_found(graph):
    # The check can fail: the report stage without its dep on the module its script calls.
    stage = dict(stages()["report"])
    stage["deps"] = [dep for dep in stage["deps"] if dep != "src/resnet_repro/stages/report.py"]
    assert undeclared_and_extra(stage, graph) == ({"src/resnet_repro/stages/report.py"}, set())
    stage["deps"].append("src/resnet_repro/stages/train.py")  # and a module it never imports
    assert undeclared_and_extra(stage, graph)[1] == {"src/resnet_repro/stages/train.py"}


@pytest.mark.parametrize("name", list(stages()))
def test_no_dep_is_an_empty_file(name):
    # DVC warns "'<file>' is empty" for each empty dep, at every stage of every `dvc repro`: the main job's
    # output once carried 58 such lines, for the empty __init__.py of three packages.
    empty = [dep for dep in stages()[name]["deps"] if (REPOSITORY / dep).is_file() and not (REPOSITORY / dep).stat().st_size]
    assert not empty, f"dvc.yaml: stage {name!r} depends on empty files {empty}; give each a docstring"
