"""One Ray task of `resnet-repro study run`: a net's `train@` stage, run by DVC in a clean clone of the
project at the driver's commit, its outputs and run-cache entry pushed to the DVC remote.

    result = ray.get(train_net.options(num_gpus=1, num_cpus=3, runtime_env=...).remote(net, checkout))

Its environment (the tracking server's URI, where the checkpoints live) comes with its runtime_env; its
GPUs are the ones Ray assigned to it (Ray sets CUDA_VISIBLE_DEVICES to them). Ray does the rest:

- A worker that dies (a preempted node, the OOM killer): Ray stops what the worker started (Ray 2.60
  makes each worker lead a process group, and signals that group when the worker exits), then runs the
  task again (max_retries). The training resumes from its checkpoint, in the directory every attempt shares.
- A stage that fails (a diverging net): StageFailed, which Ray does not retry (retry_exceptions=False)
  and raises in the driver's ray.get.
- The driver's Ctrl-C: ray.cancel raises KeyboardInterrupt here, which the task passes on to the stage.
"""

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import ray

from resnet_repro.dispatch.common import Net, dvc, lock_outputs, run


@dataclass(frozen=True)
class Checkout:
    """What a task trains in: a clone of `repository` at `commit`, under `workspaces` on its node, with
    the project's .dvc/config.local (a remote's credentials, or the remote itself), which git does not carry."""

    repository: str
    commit: str
    workspaces: str
    local_config: str | None


@dataclass(frozen=True)
class Trained:
    """What a task returns: where its net's stage ran, and how."""

    stage: str
    node: str  # the node's address
    node_id: str  # the start of Ray's id of the node: two nodes may share an address
    gpus: tuple[str, ...]  # the GPU ids Ray assigned to the task
    pid: int  # the worker's: a retried task runs in another
    resumed_from: int | None  # the iteration the training continued from its checkpoint; None: from scratch
    outputs: list[dict] | None  # the stage's outputs and their hashes, as the task's dvc.lock records them


class StageFailed(RuntimeError):
    """The stage exited with an error: the message says which, where, and the stage's own error line."""


@ray.remote(max_retries=3, retry_exceptions=False)
def train_net(net: Net, checkout: Checkout) -> Trained:
    """Train `net` in a clone of `checkout`, and push its outputs and run-cache entry to the DVC remote."""
    node = ray.util.get_node_ip_address()
    workspace = _workspace(checkout, net)
    # This node's interpreter first on PATH: the stage's command is `python pipeline/train.py ...`.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    code, output = _repro(net.stage, workspace, env)
    if code != 0:
        raise StageFailed(f"{net.stage} failed on {node} (exit {code}): {_error_line(output)}")
    run(dvc("push", "--run-cache", net.stage), workspace, env)
    # The stage says so when it resumes (train.state.resume_or_start); DVC says nothing of it.
    resumed = re.findall(r"^Resumed from checkpoint at iteration (\d+)", output, re.MULTILINE)
    context = ray.get_runtime_context()
    return Trained(net.stage, node, context.get_node_id()[:8], tuple(context.get_accelerator_ids()["GPU"]),
                   os.getpid(), int(resumed[-1]) if resumed else None, lock_outputs(workspace, net.stage))


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


def _repro(stage: str, workspace: Path, env: dict) -> tuple[int, str]:
    """`dvc repro --pull stage` in `workspace`: its exit status and what it printed (which goes on to this
    worker's log, `ray logs`). Cancelled, it stops the training as Ctrl-C in a terminal would, waits until
    the training has saved its checkpoint and ended its MLflow run, and passes the interruption on."""
    # Ray blocks SIGINT in its processes and a child inherits that: unblocked for DVC and what it runs, so
    # that they hear Ctrl-C (as Ray's own job supervisor does for a job's entrypoint).
    repro = subprocess.Popen(dvc("repro", "--pull", stage), cwd=workspace, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}))
    try:
        while True:
            # A second at a time: ray.cancel interrupts the task between two Python steps, which a wait
            # blocked in the kernel would not reach until DVC had ended.
            try:
                output = repro.communicate(timeout=1)[0]
                break
            except subprocess.TimeoutExpired:
                continue
    except KeyboardInterrupt:  # ray.cancel
        # Ctrl-C, as a terminal sends it to its foreground job: to the worker's process group, so to DVC and
        # everything under it (the worker itself blocks it). DVC ignores it while its stage runs; the
        # training stops at its next step, saves its checkpoint and ends its MLflow run; DVC exits after it.
        os.killpg(os.getpgrp(), signal.SIGINT)
        print(repro.communicate()[0], flush=True)
        raise
    print(output, flush=True)
    return repro.returncode, output


def _error_line(output: str) -> str:
    """The stage's own one-line error (`train: error: loss is nan at iteration ...`), else DVC's, else the
    end of what it printed."""
    lines = output.splitlines()
    errors = [line for line in lines if line.startswith("train: error:")] or \
             [line for line in lines if "error" in line.lower()]
    return errors[-1] if errors else output[-500:]
