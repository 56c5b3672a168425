"""One Ray task of `resnet-repro study run`: a net's `train@` stage, run by DVC in a clean clone of the
project at the driver's commit, its outputs and run-cache entry pushed to the DVC remote.

    trained = ray.get(train_net.options(num_gpus=1, num_cpus=3, runtime_env=...).remote(net, checkout, progress))

It runs on any node. Its environment (the tracking server's URI, where the checkpoints live) comes with
its runtime_env; its GPUs are the ones Ray assigned to it (Ray sets CUDA_VISIBLE_DEVICES to them).
The checkpoints directory is shared by every attempt at the task. When a task's worker dies, Ray stops
the training the worker started, which runs in the worker's process group (Ray 2.60 gives each worker
a process group of its own and, when the worker exits, sends that group SIGTERM and SIGKILL 0.2 s
later), and then runs the task again (max_retries): the training resumes from its last checkpoint.

What the task did is its return value, `Trained`, read from the checkpoint and from DVC's lock file
rather than from anything printed: whether the training ran (the checkpoint was written anew) or DVC
restored the stage from its run-cache (it was not), the iteration the training resumed from (it found
an unfinished checkpoint with the fingerprint of its own configuration and code), and the outputs it
pushed (the stage's entry in the workspace's dvc.lock).
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import ray

from resnet_repro.dispatch.common import Net, dvc, lock_outputs, run
from resnet_repro.layout import Layout
from resnet_repro.train.state import TrainingState

LOG = "study-run.log"  # in a task's workspace: what `dvc repro` and the training printed, every attempt's


@dataclass(frozen=True)
class Checkout:
    """What a task trains in: a clone of `repository` at `commit`, under `workspaces` on its node, with
    the project's .dvc/config.local (a remote's credentials, or the remote itself), which git does not carry."""

    repository: str
    commit: str
    workspaces: str
    local_config: str | None


@dataclass(frozen=True)
class Started:
    """Sent on the progress queue as an attempt at a task starts."""

    stage: str
    node: str  # the node's address
    node_id: str  # the start of Ray's id of the node: two nodes may share a machine
    gpus: tuple[str, ...]  # the GPU ids Ray assigned to the task
    pid: int
    attempt: int  # 0, then one more for each time Ray retried the task
    time: float


@dataclass(frozen=True)
class Ended:
    """Sent on the progress queue as an attempt ends, whatever the outcome."""

    stage: str
    interrupted: bool  # cancelled (the driver's Ctrl-C) after its training stopped and saved its checkpoint
    time: float


@dataclass(frozen=True)
class Trained:
    """What a task returns: its net's stage done, and how."""

    stage: str
    node: str
    restored: bool  # DVC restored the stage from its run-cache: no training ran
    resumed_from: int | None  # the iteration the training continued from; None if it started from scratch
    # The stage's outputs, their paths and hashes, as the task's dvc.lock records them (None: it has no entry).
    outputs: list[dict] | None
    time: float


class StageFailed(RuntimeError):
    """The stage exited with an error: the message says which, where, and the stage's own error line."""


@ray.remote(max_retries=3, retry_exceptions=False)
def train_net(net: Net, checkout: Checkout, progress) -> Trained:
    """Train `net` in a clone of `checkout`; `progress` (a ray.util.queue.Queue) hears it start and end."""
    context = ray.get_runtime_context()
    node = ray.util.get_node_ip_address()
    progress.put(Started(net.stage, node, context.get_node_id()[:8], tuple(context.get_accelerator_ids()["GPU"]),
                         os.getpid(), _attempt(), time.time()))
    interrupted = False
    try:
        return _train(net, node, checkout)
    except KeyboardInterrupt:  # ray.cancel
        interrupted = True
        raise
    finally:
        # On Ctrl-C the driver waits for this word before it stops the tracking server the training writes to.
        progress.put(Ended(net.stage, interrupted, time.time()))


def _attempt() -> int:
    """Which attempt at the task this is. Ray 2.60 keeps the number in its core worker, whose public
    runtime context does not show it yet; Ray's own tests of task retries read it there."""
    # Ray sets `core_worker` when the worker connects; its Worker class does not declare it.
    return ray._private.worker.global_worker.core_worker.get_current_task_attempt_number()  # type: ignore[attr-defined]


def _train(net: Net, node: str, checkout: Checkout) -> Trained:
    workspace = _workspace(checkout, net)
    # This node's interpreter first on PATH: the stage's command is `python pipeline/train.py ...`.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    checkpoint = Layout(workspace).checkpoint_path(net.variant, net.seed)
    before = _Saved.read(checkpoint)
    code = _run_stage(net.stage, workspace, env)
    if code != 0:
        raise StageFailed(f"{net.stage} failed on {node} (exit {code}): {_stage_error(workspace / LOG)}")
    run(dvc("push", "--run-cache", net.stage), workspace, env)
    after = _Saved.read(checkpoint)
    return Trained(net.stage, node, restored=after == before, resumed_from=_resumed_from(before, after),
                   outputs=lock_outputs(workspace, net.stage), time=time.time())


def _workspace(checkout: Checkout, net: Net) -> Path:
    """A clone of the repository at the commit for `net`, kept between attempts on the same node."""
    workspace = Path(checkout.workspaces) / f"{checkout.commit[:12]}-{net.stage.replace('@', '-')}"
    if not (workspace / ".git").exists():
        workspace.parent.mkdir(parents=True, exist_ok=True)
        run(["git", "clone", "--quiet", checkout.repository, str(workspace)], workspace.parent)
    run(["git", "checkout", "--quiet", "--force", checkout.commit], workspace)
    if checkout.local_config is not None:
        (workspace / ".dvc" / "config.local").write_text(checkout.local_config)
    return workspace


def _run_stage(stage: str, workspace: Path, env: dict) -> int:
    """`dvc repro --pull stage` in `workspace`; its exit status. Interrupted (ray.cancel), it stops the
    training as Ctrl-C in a terminal would, waits for it (it saves a checkpoint and ends its MLflow run),
    and passes the interruption on."""
    with open(workspace / LOG, "a") as log:
        # Ray's workers block SIGINT, and a child inherits its parent's signal mask: unblocked while the
        # training starts, so that it hears Ctrl-C as it would in a terminal.
        blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        try:
            # In the worker's process group, which Ray signals if the worker dies.
            training = subprocess.Popen(dvc("repro", "--pull", stage), cwd=workspace, env=env, stdout=log,
                                        stderr=subprocess.STDOUT)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        try:
            # Polled, not training.wait(): ray.cancel interrupts the task's main thread between two Python
            # steps (_thread.interrupt_main), which a blocking wait for the child would never reach.
            while (code := training.poll()) is None:
                time.sleep(0.5)
        except BaseException:  # ray.cancel raises KeyboardInterrupt here
            _interrupt(training)
            training.wait()
            raise
    return code


def _interrupt(training: subprocess.Popen) -> None:
    """Ctrl-C, as a terminal sends it to its foreground job: to DVC and every process under it. DVC
    ignores it while its stage runs; the stage saves its checkpoint, ends its MLflow run and exits, and
    DVC after it. (SIGTERM would end DVC at once, not its stage.)"""
    try:
        dvc_process = psutil.Process(training.pid)
        processes = [dvc_process, *dvc_process.children(recursive=True)]
    except psutil.NoSuchProcess:  # it has just ended
        return
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGINT)


def _stage_error(log_path: Path) -> str:
    """The stage's own one-line error (`train: error: loss is nan at iteration ...`), else DVC's, else
    the end of the log."""
    output = log_path.read_text(errors="replace")
    lines = output.splitlines()
    errors = [line for line in lines if line.startswith("train: error:")] or \
             [line for line in lines if "error" in line.lower()]
    return errors[-1] if errors else output[-500:]


@dataclass(frozen=True)
class _Saved:
    """A checkpoint as a task found it: the file, and where its training stood."""

    file: tuple[int, int]  # inode and modification time: each save is a new file (written aside, then renamed)
    fingerprint: str
    iteration: int
    complete: bool

    @classmethod
    def read(cls, path: Path) -> "_Saved | None":
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        state = TrainingState.load(path, mmap=True)
        return cls((stat.st_ino, stat.st_mtime_ns), state.fingerprint, state.iteration, state.complete)


def _resumed_from(before: _Saved | None, after: _Saved | None) -> int | None:
    """The iteration the training continued from: the stage resumes an unfinished checkpoint written by
    the same configuration and code (train.state.resume_or_start), and its own checkpoints keep that
    fingerprint; any other it trains over from scratch."""
    if before is None or after is None or after.file == before.file or before.complete:
        return None
    return before.iteration if before.fingerprint == after.fingerprint else None
