"""Real servers for the tests, on 127.0.0.1 only, started and stopped by resnet_repro.tracking.server as
the study runner starts its own (`tracking_server` for `mlflow server`, `local_server` for the rest, such
as `mlflow models serve`), and a Ray head of the test's own."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from resnet_repro.tracking.server import free_port, log_tail, stop_group

# The console scripts (mlflow, and the uvicorn it starts) sit beside the interpreter running the tests.
VENV_BIN = Path(sys.executable).parent


@contextmanager
def ray_head(directory: Path) -> Iterator[str]:
    """A local Ray 'cluster' of this machine with 2 declared GPUs and 6 declared CPUs, while the block runs:
    its address. Two nets train at once, each with a CPU for its training and one for each of its loader's
    2 workers; on a machine without a GPU, Ray still hands each its own CUDA_VISIBLE_DEVICES. Ray 2.60's
    token authentication is off (it listens on this machine only), in `ray start` and in the drivers the
    tests start (RAY_AUTH_MODE is set in this process's environment while the block runs).

    The head is `ray start --block`, leading a process group of its own, with a temp dir of its own:
    SIGTERM to that group stops this head's processes and no other Ray of the machine (`ray stop` would
    stop every one, a user's included), and `ray.init()` elsewhere on the machine keeps finding its own
    cluster (Ray records the newest head's address in its temp dir, /tmp/ray by default)."""

    log_path = directory / "ray-head.log"
    with ray_temp_dir() as temp_dir, pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")
        # No draining on SIGTERM: nothing of the head's runs once the block has ended.
        env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
        port = free_port()
        with open(log_path, "wb") as log:
            head = subprocess.Popen([str(VENV_BIN / "ray"), "start", "--head", "--block", f"--port={port}",
                                     f"--temp-dir={temp_dir}", "--num-cpus=6", "--num-gpus=2",
                                     "--include-dashboard=false", "--disable-usage-stats"],
                                    cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            # `ray start` writes the head's address there once the head answers, then blocks.
            _wait_for_file(temp_dir / "ray_current_cluster", head, log_path, seconds=300)
            yield f"127.0.0.1:{port}"
        finally:
            stop_group(head)


@contextmanager
def ray_temp_dir() -> Iterator[Path]:
    """A temp dir for a Ray of the test's own, removed after the block. Short: Ray's socket paths under it
    must fit a Unix socket's 107 bytes, which pytest's tmp paths may not."""
    directory = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _wait_for_file(path: Path, process: subprocess.Popen, log_path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    program = str(process.args[0]) if isinstance(process.args, list) else str(process.args)
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"{program} exited with {process.returncode} before it wrote {path}:\n{log_tail(log_path)}")
        if time.monotonic() > deadline:
            pytest.fail(f"{program} did not write {path} within {seconds} s:\n{log_tail(log_path)}")
        time.sleep(0.5)


def mlflow_env(**extra: str) -> dict[str, str]:
    """The environment for an `mlflow` subprocess: the venv's scripts first on PATH, no telemetry."""
    return {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}
