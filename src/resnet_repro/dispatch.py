"""`resnet-repro study run`: a study's out-of-date nets trained at once on Ray, one task per net, with
DVC still the source of truth (its lock file, cache and remote) and MLflow as for `dvc repro`.

The driver (this process, in the user's workspace, whose git tree must be clean but for what DVC writes):
1. makes sure the tracking store takes many writers: MLFLOW_TRACKING_URI if it names a server, else a
   local `mlflow server` over the project's own store for the length of the run (one machine only);
   the study's parent run is created before any net starts, so that every net nests under the same one;
2. runs `dvc repro ffcv` here and pushes the data with its run-cache entries, for every task to pull;
3. submits one Ray task per out-of-date `train@` stage, with `train.nproc` GPUs where the cluster has
   GPUs (Ray sets CUDA_VISIBLE_DEVICES per task), else an even share of its CPUs.
Each task clones the repository at the driver's commit into a workspace of its own, runs
`dvc repro --pull train@NET` there (the data comes from the remote's run-cache) and
`dvc push --run-cache`. Checkpoints go to RESNET_REPRO_CHECKPOINTS, shared by every attempt, so a task
whose process is killed is retried by Ray and resumes where the killed one stopped.
At the end the driver runs `dvc repro --pull` here: the trained stages are restored
from the run-cache ("is cached - skipping run") and evaluate, register and report run as usual, so the
workspace ends as a sequential `dvc repro` would have left it.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from resnet_repro.config import load_params
from resnet_repro.layout import CHECKPOINTS_ENV, Layout
from resnet_repro.tracking.runs import ensure_study_run, resolve_tracking_uri

# Set for every task, as the README asks of every DVC and MLflow process.
# In a task's workspace: the process group of its training, for the next attempt on the same node.
ATTEMPT_FILE = ".study-run-attempt"
QUIET_TOOLS = {"DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "NO_ALBUMENTATIONS_UPDATE": "1"}


class StudyRunError(RuntimeError):
    """The study cannot run as asked: a dirty tree, no DVC remote, a tracking store many nets cannot share."""


@dataclass
class NetOutcome:
    stage: str
    node: str = ""
    gpus: str = ""
    attempts: int = 0
    resumed_from: int | None = None
    started: float | None = None
    ended: bool = False  # its task has returned, failed or been stopped
    finished: float | None = None
    error: str | None = None


def _run(command: list[str], cwd: Path, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise StudyRunError(f"`{' '.join(command)}` failed in {cwd} ({result.returncode}):\n"
                            f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def _dvc(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *arguments]


def require_clean_tree(root: Path) -> str:
    """The commit every task trains; a tree with uncommitted changes is refused, naming them."""
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], root).stdout.splitlines()
    # What DVC itself writes (its lock file, the .gitignore beside each output) changes nothing a task
    # trains: a task restores the stages before its own from the run-cache whatever its dvc.lock says.
    changed = [line for line in status if Path(line[3:]).name not in ("dvc.lock", ".gitignore")]
    if changed:
        raise StudyRunError("the git tree has uncommitted changes, which the tasks (clones of a commit) would not "
                            f"see; commit or stash them first: {', '.join(line[3:] for line in changed[:10])}")
    return _run(["git", "rev-parse", "HEAD"], root).stdout.strip()


def check_study(root: Path) -> list[str]:
    """The study's `train@` stages whose outputs are missing or stale, as `dvc status` sees them; if there
    are any, the project must have a default DVC remote, through which the tasks bring their results back."""
    from dvc.repo import Repo

    params = load_params(root / "params.yaml")
    stages = [f"train@{variant}-{seed}" for variant in params.study.variants for seed in params.study.seeds]
    with Repo(str(root)) as repo:
        stale = [stage for stage in stages if repo.status(targets=[stage], with_deps=False)]
        if stale and not repo.config["core"].get("remote"):
            raise StudyRunError("no default DVC remote: the tasks bring their results back through one. On one "
                                "machine any directory will do (`dvc remote add --local -d scratch "
                                "/var/tmp/resnet-repro-dvc-remote`); on a cluster, a remote every node reaches")
    return stale


def _local_dvc_config(root: Path) -> str | None:
    """.dvc/config.local (a remote's credentials, or the remote itself), which a clone does not carry."""
    path = root / ".dvc" / "config.local"
    return path.read_text() if path.exists() else None


def _is_server(uri: str | None) -> bool:
    return bool(uri) and uri.split(":", 1)[0] in ("http", "https", "databricks")


@contextmanager
def shared_tracking_store(root: Path, local_cluster: bool) -> Iterator[str]:
    """A tracking URI that many processes may write to at once: MLFLOW_TRACKING_URI if it is a server;
    on one machine, a `mlflow server` over the project's store, stopped at the end."""
    configured = load_params(root / "params.yaml").mlflow.tracking_uri
    uri = resolve_tracking_uri(root, configured)
    if _is_server(uri):
        yield uri
        return
    if not local_cluster:
        raise StudyRunError(f"the tracking store {uri} is a file on this machine, which the nodes of a cluster "
                            "cannot share (and sqlite takes one writer at a time): start an `mlflow server` and set "
                            "MLFLOW_TRACKING_URI=http://HOST:PORT")
    port = _free_port()
    (root / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)  # ignored by git, DVC's own scratch space
    log = open(root / ".dvc" / "tmp" / "study-run-mlflow.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--no-serve-artifacts"], cwd=root, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, **QUIET_TOOLS}, start_new_session=True)
    # The server runs in its own process group (it starts a uvicorn and job consumers, which a signal to
    # it alone would leave running). If this driver is killed (SIGKILL: no `finally`), the watchdog stops it.
    watchdog = subprocess.Popen(["sh", "-c", f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
                                             f"kill -TERM -{server.pid}"], start_new_session=True)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}", server)
        yield f"http://127.0.0.1:{port}"
    finally:
        watchdog.kill()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        watchdog.wait()
        log.close()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_server(url: str, server: subprocess.Popen, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise StudyRunError(f"the local mlflow server stopped at once (exit {server.returncode})")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise StudyRunError(f"the local mlflow server at {url} did not answer within {timeout:.0f} s")


def train_net(stage: str, repository: str, commit: str, workspaces: str, environment: dict,
              local_config: str | None, events) -> dict:
    """One Ray task: `stage` trained in a clone of `repository` at `commit`, its outputs and run-cache
    entry pushed to the DVC remote. Runs on any node; a retry after a kill resumes from the checkpoint."""
    import ray

    context = ray.get_runtime_context()
    node = ray.util.get_node_ip_address()
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    events.put({"event": "started", "stage": stage, "node": node, "node_id": context.get_node_id()[:8],
                "gpus": gpus, "pid": os.getpid(), "task": context.get_task_id(), "time": time.time()})
    interrupted = False
    try:
        resumed = _train(stage, node, repository, commit, workspaces, environment, local_config)
        return {"stage": stage, "node": node, "gpus": gpus, "resumed": resumed, "time": time.time()}
    except KeyboardInterrupt:  # ray.cancel
        interrupted = True
        raise
    finally:
        # On Ctrl-C the driver waits for this word before it stops the tracking server the training writes to.
        events.put({"event": "ended", "stage": stage, "interrupted": interrupted, "time": time.time()})


def _train(stage: str, node: str, repository: str, commit: str, workspaces: str, environment: dict,
           local_config: str | None) -> str | None:
    """Train `stage` in its workspace and push its outputs and run-cache entry; the line saying where it
    resumed from, if it did."""
    workspace = _workspace(repository, commit, workspaces, stage, local_config)
    env = {**os.environ, **QUIET_TOOLS, **environment,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    _stop_earlier_attempt(workspace)
    log_path = workspace / "study-run.log"
    code = _run_training(stage, workspace, env, log_path)
    output = log_path.read_text()
    if code != 0:
        # The stage's own one-line error (`train: error: loss is nan at iteration ...`) before DVC's.
        lines = output.splitlines()
        errors = [line for line in lines if line.startswith("train: error:")] or \
                 [line for line in lines if "error" in line.lower()]
        raise RuntimeError(f"{stage} failed on {node} (exit {code}): {errors[-1] if errors else output[-500:]}")
    _run(_dvc("push", "--run-cache", stage), workspace, env)
    resumed = [line for line in output.splitlines() if line.startswith("Resumed from checkpoint at iteration")]
    return resumed[-1] if resumed else None


def _workspace(repository: str, commit: str, workspaces: str, stage: str, local_config: str | None) -> Path:
    """A clone of `repository` at `commit` for `stage`, kept between attempts on the same node."""
    workspace = Path(workspaces) / f"{commit[:12]}-{stage.replace('@', '-')}"
    if not (workspace / ".git").exists():
        workspace.parent.mkdir(parents=True, exist_ok=True)
        _run(["git", "clone", "--quiet", repository, str(workspace)], workspace.parent)
    _run(["git", "checkout", "--quiet", "--force", commit], workspace)
    if local_config is not None:
        (workspace / ".dvc" / "config.local").write_text(local_config)
    return workspace


def _run_training(stage: str, workspace: Path, env: dict, log_path: Path) -> int:
    """`dvc repro --pull stage` in `workspace`; its exit status. Interrupted, it stops the training (which
    saves a checkpoint and ends its MLflow run) and waits for it before passing the interruption on."""
    with open(log_path, "a") as log:
        # Ray's workers block SIGINT, and a child inherits its parent's signal mask: unblocked while the
        # training starts, so that it hears Ctrl-C as it would in a terminal.
        blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        try:
            # A session of its own: the whole training (DVC and the stage under it) stops as one.
            training = subprocess.Popen(_dvc("repro", "--pull", stage), cwd=workspace, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        (workspace / ATTEMPT_FILE).write_text(str(training.pid))
        try:
            # Polled, not training.wait(): ray.cancel interrupts the task's main thread between two Python
            # steps (_thread.interrupt_main), which a blocking wait for the child would never reach.
            while (code := training.poll()) is None:
                time.sleep(0.5)
        except BaseException:  # ray.cancel raises KeyboardInterrupt here
            # Ctrl-C, as in a terminal: DVC ignores it while its stage runs; the stage saves its checkpoint,
            # ends its MLflow run and exits, and DVC after it. (SIGTERM would end DVC at once, not its stage.)
            os.killpg(training.pid, signal.SIGINT)
            training.wait()
            raise
    return code


def _stop_earlier_attempt(workspace: Path) -> None:
    """A killed task's training may outlive it on the same node (its own session): stop it before this
    attempt resumes from the same checkpoint."""
    recorded = workspace / ATTEMPT_FILE
    if not recorded.exists():
        return
    try:
        os.killpg(int(recorded.read_text()), signal.SIGKILL)
        time.sleep(1)
    except (ProcessLookupError, ValueError):
        pass
    recorded.unlink()


def run_study(root: Path, address: str | None = None, workspaces: Path | None = None,
              checkpoints: Path | None = None, repository: str | None = None, echo=print) -> list[NetOutcome]:
    """Train the study's out-of-date nets on Ray, then finish the pipeline here with `dvc repro`."""
    import ray
    from ray.util.queue import Queue

    root = Path(root).resolve()
    commit = require_clean_tree(root)
    stages = check_study(root)
    address = address or os.environ.get("RAY_ADDRESS")
    echo(f"study run: {len(stages)} net(s) to train at commit {commit[:12]}: {', '.join(stages) or 'none'}")
    tool_env = {**os.environ, **QUIET_TOOLS}
    if stages:
        ray.init(address=address, include_dashboard=None, log_to_driver=False)
        try:
            nodes = [node for node in ray.nodes() if node["Alive"]]
            local = len(nodes) == 1 and nodes[0]["NodeManagerAddress"] == ray.util.get_node_ip_address()
            with shared_tracking_store(root, local_cluster=local) as tracking_uri:
                _run(_dvc("repro", "ffcv"), root, tool_env)
                _run(_dvc("push", "--run-cache"), root, tool_env)
                params = load_params(root / "params.yaml")
                ensure_study_run(tracking_uri, params.mlflow.experiment, params.study.name)
                outcomes = _dispatch(root, stages, commit, tracking_uri, workspaces, checkpoints, repository, echo,
                                     Queue())
        finally:
            ray.shutdown()
        failed = [outcome for outcome in outcomes if outcome.error]
    else:
        outcomes, failed = [], []
    env = tool_env if checkpoints is None else {**tool_env, CHECKPOINTS_ENV: str(checkpoints)}
    finished = [outcome.stage for outcome in outcomes if not outcome.error]
    # --pull: the tasks' run-cache entries and outputs come from the remote, so the trained stages are
    # restored, not run. --keep-going: a net that failed stays out of date, the others reach evaluate,
    # register and report.
    result = subprocess.run(_dvc("repro", "--pull", "--keep-going"), cwd=root, env=env, text=True,
                            capture_output=True)
    skipped = [stage for stage in finished if f"Stage '{stage}' is cached - skipping run" in result.stdout]
    echo(f"study run: dvc repro restored {len(skipped)} of {len(finished)} trained net(s) from the run-cache"
         + (f"; {len(failed)} failed: {', '.join(f.stage for f in failed)}" if failed else ""))
    if result.returncode != 0 and not failed:
        raise StudyRunError(f"`dvc repro` failed after the trainings:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return outcomes


def _dispatch(root: Path, stages: list[str], commit: str, tracking_uri: str, workspaces: Path | None,
              checkpoints: Path | None, repository: str | None, echo, events) -> list[NetOutcome]:
    import ray

    params = load_params(root / "params.yaml")
    resources = ray.cluster_resources()
    if resources.get("GPU", 0) > 0:
        request = {"num_gpus": params.train.nproc, "num_cpus": 1}
    else:
        request = {"num_cpus": max(1, int(resources.get("CPU", 1)) // len(stages))}
    environment = {"MLFLOW_TRACKING_URI": tracking_uri,
                   CHECKPOINTS_ENV: str(checkpoints or Layout(root).checkpoints_dir)}
    workspaces = workspaces or Path(tempfile.gettempdir()) / "resnet-repro-study-run"
    task = ray.remote(max_retries=3, retry_exceptions=False)(train_net).options(**request)
    outcomes = {stage: NetOutcome(stage) for stage in stages}
    pending = {}
    for stage in stages:
        reference = task.remote(stage, repository or str(root), commit, str(workspaces), environment,
                                _local_dvc_config(root), events)
        pending[reference] = stage
        echo(f"queued   {stage} ({', '.join(f'{key}={value}' for key, value in request.items())})")
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            _report_events(events, outcomes, echo)
            for reference in done:
                stage = pending.pop(reference)
                outcome = outcomes[stage]
                try:
                    result = ray.get(reference)
                except Exception as error:  # the task's own error, or Ray's after its retries
                    outcome.error = str(error).strip().splitlines()[-1]
                    echo(f"failed   {stage}: {outcome.error}")
                    continue
                outcome.finished = result["time"]
                if result["resumed"]:
                    outcome.resumed_from = int(result["resumed"].split("iteration ")[1].split(":")[0])
                echo(f"finished {stage} on {result['node']}"
                     + (f" ({result['resumed'].split(':')[0].lower()})" if result["resumed"] else ""))
    except KeyboardInterrupt:
        echo("study run: stopping every training (each saves its checkpoint); run it again to resume")
        for reference in pending:
            ray.cancel(reference)
        _wait_until_stopped(set(pending.values()), events, outcomes, echo)
        raise
    _report_events(events, outcomes, echo)
    return list(outcomes.values())


def _wait_until_stopped(cancelled: set[str], events, outcomes: dict[str, NetOutcome], echo,
                        timeout: float = 300) -> None:
    """Wait for each cancelled net that had started to say its task has ended: the stopping training's
    last MLflow writes go to the tracking server, which the driver stops next. (A cancelled task's
    result is ready as soon as Ray has passed the cancellation on, before the task has finished.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _report_events(events, outcomes, echo)
        running = [stage for stage in cancelled if outcomes[stage].started and not outcomes[stage].ended]
        if not running:
            return
        time.sleep(0.5)
    echo(f"study run: still stopping after {timeout:.0f} s: {', '.join(running)}")


def _report_events(events, outcomes: dict[str, NetOutcome], echo) -> None:
    while not events.empty():
        event = events.get_nowait()
        outcome = outcomes[event["stage"]]
        if event["event"] == "started":
            outcome.attempts += 1
            outcome.node, outcome.gpus = event["node"], event["gpus"]
            outcome.started = outcome.started or event["time"]
            attempt = f", attempt {outcome.attempts}" if outcome.attempts > 1 else ""
            gpus = f", CUDA_VISIBLE_DEVICES={event['gpus']}" if event["gpus"] else ""
            # The node's id as well as its address: two Ray nodes may share a machine.
            echo(f"started  {event['stage']} on {event['node']}{gpus} (node {event['node_id']}, pid {event['pid']}"
                 f"{attempt})")
        elif event["event"] == "ended":
            outcome.ended = True
            if event["interrupted"]:
                echo(f"stopped  {event['stage']} (checkpoint saved)")
