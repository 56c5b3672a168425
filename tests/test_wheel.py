"""The package as `pip install` gives it: an sdist built from this repository, a wheel built from that sdist
(as pip builds one from PyPI's sdist), installed in a fresh venv and used from a directory outside the checkout.

The wheel carries the files of every published net (setup.py copies them from results/), and nothing
else of results/. Installed, with no checkout and nothing to download, each net of `models.weights.PUBLISHED`
loads by name and scores real CIFAR-10 test images as the checkout's copy does; `resnet-repro predict`
prints the checkout's line without importing MLflow; a changed file is refused by name, and a missing one
is named with the net that needs it and where to put it.

The venv gets only the wheel; its dependencies (torch alone is gigabytes) are this venv's, found through a
.pth file that names this venv's site-packages as a plain path, so the .pth files there (among them the
checkout's editable install) are not read: `resnet_repro` can only come from the wheel, which the tests check.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from projects import run
from resnet_repro.cli import main
from resnet_repro.models import weights

pytestmark = pytest.mark.pipeline

REPOSITORY = Path(__file__).resolve().parents[1]
# What an sdist is made of (MANIFEST.in takes the published nets' files from results/).
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "src", "results")
PUBLISHED_IN_WHEEL = "resnet_repro/models/published"
# Images of the test set each published net scores, installed and in the checkout.
SCORED_IMAGES = 200

# Run by the installed package and by the checkout's: where resnet_repro and each net's files were read
# from, and each published net's predictions and error on the images and labels of the .npz in argv[1].
LOAD_AND_SCORE = """
import json, sys
import numpy as np, torch, resnet_repro
from resnet_repro.artifacts import load_published
from resnet_repro.models import build, weights
data = np.load(sys.argv[1])
images, labels = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).float(), data["labels"]
nets = {}
for ref, entry in weights.PUBLISHED.items():
    built = build(entry.model, weights=entry.name).eval()
    trained = load_published(ref)  # what `predict` uses: the net with its mean image
    with torch.no_grad():
        inputs = (images - trained.mean_image) / 255
        predicted = trained.module(inputs).argmax(1).numpy()
        assert (built(inputs).argmax(1).numpy() == predicted).all(), ref
    nets[ref] = {"files": str(entry.files()), "predicted": predicted.tolist(),
                 "error": float((predicted != labels).mean())}
print(json.dumps({"package": resnet_repro.__file__, "nets": nets}))
"""

# `predict` on published weights, then whether MLflow got imported (it need not be: it takes 4 s).
PREDICT_WITHOUT_MLFLOW = """
import json, sys
from resnet_repro.cli import main
status = main(["predict", "--model", "resnet20:cifar10", sys.argv[1]])
print(json.dumps({"status": status, "mlflow": "mlflow" in sys.modules}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy of what it is made of, so that its build/ and egg-info stay out of the checkout.
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPOSITORY / name).is_dir():
            shutil.copytree(REPOSITORY / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(REPOSITORY / name, source / name)
    # PEP 517's own hooks, as `python -m build` calls them; no build isolation: an isolated build would fetch
    # setuptools from the index, and this venv has it.
    build_sdist = "import setuptools.build_meta as backend, sys; print(backend.build_sdist(sys.argv[1]))"
    sdist = root / "sdist" / run([sys.executable, "-c", build_sdist, str(root / "sdist")], source).stdout.split()[-1]
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(root / "dist"), str(sdist)], root)
    [wheel] = (root / "dist").glob("resnet_repro-*.whl")
    return wheel


@pytest.fixture(scope="module")
def venv(wheel) -> Path:
    venv = wheel.parents[1] / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], venv.parent)
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index",
         "-q", str(wheel)], venv.parent)
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site_packages = Path(run([str(venv / "bin" / "python"), "-c", where], venv.parent).stdout.strip())
    dependencies = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site_packages / "_test_dependencies.pth").write_text("".join(f"{path}\n" for path in dependencies))
    return venv


@pytest.fixture
def work(cifar10, tmp_path) -> Path:
    """A directory outside the checkout with the first test image as a PNG, and the scored images as .npz."""
    work = tmp_path / "work"
    work.mkdir()
    Image.fromarray(cifar10.test_images[0]).save(work / "test-0.png")
    np.savez(work / "test.npz", images=cifar10.test_images[:SCORED_IMAGES], labels=cifar10.test_labels[:SCORED_IMAGES])
    return work


def installed(venv: Path, command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`command` (its first word a script of the venv) run from `cwd` as a user of the installed package would."""
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    return subprocess.run([str(venv / "bin" / command[0]), *command[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def installed_file(venv: Path, entry: weights.Weights, name: str) -> Path:
    [path] = venv.glob(f"lib/python*/site-packages/{PUBLISHED_IN_WHEEL}/{entry.folder}/{name}")
    return path


def test_the_wheel_carries_each_published_nets_files_and_nothing_else_of_results(wheel):
    with zipfile.ZipFile(wheel) as archive:
        carried = {name.removeprefix(f"{PUBLISHED_IN_WHEEL}/"): archive.read(name) for name in archive.namelist()
                   if name.startswith(f"{PUBLISHED_IN_WHEEL}/")}
    published = {f"{entry.folder}/{name}": (REPOSITORY / "results" / entry.folder / name).read_bytes()
                 for entry in weights.PUBLISHED.values() for name in weights.ALL_FILES}
    assert carried.keys() == published.keys()
    assert all(carried[name] == published[name] for name in published)
    # Five CIFAR nets: 10.3 MB of float32 tensors, which zip hardly shrinks.
    assert wheel.stat().st_size < 15e6, f"{wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB"


def test_each_published_net_loads_by_name_from_the_installed_wheel_and_scores_as_in_the_checkout(venv, work):
    assert REPOSITORY not in work.parents
    scored = installed(venv, ["python", "-c", LOAD_AND_SCORE, "test.npz"], work)
    assert scored.returncode == 0, scored.stderr
    from_wheel = json.loads(scored.stdout)
    from_checkout = json.loads(run([sys.executable, "-c", LOAD_AND_SCORE, str(work / "test.npz")], REPOSITORY).stdout)

    assert Path(from_wheel["package"]).is_relative_to(venv)  # the wheel's, not the checkout's
    assert from_wheel["nets"].keys() == from_checkout["nets"].keys() == weights.PUBLISHED.keys()
    for ref, net in from_wheel["nets"].items():
        entry = weights.PUBLISHED[ref]
        assert net["files"] == str(installed_file(venv, entry, "model.json").parent)
        assert from_checkout["nets"][ref]["files"] == str(REPOSITORY / "results" / entry.folder)
        assert net["predicted"] == from_checkout["nets"][ref]["predicted"], ref
        # 200 images: within 0.1 of the published error (three standard errors at the worst, 50 %).
        assert net["error"] == pytest.approx(entry.test_top1_error, abs=0.1), ref


def test_the_installed_predict_prints_the_checkouts_line_without_importing_mlflow(venv, work, capsys, monkeypatch):
    predicted = installed(venv, ["resnet-repro", "predict", "--model", "resnet20:cifar10", "test-0.png"], work)
    assert predicted.returncode == 0, predicted.stderr
    monkeypatch.chdir(work)
    assert main(["predict", "--model", "resnet20:cifar10", "test-0.png"]) == 0  # the checkout's answer
    assert predicted.stdout == capsys.readouterr().out  # path, class and probability as in the checkout
    assert predicted.stdout.startswith("test-0.png\t")

    reported = installed(venv, ["python", "-c", PREDICT_WITHOUT_MLFLOW, "test-0.png"], work)
    assert reported.returncode == 0, reported.stderr
    assert json.loads(reported.stdout.splitlines()[-1]) == {"status": 0, "mlflow": False}

    helped = installed(venv, ["python", "-m", "resnet_repro", "--help"], work)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: resnet-repro"), helped.stderr


def test_the_installed_package_refuses_a_changed_file_and_names_a_missing_one(venv, work):
    entry = weights.lookup("resnet20", "cifar10")
    load = "from resnet_repro.models import build; build('resnet20', weights='cifar10')"
    path = installed_file(venv, entry, "model.safetensors")
    published = path.read_bytes()
    try:
        changed = bytearray(published)
        changed[-1] ^= 0xFF  # the file still loads: only its sha256 tells
        path.write_bytes(bytes(changed))
        refused = installed(venv, ["python", "-c", load], work)
        assert refused.returncode != 0 and f"ValueError: {path}: sha256 is" in refused.stderr
        refused = installed(venv, ["resnet-repro", "predict", "--model", entry.ref, "test-0.png"], work)
        assert refused.returncode == 2 and f"resnet-repro predict: error: {path}: sha256 is" in refused.stderr

        path.unlink()
        missing = installed(venv, ["python", "-c", load], work)
        assert missing.returncode != 0
        assert (f"FileNotFoundError: {path}: missing; the published {entry.ref} needs it: put the repository's "
                f"results/{entry.folder}/model.safetensors there, or reinstall resnet-repro") in missing.stderr
    finally:
        path.write_bytes(published)  # the venv serves the module's other tests
