"""`resnet-repro study run`'s driver: the process in the user's workspace, whose git tree must be clean
but for what DVC writes.

1. It checks the study (preflight), starts or joins Ray, and makes sure the tracking store takes many
   writers: MLFLOW_TRACKING_URI if it names a server, else a local `mlflow server` over the project's
   own store (one machine only), which dies with the driver. The study's parent run is created before
   any net starts, so that every net nests under the same one.
2. It runs `dvc repro ffcv` here and pushes the data with its run-cache entries, for every task to pull.
3. It submits one task (dispatch.task) per out-of-date `train@` stage, then `ray.wait`s for them and
   reports each as it finishes or fails; Ray retries a task whose worker died. Ctrl-C cancels them all
   (ray.cancel), and waits until each has ended, its checkpoint saved, before the tracking server stops.
4. At the end it runs `dvc repro --pull` here: the trained stages are restored from the run-cache (the
   workspace's dvc.lock then records the outputs each task pushed) and evaluate, register and report
   run as usual, so the workspace ends as a sequential `dvc repro` would have left it.
"""

import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ray

from resnet_repro.config import Params, load_params
from resnet_repro.dispatch.common import QUIET_TOOLS, Net, StudyRunError, dvc, lock_outputs, run
from resnet_repro.dispatch.preflight import (
    is_server,
    local_dvc_config,
    out_of_date_nets,
    require_a_node_for,
    require_a_shareable_store,
    require_clean_tree,
    task_resources,
)
from resnet_repro.dispatch.task import Checkout, Trained, train_net
from resnet_repro.layout import CHECKPOINTS_ENV, Layout
from resnet_repro.tracking.runs import ensure_study_run, resolve_tracking_uri
from resnet_repro.tracking.server import TrackingServerError, tracking_server

Echo = Callable[[str], None]


@dataclass(frozen=True)
class NetOutcome:
    """What became of one net's task: its result if it finished, else why not."""

    stage: str
    trained: Trained | None = None
    error: str | None = None


def run_study(root: Path, address: str | None = None, workspaces: Path | None = None,
              checkpoints: Path | None = None, repository: str | None = None, echo: Echo = print) -> list[NetOutcome]:
    """Train the study's out-of-date nets on Ray (`address`, else RAY_ADDRESS, else a local Ray), then
    finish the pipeline here with `dvc repro`."""
    root = Path(root).resolve()
    commit = require_clean_tree(root)
    params = load_params(root / "params.yaml")
    nets = out_of_date_nets(root, params)
    echo(f"study run: {len(nets)} net(s) to train at commit {commit[:12]}: "
         f"{', '.join(net.stage for net in nets) or 'none'}")
    outcomes = []
    if nets:
        ray.init(address=address, include_dashboard=None, log_to_driver=False)
        try:
            request = task_resources(params, ray.nodes(), len(nets))
            require_a_node_for(request, ray.nodes())
            with shared_tracking_store(root, params, local_cluster=_is_local(ray.nodes())) as tracking_uri:
                tools = {**os.environ, **QUIET_TOOLS}
                run(dvc("repro", "ffcv"), root, tools)
                run(dvc("push", "--run-cache"), root, tools)
                ensure_study_run(tracking_uri, params.mlflow.experiment, params.study.name)
                checkout = Checkout(repository or str(root), commit,
                                    str(workspaces or Path(tempfile.gettempdir()) / "resnet-repro-study-run"),
                                    local_dvc_config(root))
                environment = {**QUIET_TOOLS, "MLFLOW_TRACKING_URI": tracking_uri,
                               CHECKPOINTS_ENV: str(checkpoints or Layout(root).checkpoints_dir)}
                outcomes = _train(nets, checkout, request, environment, echo)
        finally:
            ray.shutdown()
    _restore_in_workspace(root, outcomes, checkpoints, echo)
    return outcomes


@contextmanager
def shared_tracking_store(root: Path, params: Params, local_cluster: bool) -> Iterator[str]:
    """A tracking URI that many processes may write to at once: MLFLOW_TRACKING_URI if it is a server;
    on one machine, a `mlflow server` over the project's store until the block ends (or the driver dies)."""
    uri = resolve_tracking_uri(root, params.mlflow.tracking_uri)
    require_a_shareable_store(uri, local_cluster)
    if is_server(uri):
        yield uri
        return
    scratch = root / ".dvc" / "tmp"  # ignored by git: DVC's own scratch space
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        with tracking_server(uri, scratch / "study-run-mlflow.log", "--no-serve-artifacts", cwd=root) as url:
            yield url
    except TrackingServerError as error:  # at start-up
        raise StudyRunError(f"the local tracking server did not start: {error}") from None


def _is_local(nodes: list[dict]) -> bool:
    """Whether the cluster is this machine alone."""
    alive = [node for node in nodes if node["Alive"]]
    return len(alive) == 1 and alive[0]["NodeManagerAddress"] == ray.util.get_node_ip_address()


def _train(nets: list[Net], checkout: Checkout, request: dict[str, int], environment: dict[str, str],
           echo: Echo) -> list[NetOutcome]:
    """One task per net, all submitted at once; reports each as it ends. Ctrl-C cancels those that have
    not ended, and waits until they have (a second Ctrl-C stops waiting)."""
    task = train_net.options(**request, runtime_env={"env_vars": environment})
    pending = {}  # the tasks under way: their result's ObjectRef -> stage
    for net in nets:
        pending[task.remote(net, checkout)] = net.stage
        echo(f"queued   {net.stage} ({', '.join(f'{key}={value}' for key, value in request.items())})")
    outcomes = []
    try:
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            outcomes.append(_collect(done, pending.pop(done), echo))
    except KeyboardInterrupt:
        echo("study run: stopping every training (each saves its checkpoint); run it again to resume")
        for reference in pending:
            ray.cancel(reference)
        # A cancelled task's result is ready once the task has ended: its training has saved its
        # checkpoint and written its last to the tracking server, which the driver stops next.
        ray.wait(list(pending), num_returns=len(pending))
        for reference, stage in pending.items():
            _collect(reference, stage, echo)
        raise
    return outcomes


def _collect(reference: ray.ObjectRef, stage: str, echo: Echo) -> NetOutcome:
    """What became of a task that has ended: what it trained, why it failed, or that it was stopped."""
    try:
        trained: Trained = ray.get(reference)
    except ray.exceptions.TaskCancelledError as cancelled:
        # Raised by the task itself (a RayTaskError) if it had started, else by Ray.
        started = isinstance(cancelled, ray.exceptions.RayTaskError)
        echo(f"stopped  {stage} ({'checkpoint saved' if started else 'it had not started'})")
        return NetOutcome(stage, error="stopped")
    except ray.exceptions.RayError as error:
        # The task's own error (a failed stage says which, and its error line), or Ray's, e.g. a worker
        # that died more often than max_retries allows: its last line, on the one line of the report.
        cause = error.cause if isinstance(error, ray.exceptions.RayTaskError) else error
        message = str(cause).strip().splitlines()[-1]
        echo(f"failed   {stage}: {message}")
        return NetOutcome(stage, error=message)
    # Ray sets CUDA_VISIBLE_DEVICES to the GPUs it assigned the task.
    gpus = f", CUDA_VISIBLE_DEVICES={','.join(trained.gpus)}" if trained.gpus else ""
    resumed = "" if trained.resumed_from is None else f" (resumed from checkpoint at iteration {trained.resumed_from})"
    echo(f"finished {stage} on {trained.node}{gpus} (node {trained.node_id}, pid {trained.pid}){resumed}")
    return NetOutcome(stage, trained=trained)


def _restore_in_workspace(root: Path, outcomes: list[NetOutcome], checkpoints: Path | None, echo: Echo) -> None:
    """`dvc repro --pull --keep-going` here: the tasks' run-cache entries and outputs come from the remote,
    so the trained stages are restored, not run; a net that failed stays out of date, the others go on
    to evaluate, register and report."""
    env = {**os.environ, **QUIET_TOOLS, **({CHECKPOINTS_ENV: str(checkpoints)} if checkpoints else {})}
    result = subprocess.run(dvc("repro", "--pull", "--keep-going"), cwd=root, env=env, text=True, capture_output=True)
    finished = [outcome for outcome in outcomes if outcome.trained]
    failed = [outcome for outcome in outcomes if outcome.error]
    # Restored: the workspace's lock file records the very outputs the task pushed (a training run here
    # would have written others: its train.json holds its own run id and timings).
    restored = [outcome for outcome in finished
                if outcome.trained is not None and lock_outputs(root, outcome.stage) == outcome.trained.outputs]
    echo(f"study run: dvc repro restored {len(restored)} of {len(finished)} trained net(s) from the run-cache"
         + (f"; {len(failed)} failed: {', '.join(outcome.stage for outcome in failed)}" if failed else ""))
    if result.returncode != 0 and not failed:
        raise StudyRunError(f"`dvc repro` failed after the trainings:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
