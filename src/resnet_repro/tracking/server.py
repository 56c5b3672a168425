"""`mlflow server` on a free loopback port for the length of a `with` block: the store that many
processes write at once (`resnet-repro study run` on one machine), and the server of the tests and
of the MLflow UI check.

    with tracking_server("sqlite:///mlflow.db", log_path=Path("server.log")) as url:
        ...  # any number of processes log to `url` (http://127.0.0.1:PORT)

The server dies with the process that started it, even one killed by SIGKILL, which runs no
`finally`: on Linux it is started with PR_SET_PDEATHSIG = SIGTERM (as Ray starts its own processes),
and `mlflow server` passes SIGTERM on to its uvicorn. The kernel sends that signal when the thread
that started the server ends, so start it from a thread that lives as long as the block (the main
thread does). The server leads a process group of its own, so a Ctrl-C in the terminal reaches the
caller alone, which may still need the server while it stops its own work; leaving the block stops
the whole group. `local_server` does the same for any other server (the tests' `mlflow models serve`).
"""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOOPBACK = "127.0.0.1"
# MLflow's job runner and its seven huey consumers serve GenAI jobs (evaluations, trace roll-ups) that
# this project never submits; without them the server is two processes (mlflow, uvicorn) instead of ten,
# all of which SIGTERM to the first one stops.
SERVER_ENVIRONMENT = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class TrackingServerError(RuntimeError):
    """A server exited or did not answer at start-up; the message ends with its log's last lines."""


@contextmanager
def tracking_server(backend_store_uri: str, log_path: Path, *options: str, cwd: Path | None = None,
                    startup_seconds: float = 120) -> Iterator[str]:
    """Serve `backend_store_uri` until the block ends; yields the server's URL once /health answers.
    `options` go to `mlflow server` as they are (`--no-serve-artifacts`, `--artifacts-destination DIR`);
    its output goes to `log_path`."""
    url = f"http://{LOOPBACK}:{free_port()}"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
               "--host", LOOPBACK, "--port", url.rsplit(":", 1)[1], "--workers", "1", *options]
    with local_server(command, f"{url}/health", Path(log_path), env={**os.environ, **SERVER_ENVIRONMENT}, cwd=cwd,
                      startup_seconds=startup_seconds, name="mlflow server"):
        yield url


@contextmanager
def local_server(command: list[str], ready_url: str, log_path: Path, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None, startup_seconds: float = 120, name: str | None = None,
                 ) -> Iterator[subprocess.Popen]:
    """Run `command` (a server) for the length of the block, dying with this process as the module says;
    yields it once GET `ready_url` answers with a 2xx status. TrackingServerError, naming the server and
    ending with its log, if it exits or does not answer within `startup_seconds`."""
    name = name or Path(command[0]).name
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                  env=env, start_new_session=True, preexec_fn=_dies_with(os.getpid()))
    try:
        _wait_until_ready(name, ready_url, server, log_path, startup_seconds)
        yield server
    finally:
        stop_group(server)


def free_port() -> int:
    """A TCP port of the loopback interface that nothing listens on at the moment."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def stop_group(process: subprocess.Popen, seconds: float = 30) -> None:
    """SIGTERM to the process group `process` leads, then SIGKILL to whatever of it is left after `seconds`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:  # the group is gone
            break
        try:
            process.wait(timeout=seconds)
            break
        except subprocess.TimeoutExpired:
            pass
    process.wait()


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a server's log, for an error message."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else f"({path} was not written)"


def _dies_with(parent: int) -> Callable[[], None] | None:
    """What the child runs before the server: ask the kernel for SIGTERM when `parent` ends (Linux only;
    elsewhere the server stops at the end of the block only)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it

    def set_parent_death_signal() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent ended before the request: no signal will come
            raise OSError("the process starting the server has ended")

    return set_parent_death_signal


def _wait_until_ready(name: str, url: str, server: subprocess.Popen, log_path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise TrackingServerError(f"{name} exited with {server.returncode} at start-up; "
                                      f"{log_path} ends:\n{log_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:  # not listening yet, or an HTTP error status (urllib raises HTTPError for those)
            time.sleep(0.5)
    raise TrackingServerError(f"{name} did not answer {url} within {seconds:.0f} s; "
                              f"{log_path} ends:\n{log_tail(log_path)}")
