"""The package as `pip install` gives it: a wheel built from this repository, installed in a fresh venv and
used from a directory outside the checkout.

The published ResNet-20 downloads from results/ served over HTTP (as the repository's raw files will serve
it) into torch.hub's cache, its sha256 checked; `build(..., weights=)` and `resnet-repro predict` give what
they give in the checkout, on a real CIFAR-10 test image; a changed cached file is refused by name, and an
unreachable URL says where to put the files by hand.

The venv gets only the wheel; its dependencies (torch alone is gigabytes) are this venv's, found through a
.pth file that names this venv's site-packages as a plain path, so the .pth files there (among them the
checkout's editable install) are not read: `resnet_repro` can only come from the wheel, which the tests check.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from local_servers import static_files
from projects import run
from resnet_repro.cli import main
from resnet_repro.models import build, weights
from resnet_repro.tracking.server import free_port

pytestmark = pytest.mark.pipeline

REPOSITORY = Path(__file__).resolve().parents[1]
PUBLISHED = weights.lookup("resnet20", "cifar10")

# In the installed venv: the module resnet_repro was imported from, and a digest of the published tensors.
BUILD_AND_DIGEST = """
import hashlib, json, resnet_repro
from resnet_repro.models import build
state = build("resnet20", weights="cifar10").state_dict()
digest = hashlib.sha256(b"".join(key.encode() + state[key].numpy().tobytes() for key in sorted(state)))
print(json.dumps({"package": resnet_repro.__file__, "digest": digest.hexdigest()}))
"""


def state_digest(state: dict) -> str:
    return hashlib.sha256(b"".join(key.encode() + state[key].numpy().tobytes() for key in sorted(state))).hexdigest()


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    # The wheel is built from a copy of what it is made of, so that its build/ and egg-info stay out of the checkout.
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPOSITORY / name, source / name)
    shutil.copytree(REPOSITORY / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # No build isolation: an isolated build would fetch setuptools from the index; this venv has it.
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(root / "dist"), str(source)], root)
    [wheel] = (root / "dist").glob("resnet_repro-*.whl")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root)
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index",
         "-q", str(wheel)], root)
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site_packages = Path(run([str(venv / "bin" / "python"), "-c", where], root).stdout.strip())
    dependencies = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site_packages / "_test_dependencies.pth").write_text("".join(f"{path}\n" for path in dependencies))
    return venv


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with static_files(REPOSITORY / "results") as (url, _):
        yield url


@pytest.fixture
def image(cifar10, tmp_path) -> Path:
    path = tmp_path / "work" / "test-0.png"
    path.parent.mkdir()
    Image.fromarray(cifar10.test_images[0]).save(path)
    return path


def installed(venv: Path, command: list[str], cwd: Path, torch_home: Path,
              base_url: str) -> subprocess.CompletedProcess:
    """`command` (its first word a script of the venv) run from `cwd` as a user of the installed package would."""
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env.update(TORCH_HOME=str(torch_home), **{weights.BASE_URL_ENV: base_url})
    return subprocess.run([str(venv / "bin" / command[0]), *command[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def test_the_installed_wheel_downloads_checks_and_predicts_as_the_checkout(venv, base_url, image, tmp_path, capsys,
                                                                          monkeypatch):
    work, torch_home = image.parent, tmp_path / "torch"
    assert REPOSITORY not in work.parents

    built = installed(venv, ["python", "-c", BUILD_AND_DIGEST], work, torch_home, base_url)
    assert built.returncode == 0, built.stderr
    printed = json.loads(built.stdout)
    assert Path(printed["package"]).is_relative_to(venv)  # the wheel's, not the checkout's
    assert printed["digest"] == state_digest(build("resnet20", weights="cifar10").state_dict())
    cache = torch_home / "hub" / "checkpoints" / "resnet_repro" / f"{PUBLISHED.folder}-{PUBLISHED.sha256[:8]}"
    assert f'Downloading: "{base_url}/{PUBLISHED.folder}/model.safetensors" to {cache}/model.safetensors' \
        in built.stderr
    assert sorted(path.name for path in cache.iterdir()) == sorted(weights.ALL_FILES)

    predicted = installed(venv, ["resnet-repro", "predict", "--model", "resnet20:cifar10", image.name], work,
                          torch_home, base_url)
    assert predicted.returncode == 0, predicted.stderr
    monkeypatch.chdir(work)
    assert main(["predict", "--model", "resnet20:cifar10", image.name]) == 0  # the checkout's answer
    assert predicted.stdout == capsys.readouterr().out  # path, class and probability as in the checkout
    assert predicted.stdout.startswith("test-0.png\t") and "Downloading" not in predicted.stderr  # from the cache

    helped = installed(venv, ["python", "-m", "resnet_repro", "--help"], work, torch_home, base_url)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: resnet-repro"), helped.stderr


def test_the_installed_wheel_refuses_a_changed_cached_file_and_names_an_unreachable_url(venv, base_url, image,
                                                                                       tmp_path):
    work, torch_home = image.parent, tmp_path / "torch"
    assert installed(venv, ["python", "-c", BUILD_AND_DIGEST], work, torch_home, base_url).returncode == 0
    path = torch_home / "hub" / "checkpoints" / "resnet_repro" / f"{PUBLISHED.folder}-{PUBLISHED.sha256[:8]}" / \
        "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the file still loads: only its sha256 tells
    path.write_bytes(bytes(data))

    refused = installed(venv, ["python", "-c", BUILD_AND_DIGEST], work, torch_home, base_url)
    assert refused.returncode != 0 and f"ValueError: {path}: sha256 is" in refused.stderr
    refused = installed(venv, ["python", "-m", "resnet_repro", "predict", "--model", "resnet20:cifar10", image.name],
                        work, torch_home, base_url)
    assert refused.returncode == 2 and f"resnet-repro predict: error: {path}: sha256 is" in refused.stderr
    assert path.read_bytes() == data

    unreachable = f"http://127.0.0.1:{free_port()}"
    empty_cache = tmp_path / "empty"
    failed = installed(venv, ["python", "-c", BUILD_AND_DIGEST], work, empty_cache, unreachable)
    assert failed.returncode != 0
    assert f"{unreachable}/{PUBLISHED.folder}/model.json: cannot download it" in failed.stderr
    assert f"into {empty_cache}/hub/checkpoints/resnet_repro/{PUBLISHED.folder}-{PUBLISHED.sha256[:8]} by hand" \
        in failed.stderr
