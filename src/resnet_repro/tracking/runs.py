"""The MLflow side of a training: which store, one run per training (resumable), params, tags, metrics.

    uri = resolve_tracking_uri(project_root, configured_uri)
    with TrainingRun.start(uri, "resnet-repro-cifar10", "resnet20 seed 0", params, tags) as run:
        run.log_metrics({"loss": 2.30, "lr": 0.1}, step=1)

Leaving the block ends the run FINISHED, or FAILED with the exception recorded as a tag (KILLED for
train.errors.TrainingInterrupted: a training stopped by a signal, to be resumed).
A run that has already FINISHED can be started again to add later results (the evaluation's metrics):
it is not reopened, so its status and end time, and with them its duration in MLflow, stay the training's.

A new run whose tags name a `study` is nested under that study's parent run (one per study and
experiment, created by the first of its runs), so the MLflow UI lists a study's runs together;
the report stage logs the study's table and figures to the parent (`log_to_study_run`).
"""

import os
import time
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.rest_utils import http_request, verify_rest_response
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH, MAX_TAG_VAL_LENGTH

from resnet_repro.train.errors import TrainingInterrupted

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
FAILURE_REASON_TAG = "failure_reason"
STUDY_RUN_TAG = "study_run"  # on a study's parent run: the study's name
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag
_SQLITE_PREFIX = "sqlite:///"
# The first request to a tracking server: one retry, a second apart, at most PROBE_TIMEOUT seconds each.
# Later requests keep MLflow's own patient retries (MLFLOW_HTTP_REQUEST_*: minutes), so a blip during a
# long training is ridden out; only a server that is not there at the start fails at once.
PROBE_RETRIES = 1
PROBE_TIMEOUT = 10
_PROBE_ENDPOINT = "/api/2.0/mlflow/experiments/search"


class TrackingStoreUnreachable(ConnectionError):
    """The MLflow tracking store did not answer; the message names its URI."""


def resolve_tracking_uri(project_root: Path, configured: str | None) -> str:
    """MLFLOW_TRACKING_URI if set, else `configured`, else `sqlite:///mlflow.db` in `project_root`.

    A relative sqlite path is made absolute against `project_root`, so the same database is found from
    any working directory.
    """
    uri = os.environ.get(TRACKING_URI_ENV) or configured or DEFAULT_TRACKING_URI
    if uri.startswith(_SQLITE_PREFIX):
        database = Path(uri.removeprefix(_SQLITE_PREFIX))
        # "sqlite:///" + an absolute path already has four slashes; only a relative path is anchored.
        if not database.is_absolute():
            uri = f"{_SQLITE_PREFIX}{(Path(project_root) / database).resolve()}"
    return uri


def connect(tracking_uri: str) -> MlflowClient:
    """A client for the store at `tracking_uri` (which also holds the model registry), once it answers.

    Asking at once means a stage fails before training for an hour, not at its first log call. A tracking
    server (http, https) that does not answer fails within seconds (PROBE_RETRIES, PROBE_TIMEOUT), whatever
    MLFLOW_HTTP_REQUEST_MAX_RETRIES says; nothing global is changed for that. A database URI given directly
    (postgresql://...) is retried by MLflow itself for about 100 s before it fails.
    """
    try:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        if urlparse(tracking_uri).scheme in ("http", "https"):
            _probe_server(client)
        else:
            client.search_experiments(max_results=1)
    # Each kind of store fails its own way (MlflowException over HTTP, SQLAlchemyError for a database,
    # OSError for a path); any failure to answer this trivial query means the store is unusable.
    except Exception as error:
        raise TrackingStoreUnreachable(f"the MLflow tracking store {tracking_uri} does not answer: {error}. "
                                       "Start it, or point MLFLOW_TRACKING_URI (or mlflow.tracking_uri in "
                                       "params.yaml) at one that runs") from error
    return client


def _probe_server(client: MlflowClient) -> None:
    """One cheap request to the server behind `client`, with few retries and a short timeout.

    MLflow's client has no per-call retry setting; `http_request` takes them as arguments, with the
    credentials (MLFLOW_TRACKING_TOKEN, basic auth, ...) the client's store would send.
    """
    host_creds = client._tracking_client.store.get_host_creds()
    response = http_request(host_creds, _PROBE_ENDPOINT, "POST", max_retries=PROBE_RETRIES, backoff_factor=1,
                            backoff_jitter=0, timeout=PROBE_TIMEOUT, json={"max_results": 1})
    verify_rest_response(response, _PROBE_ENDPOINT)


def is_not_found(error: MlflowException) -> bool:
    """Whether the store said the run, model, version or alias asked for does not exist."""
    return error.error_code == "RESOURCE_DOES_NOT_EXIST"


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"train": {"lr": 0.1}} -> {"train.lr": "0.1"}: MLflow params are flat strings."""
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(flatten_params(value, prefix=f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


class TrainingRun:
    """The MLflow run of one training. Create it with `TrainingRun.start`.

    Metrics are buffered and written in batches (once `flush_seconds` have passed, and at `end`): one
    write per step costs about 15 ms on sqlite, minutes over a full training. A kill loses the buffer, so
    call `flush` when saving a checkpoint: the resumed training then logs again exactly the missing steps.
    """

    def __init__(self, client: MlflowClient, run_id: str, steps_already_logged: dict[str, int],
                 flush_seconds: float, training_finished: bool = False):
        self.client = client
        self.run_id = run_id
        self._steps_already_logged = steps_already_logged
        self._training_finished = training_finished  # then `end` leaves the status and end time alone
        self._flush_seconds = flush_seconds
        self._pending: list[Metric] = []
        self._last_flush = time.monotonic()
        self._ended = False

    @classmethod
    def start(cls, tracking_uri: str, experiment: str, run_name: str, params: dict[str, Any],
              tags: dict[str, Any], resume_run_id: str | None = None, flush_seconds: float = 10.0) -> "TrainingRun":
        """Create a run in `experiment`, or reopen `resume_run_id`, then log `params` and `tags`.

        Nested params are flattened to dotted keys; tags whose value is None are left out. A resumed run
        keeps its id and ignores metrics for steps it already holds, so curves are not duplicated. A
        resumed run that FINISHED stays FINISHED, with its end time, whatever happens in the block.
        """
        client = connect(tracking_uri)
        training_finished = False
        if resume_run_id is None:
            experiment_id = _experiment_id(client, experiment)
            nesting = {}
            if tags.get("study"):
                nesting[PARENT_RUN_TAG] = study_run_id(client, experiment_id, str(tags["study"]))
            run_id = client.create_run(experiment_id, run_name=run_name, tags=nesting).info.run_id
            steps_already_logged = {}
        else:
            run_id = resume_run_id
            resumed = _existing_run(client, run_id, tracking_uri)
            steps_already_logged = {name: max(metric.step for metric in client.get_metric_history(run_id, name))
                                    for name in resumed.data.metrics}
            training_finished = resumed.info.status == "FINISHED"
            if not training_finished:  # an interrupted training goes on
                if FAILURE_REASON_TAG in resumed.data.tags:  # the interruption it records is over
                    client.delete_tag(run_id, FAILURE_REASON_TAG)
                client.update_run(run_id, status="RUNNING")
        run = cls(client, run_id, steps_already_logged, flush_seconds, training_finished)
        run._log_params_and_tags(flatten_params(params), tags)
        return run

    def _log_params_and_tags(self, params: dict[str, str], tags: dict[str, Any]) -> None:
        # Logging a param again with the same value is allowed, so a resumed run can log them all again;
        # a different value makes MLflow refuse, naming the param.
        for chunk in _chunks(list(params.items()), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=[Param(key, value) for key, value in chunk])
        present = {key: str(value) for key, value in tags.items() if value is not None}
        for chunk in _chunks(list(present.items()), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=[RunTag(key, value) for key, value in chunk])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Queue `metrics` at `step`, except those the run already holds up to this step (before a resume)."""
        timestamp = int(time.time() * 1000)
        for key, value in metrics.items():
            if step > self._steps_already_logged.get(key, -1):
                self._pending.append(Metric(key, float(value), timestamp, step))
        if len(self._pending) >= MAX_METRICS_PER_BATCH or time.monotonic() - self._last_flush >= self._flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered metrics now."""
        for chunk in _chunks(self._pending, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=chunk)
        self._pending.clear()
        self._last_flush = time.monotonic()

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str = "FINISHED", reason: str | None = None) -> None:
        """Flush, record `reason` (for a FAILED run) as the failure_reason tag, and close the run. Idempotent.

        A run whose training had finished before it was started again only takes the buffered metrics:
        what fails after the training (an evaluation) is not the training's status.
        """
        if self._ended:
            return
        self.flush()
        if not self._training_finished:
            if reason is not None:
                self.client.set_tag(self.run_id, FAILURE_REASON_TAG, reason[:MAX_TAG_VAL_LENGTH])
            self.client.set_terminated(self.run_id, status=status)
        self._ended = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error is None:
            self.end("FINISHED")
        else:
            # A training stopped by a signal is to be resumed, not a failure.
            status = "KILLED" if isinstance(error, TrainingInterrupted) else "FAILED"
            self.end(status, reason=f"{error_type.__name__}: {error}")


def ensure_study_run(tracking_uri: str, experiment: str, study: str) -> str:
    """The study's parent run in `experiment`, created if missing: before nets start at once, each of
    which would otherwise create its own."""
    client = connect(tracking_uri)
    return study_run_id(client, _experiment_id(client, experiment), study)


def study_run_id(client: MlflowClient, experiment_id: str, study: str) -> str:
    """The id of `study`'s parent run in the experiment, created on first use.

    The parent holds no training of its own: it is closed at once and only gathers its nested runs and
    the report's artifacts.
    """
    found = client.search_runs([experiment_id], filter_string=f"tags.{STUDY_RUN_TAG} = '{study}'",
                               order_by=["attributes.start_time ASC"], max_results=1)
    if found:
        return found[0].info.run_id
    parent = client.create_run(experiment_id, run_name=study, tags={STUDY_RUN_TAG: study, "study": study})
    client.set_terminated(parent.info.run_id, status="FINISHED")
    return parent.info.run_id


def log_to_study_run(tracking_uri: str, experiment: str, study: str, files: list[Path],
                     metrics: dict[str, float], tags: dict[str, str] | None = None) -> str:
    """Log the report's `files` (directories keep their name), summary `metrics` and `tags` to the
    study's parent run; returns its id."""
    client = connect(tracking_uri)
    run_id = study_run_id(client, _experiment_id(client, experiment), study)
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, value)
    for path in files:
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=path.name)
        else:
            client.log_artifact(run_id, str(path))
    timestamp = int(time.time() * 1000)
    entries = [Metric(key, float(value), timestamp, 0) for key, value in metrics.items()]
    for chunk in _chunks(entries, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk)
    return run_id


def _experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def _existing_run(client: MlflowClient, run_id: str, tracking_uri: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException as error:
        if not is_not_found(error):
            raise
        raise LookupError(f"cannot resume MLflow run {run_id}: {tracking_uri} does not have it; "
                          "start a new run instead") from None


def _chunks(items: list, size: int) -> list[list]:
    """`items` in consecutive slices of at most `size`: MLflow limits how much one log_batch call carries."""
    return [items[start:start + size] for start in range(0, len(items), size)]
