"""Published weights as users load them: `build(name, weights=...)`, `resnet-repro predict --model MODEL:WEIGHTS`.

A randomly initialised resnet20 is published here the way `scripts/publish_result.py` publishes a trained
one (a results folder, its entry in `models.weights.PUBLISHED`), and read as an installed package reads
the copy its wheel carries: every file checked by sha256, a changed one refused and a missing one named
with where it belongs. The nets the project itself published are checked against their folders at the
end (and scored in tests/test_published.py); tests/test_wheel.py loads each of them from an installed wheel.
"""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_repro import studies
from resnet_repro.artifacts import save_trained
from resnet_repro.cli import main
from resnet_repro.io import file_sha256
from resnet_repro.models import build, count_params, weights

REPOSITORY = Path(__file__).resolve().parents[1]
FOLDER = "cifar10-resnet20-test"


@pytest.fixture
def results(cifar10, tmp_path) -> Path:
    """A results/ folder publishing a random resnet20 (seed 0) as it publishes a trained one."""
    torch.manual_seed(0)
    net = build("resnet20", num_classes=10).eval()
    mean_image = torch.from_numpy(cifar10.train_images[:1000].mean(axis=0, dtype=np.float32)).permute(2, 0, 1)
    save_trained(tmp_path / "results" / FOLDER, net, mean_image.contiguous(),
                 {"arch": "resnet20", "num_classes": 10, "class_names": cifar10.class_names, "input_size": 32,
                  "dataset": "cifar10", "seed": 0, "options": {"shortcut": "A"}})
    return tmp_path / "results"


@pytest.fixture
def published(results, monkeypatch) -> weights.Weights:
    """Its entry, read as an installed package reads the files its wheel carries."""
    entry = weights.Weights("resnet20", "test", FOLDER, recipe="cifar-paper", commit="0123456789ab",
                            test_top1_error=0.9, parameters=269722, sha256=file_sha256(results / FOLDER / "model.json"))
    monkeypatch.setitem(weights.PUBLISHED, entry.ref, entry)
    monkeypatch.setattr(weights, "RESULTS", results)
    monkeypatch.setattr(weights, "CHECKOUT", False)
    return entry


def expected_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build("resnet20", num_classes=10).state_dict()


def assert_same_tensors(loaded: dict[str, torch.Tensor]) -> None:
    expected = expected_state_dict()
    assert loaded.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(loaded[key], tensor), key


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one bit of the last tensor: the file still loads, so only the sha256 can tell
    path.write_bytes(bytes(data))


def test_build_loads_the_published_tensors_by_name(published):
    assert_same_tensors(build("resnet20", weights="test").state_dict())
    assert published.files() == weights.RESULTS / FOLDER


def test_predict_uses_published_weights_without_an_mlflow_store(published, cifar10, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = []
    for index in range(3):
        paths.append(tmp_path / f"test-{index}.png")
        Image.fromarray(cifar10.test_images[index]).save(paths[-1])

    assert main(["predict", "--model", published.ref, *map(str, paths)]) == 0

    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [line[0] for line in lines] == [str(path) for path in paths]
    assert all(line[1] in cifar10.class_names and 0 < float(line[2]) <= 1 for line in lines)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


# Runs `predict` on published weights in a fresh process, then reports whether MLflow got imported.
_PREDICT_PROCESS = """
import json, sys
from resnet_repro.cli import main
status = main(["predict", "--model", "resnet20:cifar10", sys.argv[1]])
print(json.dumps({"status": status, "mlflow": "mlflow" in sys.modules}))
"""


def test_predict_on_published_weights_does_not_import_mlflow(cifar10, tmp_path):
    # MLflow takes 4 s to import, which a published net, loaded from its files, has no use for.
    image = tmp_path / "test-0.png"
    Image.fromarray(cifar10.test_images[0]).save(image)
    result = subprocess.run([sys.executable, "-c", _PREDICT_PROCESS, str(image)], cwd=tmp_path, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
    *printed, report = result.stdout.splitlines()
    assert printed[0].startswith(f"{image}\t") and json.loads(report) == {"status": 0, "mlflow": False}


@pytest.mark.parametrize("file_name", weights.ALL_FILES)
def test_a_changed_file_is_refused_with_its_name(published, results, file_name, capsys):
    path = results / FOLDER / file_name
    flip_last_byte(path)

    expected_by = "the published resnet20:test" if file_name == "model.json" else f"{results / FOLDER}/model.json"
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: sha256 is [0-9a-f]{{64}}, but "
                                         f"{re.escape(expected_by)} expects [0-9a-f]{{64}}; the file was changed"):
        build("resnet20", weights="test")
    assert main(["predict", "--model", published.ref, "any.png"]) == 2
    assert f"{path}: sha256 is" in capsys.readouterr().err


@pytest.mark.parametrize("file_name", weights.ALL_FILES)
def test_a_missing_file_names_the_net_and_where_to_put_it(published, results, file_name, monkeypatch, capsys):
    path = results / FOLDER / file_name
    path.unlink()

    with pytest.raises(FileNotFoundError) as missing:
        build("resnet20", weights="test")
    assert str(missing.value) == (f"{path}: missing; the published resnet20:test needs it: put the repository's "
                                  f"results/{FOLDER}/{file_name} there, or reinstall resnet-repro (its wheel "
                                  "carries the file)")
    assert main(["predict", "--model", published.ref, "any.png"]) == 2
    assert f"resnet-repro predict: error: {path}: missing; the published resnet20:test" in capsys.readouterr().err

    monkeypatch.setattr(weights, "CHECKOUT", True)  # in a checkout the file's place is results/ itself
    with pytest.raises(FileNotFoundError, match=re.escape(f"the repository publishes it there (`git checkout -- {path}`")):
        build("resnet20", weights="test")


def test_unknown_weights_are_refused_with_the_list_of_published_ones(published, capsys):
    with pytest.raises(LookupError, match=r"no published weights 'imagenet' for resnet20; .*resnet20:test"):
        build("resnet20", weights="imagenet")

    assert main(["predict", "--model", "resnet20:imagenet", "any.png"]) == 2
    assert "resnet20:test" in capsys.readouterr().err


def test_an_entry_listed_twice_is_refused(published):
    with pytest.raises(ValueError, match="published weights resnet20:test are listed twice"):
        weights._index(published, published)


# --- the nets this project published -----------------------------------------------------------------------

def publish_result_script():
    spec = importlib.util.spec_from_file_location("publish_result", REPOSITORY / "scripts" / "publish_result.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("entry", weights.PUBLISHED.values(), ids=lambda entry: entry.ref)
def test_each_published_entry_is_the_line_publish_result_prints_for_its_folder(entry):
    """The entry agrees with its results folder, and is word for word what scripts/publish_result.py prints."""
    folder = REPOSITORY / "results" / entry.folder
    assert entry.files() == folder  # a checkout serves its own folder, every sha256 as pinned
    found = re.search(r"^\| commit \| `([0-9a-f]{40})` \|$", (folder / "README.md").read_text(), re.MULTILINE)
    assert found, f"{folder}/README.md names no commit"
    commit = found[1]
    assert entry.recipe in studies.STUDIES and entry.parameters == count_params(build(entry.model))
    line = publish_result_script().weights_entry(entry.model, entry.name, entry.folder, entry.recipe, commit[:12],
                                                 folder)
    assert line in Path(weights.__file__).read_text()
    assert eval(line.strip().rstrip(","), vars(weights)) == entry
    assert entry.test_top1_error == json.loads((folder / "eval.json").read_text())["test_top1_error"]


def test_the_folders_a_wheel_carries_are_the_published_entries():
    # setup.py puts every folder of results/ that holds a model.json into the wheel: each must be an entry
    # (or the wheel carries weights nothing loads), and each entry's folder must be there (or it cannot load).
    carried = {str(path.parent.relative_to(REPOSITORY / "results")) for path in REPOSITORY.glob("results/**/model.json")}
    assert carried == {entry.folder for entry in weights.PUBLISHED.values()}


def test_the_build_copies_the_files_models_weights_names():
    # setup.py and MANIFEST.in run before the package can be imported, so they spell the net's files again;
    # models/weights.py is their owner, and a renamed file would otherwise leave wheels without weights.
    source = (REPOSITORY / "setup.py").read_text()
    net_files = re.search(r"^NET_FILES = \((.*?)\)$", source, re.MULTILINE)
    assert net_files, "setup.py no longer names NET_FILES"
    assert set(re.findall(r'"([^"]+)"', net_files.group(1))) == set(weights.ALL_FILES)
    manifest = (REPOSITORY / "MANIFEST.in").read_text().split("recursive-include results", 1)[1].split()
    assert set(manifest) == set(weights.ALL_FILES)
