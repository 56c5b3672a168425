"""`mlflow models serve` of a registered net: the real server on 127.0.0.1, real CIFAR-10 test images.

A randomly initialised resnet20 is registered in a sqlite store; the server answers `POST /invocations`
for it as `mlflow models serve -m models:/cifar10-resnet20@champion --env-manager local` does for a
user. Its answers must be those of `resnet-repro predict` and of `load_registered`.
"""

import base64
import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import resnet_repro
from local_servers import VENV_BIN, mlflow_env
from resnet_repro.artifacts import save_trained
from resnet_repro.models import build
from resnet_repro.tracking.registry import predict, register_model
from resnet_repro.tracking.runs import TrainingRun
from resnet_repro.tracking.server import free_port, local_server
from resnet_repro.tracking.serving import class_probabilities

pytestmark = pytest.mark.pipeline  # processes, servers or a browser: not the quick tier

NAME = "cifar10-resnet20"
REF = f"{NAME}@champion"
STARTUP_SECONDS = 120  # about 8 s on an idle 2-core machine
REQUEST_SECONDS = 60


@pytest.fixture(scope="module")
def registered(store, cifar10, tmp_path_factory) -> str:
    """A random resnet20, saved as the train stage saves it and registered as the register stage does."""
    torch.manual_seed(0)
    mean_image = torch.from_numpy(cifar10.train_images[:1000].mean(axis=0, dtype=np.float32)).permute(2, 0, 1)
    directory = tmp_path_factory.mktemp("serving-model")
    save_trained(directory, build("resnet20", num_classes=10).eval(), mean_image.contiguous(),
                 {"arch": "resnet20", "num_classes": 10, "class_names": cifar10.class_names, "input_size": 32,
                  "dataset": "cifar10", "seed": 0, "options": {"shortcut": "A"}})
    tags = {"variant": "resnet20", "git_commit": "0" * 40, "data_version": "md5:1234"}
    with TrainingRun.start(store, "serving-tests", "resnet20 seed 0", {"train": {"lr": 0.1}}, tags) as run:
        run.log_metrics({"loss": 2.3}, step=1)
    register_model(store, run.run_id, directory, NAME, {"test_top1_error": 0.9}, tags)
    return REF


@pytest.fixture(scope="module")
def server(registered, store, tmp_path_factory) -> Iterator[str]:
    """The base URL of `mlflow models serve` for the champion, started on a free loopback port."""
    workdir = tmp_path_factory.mktemp("serving-server")
    url = f"http://127.0.0.1:{free_port()}"
    command = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"models:/{registered}", "--env-manager", "local",
               "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]]
    with local_server(command, f"{url}/ping", workdir / "serve.log", env=mlflow_env(MLFLOW_TRACKING_URI=store),
                      cwd=workdir, startup_seconds=STARTUP_SECONDS, name="mlflow models serve"):
        yield url


@pytest.fixture(scope="module")
def images(cifar10) -> np.ndarray:
    return cifar10.test_images[:16]


def test_served_pixels_get_the_probabilities_and_names_of_the_registered_net(server, images, cifar10):
    status, body = _post(server, {"inputs": images.tolist()})

    assert status == 200, body
    answers = body["predictions"]
    assert len(answers) == len(images)
    net = resnet_repro.load_registered(REF)
    expected = class_probabilities(net, net.mean_image, torch.from_numpy(images)).numpy()
    served = np.array([[answer["probabilities"][name] for name in cifar10.class_names] for answer in answers])
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-7)
    assert [answer["class_index"] for answer in answers] == expected.argmax(axis=1).tolist()
    assert [answer["class_name"] for answer in answers] == [cifar10.class_names[i] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose([answer["probability"] for answer in answers], expected.max(axis=1), rtol=1e-5)


def test_served_png_and_jpeg_files_get_the_answers_of_predict(server, store, images, tmp_path):
    files = []
    for index, image in enumerate(images[:6]):
        picture = Image.fromarray(image)
        if index % 3 == 2:  # not at the net's input size: resized on both sides alike
            picture = picture.resize((48, 48), Image.Resampling.BICUBIC)
        path = tmp_path / f"test{index}.{'png' if index % 2 == 0 else 'jpg'}"
        picture.save(path)
        files.append(path)
    encoded = [base64.b64encode(path.read_bytes()).decode("ascii") for path in files]

    expected = predict(REF, files, store)
    for request in ({"dataframe_split": {"columns": ["image"], "data": [[item] for item in encoded]}},
                    {"dataframe_records": [{"image": item} for item in encoded]},
                    {"inputs": encoded}):
        status, body = _post(server, request)
        assert status == 200, (next(iter(request)), body)
        served = [(answer["class_name"], answer["probability"]) for answer in body["predictions"]]
        assert [name for name, _ in served] == [name for _, name, _ in expected]
        np.testing.assert_allclose([p for _, p in served], [p for _, _, p in expected], rtol=1e-5)

    # A PNG holds the pixels exactly: its answer is that of the pixel array.
    _, from_png = _post(server, {"inputs": [encoded[0]]})
    _, from_pixels = _post(server, {"inputs": images[:1].tolist()})
    assert from_png["predictions"] == from_pixels["predictions"]


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving(server, images):
    b64 = lambda data: base64.b64encode(data).decode("ascii")  # noqa: E731
    bad_requests = [
        ("wrong size", {"inputs": np.zeros((2, 16, 16, 3), dtype=np.uint8).tolist()}, "(N, 32, 32, 3)"),
        ("four channels", {"inputs": np.zeros((1, 32, 32, 4), dtype=np.uint8).tolist()}, "got shape (1, 32, 32, 4)"),
        ("values over 255", {"inputs": np.full((1, 32, 32, 3), 300).tolist()}, "integers 0..255"),
        ("fractional values", {"inputs": np.full((1, 32, 32, 3), 0.5).tolist()}, "integers 0..255"),
        ("ragged arrays", {"inputs": [[[1, 2, 3]], [[1, 2]]]}, "inhomogeneous"),
        ("text, not an image", {"inputs": [b64(b"just some text")]}, "image 0: not a PNG or JPEG image"),
        ("a GIF", {"inputs": [b64(b"GIF89a" + bytes(64))]}, "image 0: not a PNG or JPEG image"),
        ("a truncated PNG", {"inputs": [b64(_png(images[0]))[:400]]}, "image 0:"),
        ("not base64", {"inputs": ["this is not base64!"]}, "image 0: a string must be a base64-encoded"),
        ("a table without an image column", {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}},
         "needs a column 'image'"),
        ("no images", {"inputs": []}, ""),
        ("not JSON", b"{not json", "valid JSON"),
    ]
    wrong = []
    for what, request, message in bad_requests:
        status, body = _post(server, request)
        text = body.get("message", "") if isinstance(body, dict) else str(body)
        if not (400 <= status < 500 and message in text):
            wrong.append(f"{what}: HTTP {status}, {text[-300:]!r}")
    assert not wrong, "\n".join(wrong)

    status, body = _post(server, {"inputs": images[:2].tolist()})
    assert status == 200 and len(body["predictions"]) == 2


def _post(server: str, request) -> tuple[int, Any]:
    """The status and the body: parsed JSON, or the text where it is not JSON."""
    data = request if isinstance(request, bytes) else json.dumps(request).encode()
    post = urllib.request.Request(f"{server}/invocations", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(post, timeout=REQUEST_SECONDS) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        try:
            return error.code, json.loads(text)
        except json.JSONDecodeError:
            return error.code, text
