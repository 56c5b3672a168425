"""Real servers for the tests, on 127.0.0.1 only: a bounded wait until they answer, and a stop that takes
the whole process group down (the mlflow CLIs run uvicorn as a child). A tracking server (`mlflow
server`) is resnet_repro.tracking.server's, as the study runner starts it; `running` serves the rest
(`mlflow models serve`)."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

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
    from resnet_repro.tracking.server import free_port

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
            stop(head)


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
            pytest.fail(f"{program} exited with {process.returncode} before it wrote {path}:\n{tail(log_path)}")
        if time.monotonic() > deadline:
            pytest.fail(f"{program} did not write {path} within {seconds} s:\n{tail(log_path)}")
        time.sleep(0.5)


def mlflow_env(**extra: str) -> dict[str, str]:
    """The environment for an `mlflow` subprocess: the venv's scripts first on PATH, no telemetry."""
    return {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


@contextmanager
def running(command: list[str], ready_url: str, log_path: Path, env: dict[str, str], cwd: Path,
            startup_seconds: float) -> Iterator[subprocess.Popen]:
    """Start `command`, wait until GET `ready_url` answers 200 (failing the test with the log's tail if it
    exits or takes more than `startup_seconds`), and stop it when the block ends, whatever happens."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   cwd=cwd, start_new_session=True)
    try:
        _wait_until_ready(ready_url, process, log_path, startup_seconds, Path(command[0]).name)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group that `process` leads, then SIGKILL to what is left of it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    process.wait(timeout=10)


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path} was not written)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _wait_until_ready(url: str, process: subprocess.Popen, log_path: Path, seconds: float, name: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode} before it answered {url}:\n{tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    pytest.fail(f"{name} did not answer {url} within {seconds} s:\n{tail(log_path)}")
