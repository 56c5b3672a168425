"""The register@<variant> stage: the evaluated net becomes a new version of <dataset>-<variant>."""

import json

from resnet_repro.config import Params
from resnet_repro.io import write_json
from resnet_repro.layout import EVALUATION, REGISTRATION, TRAIN_SUMMARY, TRAINING_RUN, Layout
from resnet_repro.tracking.registry import register_model
from resnet_repro.tracking.runs import connect, resolve_tracking_uri


def register_variant(params: Params, layout: Layout, variant: str, seed: int) -> dict:
    metrics_dir = layout.metrics_dir(variant, seed)
    train_summary = json.loads((metrics_dir / TRAIN_SUMMARY).read_text())
    evaluation = json.loads((metrics_dir / EVALUATION).read_text())
    tracking_uri = resolve_tracking_uri(layout.root, params.mlflow.tracking_uri)
    run_id = json.loads((metrics_dir / TRAINING_RUN).read_text())["mlflow_run_id"]
    # The version carries the tags of the run that trained it (variant, family, depth, shortcut, seed,
    # git commit and data version as they were at training time), not those of today's checkout.
    training_tags = {key: value for key, value in connect(tracking_uri).get_run(run_id).data.tags.items()
                     if not key.startswith("mlflow.")}
    registered = register_model(tracking_uri, run_id=run_id, model_dir=layout.model_dir(variant, seed),
                                registered_name=f"{params.data.dataset}-{variant}", metrics=evaluation,
                                tags={**training_tags, "iterations": train_summary["iterations"]})
    write_json(metrics_dir / REGISTRATION, registered)
    print(f"Registered {registered['name']} version {registered['version']} "
          f"(aliases: {', '.join(registered['aliases'])})", flush=True)
    return registered
