"""Fixtures shared by the test modules."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# No telemetry from the tools the tests drive (in this process and in the stages it starts).
for variable, value in {"DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
                        "NO_ALBUMENTATIONS_UPDATE": "1"}.items():
    os.environ.setdefault(variable, value)

from resnet_repro.data.cifar10 import Cifar10Arrays, load_archive  # noqa: E402 (after the environment)

# The tests run on the real CIFAR-10 archive, which sits in shared/ beside the checkout;
# CIFAR10_ARCHIVE points elsewhere.
DEFAULT_CIFAR10_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "cifar-10-python.tar.gz"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--reverse", action="store_true",
                     help="run the selected tests in reverse order (modules, and the tests within each): a test "
                          "that passes only after the ones before it in its file fails this way (docs/testing.md)")


@pytest.hookimpl(trylast=True)  # after pytest has grouped the tests by their module-scoped fixtures
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--reverse"):
        items.reverse()


@pytest.fixture(scope="session")
def cifar10_archive() -> Path:
    path = Path(os.environ.get("CIFAR10_ARCHIVE", DEFAULT_CIFAR10_ARCHIVE))
    if not path.is_file():
        pytest.fail(f"the real CIFAR-10 archive is not at {path}; set CIFAR10_ARCHIVE to its path")
    return path


@pytest.fixture(scope="session")
def cifar10(cifar10_archive: Path) -> Cifar10Arrays:
    """The whole archive, read once per session (a few seconds)."""
    return load_archive(cifar10_archive)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[str]:
    """One sqlite MLflow store per test module, as MLFLOW_TRACKING_URI: creating a database takes seconds."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(root)  # MLflow puts a new experiment's artifacts in ./mlruns
        yield uri
