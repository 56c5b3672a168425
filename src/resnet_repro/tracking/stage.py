"""The register@<variant> stage: the evaluated net becomes a new version of <dataset>-<variant>."""

import json

from resnet_repro.config import Layout, Params
from resnet_repro.io import write_json
from resnet_repro.tracking.registry import register_model
from resnet_repro.tracking.runs import git_commit, resolve_tracking_uri


def register_variant(params: Params, layout: Layout, variant: str, seed: int) -> dict:
    metrics_dir = layout.metrics_dir(variant, seed)
    train_summary = json.loads((metrics_dir / "train.json").read_text())
    evaluation = json.loads((metrics_dir / "eval.json").read_text())
    tags = {"variant": variant, "seed": seed, "iterations": params.train.iterations,
            "git_commit": git_commit(layout.root), "data_version": layout.data_version(),
            "study": params.study.name}
    registered = register_model(resolve_tracking_uri(layout.root, params.mlflow.tracking_uri),
                                run_id=train_summary["mlflow_run_id"], model_dir=layout.model_dir(variant, seed),
                                registered_name=f"{params.data.dataset}-{variant}", metrics=evaluation, tags=tags)
    write_json(metrics_dir / "registry.json", registered)
    print(f"Registered {registered['name']} version {registered['version']} "
          f"(aliases: {', '.join(registered['aliases']) or 'none'})", flush=True)
    return registered
