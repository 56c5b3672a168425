"""The model registry: publish a trained-model directory as a version, pull a version back, use it.

Registered models are named `<dataset>-<variant>` (e.g. cifar10-resnet56). Each version is a pyfunc
MLflow model whose artifacts are the trained-model directory (see `resnet_repro.artifacts`) plus a
model card, card.json, which records the net (arch, options, class names, input size) and its lineage
(git commit, data version, the training run's params, tags and metrics). The version's tags hold the
sha256 of all four files: they live in the registry's database, apart from the files, so a file changed
in the artifact store is caught on pull. Pulling downloads those files and loads tensors only
(safetensors): no pickle is read and no code from the artifact store runs.
The alias `champion` marks the version with the lowest test top-1 error. MLflow reserves the alias name
`latest` for its own meaning, the highest version number, which is what `NAME@latest` resolves to here.

References to a version: `models:/NAME@ALIAS`, `NAME@ALIAS`, `NAME/VERSION`, `NAME/latest`.
"""

import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import mlflow
import torch
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking._tracking_service import utils as tracking_utils

import resnet_repro
from resnet_repro.artifacts import DESCRIPTION, PREPROCESS, WEIGHTS, load_trained, verify
from resnet_repro.io import file_sha256
from resnet_repro.models import weights
from resnet_repro.tracking.runs import TRACKING_URI_ENV, connect, is_not_found
from resnet_repro.tracking.serving import classify_files, with_preprocessing

CARD = "card.json"
# The held-out error that elects the champion: the test split's, or for an image folder (whose val/ is
# its test set, as ImageNet's) the validation split's centre-crop error.
CHAMPION_METRICS = ("test_top1_error", "val_top1_error")
CHAMPION = "champion"
LATEST = "latest"  # not a stored alias: MLflow reserves it for the highest version
# File -> the version tag holding its sha256. Versions registered before the json files were hashed
# lack their tags; only the tensor files' tags are then required.
SHA256_TAGS = {WEIGHTS: "weights_sha256", PREPROCESS: "preprocess_sha256", DESCRIPTION: "description_sha256",
               CARD: "card_sha256"}
REQUIRED_SHA256_TAGS = {"weights_sha256", "preprocess_sha256"}
LOGGED_MODEL_NAME = "model"
# Where pyfunc keeps the files given as `artifacts`, inside the logged model.
PYFUNC_ARTIFACTS_DIR = "artifacts"
PYFUNC_MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
# The pyfunc imports resnet_repro; bundling the package's source makes the MLflow model loadable where
# resnet-repro is not installed.
PACKAGE_DIR = Path(resnet_repro.__file__).parent
# Written out rather than inferred: inference loads the model in a subprocess and takes seconds.
PIP_REQUIREMENTS = [f"{package}=={importlib.metadata.version(package)}"
                    for package in ("torch", "numpy", "safetensors", "pandas", "pillow")]
# No signature: MLflow would enforce one form of input, and the model takes several (see serving.py).
# The MLmodel file says what it takes instead.
MODEL_METADATA = {
    "input": "raw RGB images: uint8 pixel arrays (N, H, W, 3) at the net's input size, or encoded PNG/JPEG "
             "files (bytes; base64 strings in JSON), as a list or in a column 'image'",
    "output": "one row per image: class_index, class_name, probability of the most likely class, and "
              "probabilities {class name: probability}",
}
_REF = re.compile(r"(?:models:/)?(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+|latest))")

logger = logging.getLogger(__name__)


def register_model(tracking_uri: str, run_id: str, model_dir: Path, registered_name: str,
                   metrics: dict[str, float], tags: Mapping[str, object]) -> dict:
    """Log the trained model in `model_dir` to run `run_id` and make it a new version of `registered_name`.

    `run_id` is the finished training's run: its status and end time stay as the training left them. The
    version is tagged with `tags`, `metrics`, the arch and the sha256 of the four files. `tags` should carry
    `git_commit` and `data_version` (DVC's hash of the data): the card's lineage names them. `champion`
    moves to it if its held-out error (the first of CHAMPION_METRICS in `metrics`) is the lowest of all
    versions. Returns what the register stage records: name, version, aliases (including `latest`, which
    MLflow keeps for itself), run_id, model_uri and champion_version.
    """
    champion_metric = next((key for key in CHAMPION_METRICS if key in metrics), None)
    if champion_metric is None:
        raise ValueError(f"metrics for {registered_name} lack a held-out error ({' or '.join(CHAMPION_METRICS)}), "
                         f"which elects the champion; got {sorted(metrics)}")
    model_dir = Path(model_dir)
    description = json.loads((model_dir / DESCRIPTION).read_text())
    verify(model_dir, description)  # never publish a changed or damaged file
    client = connect(tracking_uri)
    training = client.get_run(run_id)
    if training.info.end_time is None:
        raise ValueError(f"MLflow run {run_id} has not ended (status {training.info.status}): only a finished "
                         "training's model can be registered")
    card = {**description, "registered_name": registered_name,
            "lineage": {"git_commit": tags.get("git_commit"), "data_version": tags.get("data_version"),
                        "mlflow_run_id": run_id, "params": training.data.params,
                        "metrics": metrics, "tags": tags}}

    with tempfile.TemporaryDirectory() as scratch:
        card_path = Path(scratch, CARD)
        card_path.write_text(json.dumps(card, indent=2, sort_keys=True, default=str) + "\n")
        files = {name: model_dir / name for name in (WEIGHTS, PREPROCESS, DESCRIPTION)} | {CARD: card_path}
        hashes = {SHA256_TAGS[name]: file_sha256(path) for name, path in files.items()}
        version_tags = {**tags, **metrics, "arch": description["arch"], **hashes}
        # The pyfunc needs the package's code only. An installed package also carries the published weights
        # (models/published/, 10 MB), which every registered version would otherwise copy.
        code = shutil.copytree(PACKAGE_DIR, Path(scratch, PACKAGE_DIR.name),
                               ignore=shutil.ignore_patterns(weights.IN_PACKAGE, "__pycache__"))
        with _default_tracking_uri(tracking_uri):
            with _ended_as_before(client, training), mlflow.start_run(run_id=run_id), _quiet_signature_warning():
                logged = mlflow.pyfunc.log_model(
                    name=LOGGED_MODEL_NAME, python_model=str(PYFUNC_MODEL_CODE),
                    artifacts={name: str(path) for name, path in files.items()},
                    code_paths=[str(code)], pip_requirements=PIP_REQUIREMENTS, metadata=MODEL_METADATA)
            _create_registered_model_if_missing(client, registered_name)
            # A database-backed registry looks the logged model up through the default tracking URI.
            version = client.create_model_version(
                registered_name, source=logged.model_uri, run_id=run_id, model_id=logged.model_id,
                tags={key: str(value) for key, value in version_tags.items() if value is not None}).version
    champion = _elect_champion(client, registered_name, champion_metric)
    client.set_registered_model_alias(registered_name, CHAMPION, champion)

    aliases = client.get_registered_model(registered_name).aliases
    return {"name": registered_name, "version": int(version),
            "aliases": sorted([LATEST, *(alias for alias, aliased in aliases.items() if aliased == version)]),
            "run_id": run_id, "model_uri": f"models:/{registered_name}/{version}",
            "champion_version": int(champion)}


def pull(ref: str, out_dir: Path, tracking_uri: str) -> Path:
    """Download the version `ref` names into `out_dir` (the trained-model files and card.json), verified.

    Files whose sha256 differs from the version's tags are refused before anything lands in `out_dir`.
    Only those four files are downloaded, and nothing is loaded: no pickle is read, no code runs.
    """
    client = connect(tracking_uri)
    version = _find_version(client, ref, tracking_uri)
    stored_at = client.get_model_version_download_uri(version.name, version.version)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".pull-") as staging:
        mlflow.artifacts.download_artifacts(artifact_uri=f"{stored_at}/{PYFUNC_ARTIFACTS_DIR}", dst_path=staging,
                                            tracking_uri=tracking_uri)
        downloaded = Path(staging, PYFUNC_ARTIFACTS_DIR)
        for name, tag in SHA256_TAGS.items():
            recorded = version.tags.get(tag)
            if recorded is None and tag not in REQUIRED_SHA256_TAGS:
                logger.warning("%s version %s has no %s tag (registered before it was recorded): %s is not "
                               "verified", version.name, version.version, tag, name)
                continue
            actual = file_sha256(downloaded / name) if (downloaded / name).is_file() else "(missing)"
            if actual != recorded:
                raise ValueError(f"{name} of {version.name} version {version.version} has sha256 {actual}, but the "
                                 f"registry's tag {tag} records {recorded}; the stored file was changed or damaged")
        for name in (WEIGHTS, PREPROCESS, DESCRIPTION, CARD):
            os.replace(downloaded / name, out_dir / name)
    return out_dir


def load_registered(ref: str, tracking_uri: str | None = None, device: str = "cpu") -> torch.nn.Module:
    """The net `ref` names, in eval mode on `device`, with `class_names` and the `mean_image` for
    `data.normalize` attached. `tracking_uri` None means MLflow's own default (MLFLOW_TRACKING_URI, ...)."""
    with tempfile.TemporaryDirectory(prefix="resnet-repro-pull-") as directory:
        trained = load_trained(pull(ref, Path(directory), tracking_uri or mlflow.get_tracking_uri()), device)
    return with_preprocessing(trained)


def predict(ref: str, image_paths: Sequence[Path], tracking_uri: str | None) -> list[tuple[str, str, float]]:
    """(path, class name, probability) of the most likely class for each PNG or JPEG file, by the registered
    net `ref`: what `serving.classify_files` answers (published weights take that path without MLflow: cli.py)."""
    return classify_files(load_registered(ref, tracking_uri), image_paths)


@contextmanager
def _default_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """Make `tracking_uri` MLflow's process-wide default inside the block.

    Model logging finds its run only through the default, and a database-backed registry finds logged
    models through it. MLflow keeps the default in a module variable and copies it into the
    MLFLOW_TRACKING_URI environment variable; both are put back as they were.
    """
    saved_uri = tracking_utils._tracking_uri
    saved_env = os.environ.get(TRACKING_URI_ENV)
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        # None also removes MLFLOW_TRACKING_URI (MLflow handles it, though its annotation says str | Path).
        mlflow.set_tracking_uri(saved_uri)  # type: ignore[arg-type]
        if saved_env is None:
            os.environ.pop(TRACKING_URI_ENV, None)
        else:
            os.environ[TRACKING_URI_ENV] = saved_env


@contextmanager
def _ended_as_before(client: MlflowClient, run: Run) -> Iterator[None]:
    """Give `run` back its status and end time when the block ends, however it ends.

    MLflow logs a model only to an active run, so logging one reopens the run, and closing it again would
    set its end time to now: the run's duration in MLflow would run up to the registration, not the
    training. (pyfunc.log_model takes no run id, and creating the logged model by hand to avoid the
    reopening would leave the model's MLmodel file without its run.)
    """
    try:
        yield
    finally:
        client.set_terminated(run.info.run_id, status=run.info.status, end_time=run.info.end_time)


@contextmanager
def _quiet_signature_warning() -> Iterator[None]:
    """Silence MLflow's warning that it cannot infer a signature: the model has none on purpose."""
    class _NoSignatureWarning(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "infer model signature" not in record.getMessage()

    pyfunc_logger, quiet = logging.getLogger("mlflow.pyfunc"), _NoSignatureWarning()
    pyfunc_logger.addFilter(quiet)
    try:
        yield
    finally:
        pyfunc_logger.removeFilter(quiet)


def _create_registered_model_if_missing(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _elect_champion(client: MlflowClient, name: str, metric: str) -> str:
    """The version with the lowest `metric`; on a tie the current champion stays, else the oldest wins."""
    current = client.get_registered_model(name).aliases.get(CHAMPION)
    evaluated = [version for version in client.search_model_versions(f"name = '{name}'") if metric in version.tags]
    best = min(evaluated, key=lambda version: (float(version.tags[metric]), version.version != current,
                                               int(version.version)))
    return best.version


def _find_version(client: MlflowClient, ref: str, tracking_uri: str) -> ModelVersion:
    """The version `ref` names; a LookupError that lists what does exist if it names nothing."""
    match = _REF.fullmatch(ref)
    if match is None:
        raise ValueError(f"{ref!r} is not a model reference: use models:/NAME@ALIAS, NAME@ALIAS or NAME/VERSION")
    name, alias, number = match["name"], match["alias"], match["version"]
    try:
        registered = client.get_registered_model(name)
    except MlflowException as error:
        if not is_not_found(error):
            raise
        existing = sorted(model.name for model in client.search_registered_models())
        raise LookupError(f"{ref}: {tracking_uri} has no registered model {name!r}; "
                          f"it has: {', '.join(existing) or 'none'}") from None
    if LATEST in (alias, number):
        number = max(_version_numbers(client, name), default=None)
    elif alias is not None:
        if alias not in registered.aliases:
            aliases = ", ".join(f"{known} (version {version})" for known, version in sorted(registered.aliases.items()))
            raise LookupError(f"{ref}: {name} has no alias {alias!r}; its aliases: {aliases or 'none'}")
        number = registered.aliases[alias]
    try:
        return client.get_model_version(name, number)
    except MlflowException as error:
        if not is_not_found(error):
            raise
        versions = ", ".join(map(str, _version_numbers(client, name)))
        raise LookupError(f"{ref}: {name} has no version {number}; its versions: {versions or 'none'}") from None


def _version_numbers(client: MlflowClient, name: str) -> list[int]:
    return sorted(int(version.version) for version in client.search_model_versions(f"name = '{name}'"))
