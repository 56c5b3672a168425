"""resnet_repro.tracking.server: a local `mlflow server` that answers for the length of its block, leaves
no process behind, and says why when it cannot start. (That it dies with a killed caller:
tests/test_dispatch.py, through the study runner that relies on it.)"""

import os
import subprocess
import urllib.request

import pytest
from mlflow import MlflowClient

from resnet_repro.tracking.server import TrackingServerError, tracking_server

pytestmark = pytest.mark.pipeline  # a server: not the quick tier


def test_the_server_serves_the_store_until_the_block_ends_and_leaves_no_process(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking_server(store, tmp_path / "server.log", cwd=tmp_path) as url:
        assert urllib.request.urlopen(f"{url}/health", timeout=10).status == 200
        MlflowClient(url).create_experiment("through-the-server")
        port = url.rsplit(":", 1)[1]
        server = subprocess.run(["pgrep", "-f", f"mlflow server .*--port {port}"], capture_output=True,
                                text=True).stdout.split()
        group = os.getpgid(int(server[0]))
        assert group != os.getpgid(0)  # its own process group: a Ctrl-C in the terminal reaches the caller alone
    assert MlflowClient(store).get_experiment_by_name("through-the-server") is not None
    assert subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True).stdout == ""


def test_a_server_that_cannot_start_says_so_with_the_end_of_its_log(tmp_path):
    log = tmp_path / "server.log"
    with pytest.raises(TrackingServerError, match=rf"exited with \d+ at start-up; {log} ends:\n(.|\n)*nosuchstore"):
        with tracking_server("nosuchstore://nowhere", log, cwd=tmp_path, startup_seconds=300):
            pass
