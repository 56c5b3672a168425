"""Published weights as users load them: `build(name, weights=...)`, `resnet-repro predict --model MODEL:WEIGHTS`.

A randomly initialised resnet20 is published here the way `scripts/publish_result.py` publishes a trained
one (a results folder, its entry in `models.weights.PUBLISHED`), and served by a local HTTP server as the
repository's raw files would serve it. Outside a checkout the files download into torch.hub's cache
($TORCH_HOME) and are checked there; in a checkout they are read from results/. The nets the project
itself published are checked against their folders at the end (and scored in tests/test_published.py);
tests/test_wheel.py does the same from an installed wheel.
"""

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from local_servers import static_files
from resnet_repro import studies
from resnet_repro.artifacts import save_trained
from resnet_repro.cli import main
from resnet_repro.io import file_sha256
from resnet_repro.models import build, count_params, weights
from resnet_repro.tracking.server import free_port

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
def published(results, tmp_path, monkeypatch) -> weights.Weights:
    """Its entry, as an installed package sees it: no checkout, torch.hub's cache in $TORCH_HOME (empty)."""
    entry = weights.Weights("resnet20", "test", FOLDER, recipe="cifar-paper", commit="0123456789ab",
                            test_top1_error=0.9, parameters=269722, sha256=file_sha256(results / FOLDER / "model.json"))
    monkeypatch.setitem(weights.PUBLISHED, entry.ref, entry)
    monkeypatch.setattr(weights, "CHECKOUT_RESULTS", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return entry


@pytest.fixture
def server(results, monkeypatch) -> Iterator[list[str]]:
    """results/ served over HTTP as the weights' base URL; the paths requested."""
    with static_files(results) as (url, requests):
        monkeypatch.setenv(weights.BASE_URL_ENV, url)
        yield requests


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


def test_build_downloads_into_torch_hubs_cache_once_then_works_offline(published, server, tmp_path, monkeypatch):
    assert_same_tensors(build("resnet20", weights="test").state_dict())

    cache = tmp_path / "torch" / "hub" / "checkpoints" / "resnet_repro" / f"{FOLDER}-{published.sha256[:8]}"
    assert published.cache_dir == cache
    assert sorted(path.name for path in cache.iterdir()) == sorted(weights.ALL_FILES)  # no partial file left
    assert sorted(server) == sorted(f"/{FOLDER}/{name}" for name in weights.ALL_FILES)
    # Offline: the base URL now refuses connections; the cache serves, and nothing is asked of the server.
    monkeypatch.setenv(weights.BASE_URL_ENV, f"http://127.0.0.1:{free_port()}")
    requests_before = len(server)
    assert_same_tensors(build("resnet20", weights="test").state_dict())
    assert len(server) == requests_before


def test_predict_downloads_and_uses_published_weights_without_an_mlflow_store(published, server, cifar10, tmp_path,
                                                                              monkeypatch, capsys):
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


@pytest.mark.parametrize("file_name", weights.ALL_FILES)
def test_a_changed_cached_file_is_refused_with_its_name_and_kept(published, server, file_name, capsys):
    build("resnet20", weights="test")
    path = published.cache_dir / file_name
    flip_last_byte(path)
    changed = path.read_bytes()

    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: sha256 is [0-9a-f]{{64}}, but .* expects"):
        build("resnet20", weights="test")
    assert main(["predict", "--model", published.ref, "any.png"]) == 2
    assert f"{path}: sha256 is" in capsys.readouterr().err
    assert path.read_bytes() == changed  # refused, not downloaded over: the user decides


def test_a_server_with_other_files_is_refused_and_nothing_is_kept(published, results, server):
    flip_last_byte(results / FOLDER / "model.safetensors")  # model.json, which pins it, is the published one

    with pytest.raises(ValueError, match=rf"/{FOLDER}/model.safetensors: invalid hash value .*; the file was not kept"):
        build("resnet20", weights="test")
    assert sorted(path.name for path in published.cache_dir.iterdir()) == ["model.json"]


def test_an_unreachable_url_names_it_and_where_to_put_the_files_by_hand(published, tmp_path, monkeypatch, capsys):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv(weights.BASE_URL_ENV, url)

    with pytest.raises(ConnectionError) as refused:
        build("resnet20", weights="test")
    message = str(refused.value)
    assert message.startswith(f"{url}/{FOLDER}/model.json: cannot download it (")
    files = "model.json, model.safetensors, preprocess.safetensors"
    assert f"results/{FOLDER}/ ({files}) into {published.cache_dir} by hand" in message
    assert list(published.cache_dir.iterdir()) == []
    assert main(["predict", "--model", published.ref, "any.png"]) == 2
    assert f"{url}/{FOLDER}/model.json: cannot download it" in capsys.readouterr().err


def test_a_checkout_reads_its_results_folder_offline_and_refuses_a_changed_file(published, results, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setattr(weights, "CHECKOUT_RESULTS", results)
    monkeypatch.setenv(weights.BASE_URL_ENV, f"http://127.0.0.1:{free_port()}")  # offline

    assert_same_tensors(build("resnet20", weights="test").state_dict())
    assert not published.cache_dir.exists()

    path = results / FOLDER / "model.safetensors"
    flip_last_byte(path)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: sha256 is .* but {results / FOLDER}/model.json"):
        build("resnet20", weights="test")
    flip_last_byte(path)  # back as published
    (results / FOLDER / "preprocess.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=f"{results / FOLDER}/preprocess.safetensors: missing"):
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
    assert entry.files(progress=False) == folder  # a checkout serves its own folder, every sha256 as pinned
    found = re.search(r"^\| commit \| `([0-9a-f]{40})` \|$", (folder / "README.md").read_text(), re.MULTILINE)
    assert found, f"{folder / 'README.md'} names no commit"
    commit = found[1]
    assert entry.recipe in studies.STUDIES and entry.parameters == count_params(build(entry.model))
    line = publish_result_script().weights_entry(entry.model, entry.name, entry.folder, entry.recipe, commit[:12],
                                                 folder)
    assert line in Path(weights.__file__).read_text()
    assert eval(line.strip().rstrip(","), vars(weights)) == entry
    assert entry.test_top1_error == json.loads((folder / "eval.json").read_text())["test_top1_error"]
