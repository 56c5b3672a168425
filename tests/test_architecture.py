"""The layers of docs/architecture.md hold: no module imports from a layer above its own, and no package
has an import cycle (import-linter, with the contracts in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(config), "--no-cache"], capture_output=True,
                          text=True, cwd=PYPROJECT.parent)


def test_every_module_imports_only_from_the_layers_below_it():
    result = lint_imports(PYPROJECT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path):
    # The same contract with data placed below config: data's imports of config are then upward.
    text = PYPROJECT.read_text()
    swapped = text.replace('    "resnet_repro.data",\n    "resnet_repro.config | resnet_repro.artifacts",\n',
                           '    "resnet_repro.config | resnet_repro.artifacts",\n    "resnet_repro.data",\n')
    if swapped == text:
        pytest.fail("pyproject.toml's layers no longer list data directly above config and artifacts")
    config = tmp_path / "pyproject.toml"
    config.write_text(swapped)
    result = lint_imports(config)
    assert result.returncode != 0
    assert "resnet_repro.data is not allowed to import resnet_repro.config" in result.stdout
