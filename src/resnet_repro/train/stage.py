"""The train@<variant> stage: one net, one seed, the train section of params.yaml, one MLflow run.

Run by torchrun (resnet_repro.train.distributed), each process calls `train_variant`; rank 0 alone
writes.

Outputs (paths from layout.Layout): the resumable checkpoint, the final weights (safetensors), the
normalisation the net was trained with, a model.json that says how to rebuild it, train.json and
the curves that dvc.yaml declares as plots.
"""

import json
import math
import random

import numpy as np
import torch

from resnet_repro import models
from resnet_repro.artifacts import save_trained
from resnet_repro.config import ConfigError, Params, TrainParams
from resnet_repro.data.loading import augmentation_from, make_split_loader, split_names
from resnet_repro.data.stats import load_stats, mean_image_tensor
from resnet_repro.device import autocast_dtype, configure_determinism, resolve_compile, resolve_device
from resnet_repro.evaluate.accuracy import top_k_errors
from resnet_repro.io import write_json, write_tsv
from resnet_repro.layout import Layout
from resnet_repro.tracking.runs import TrainingRun, git_commit, resolve_tracking_uri
from resnet_repro.train.checkpoint import fingerprint, load_checkpoint, save_checkpoint, source_digest
from resnet_repro.train.distributed import Processes
from resnet_repro.train.loop import LoopSettings, fit
from resnet_repro.train.recipe import schedule_for

STEP_COLUMNS = ["step", "loss", "train_error", "lr", "images_per_second"]
ERROR_COLUMNS = ["step", "train_error", "test_error"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def parameter_groups(model: torch.nn.Module, weight_decay: float, exempt_bn_and_bias: bool) -> list[dict]:
    """SGD parameter groups: all decayed (the paper), or BN scales/shifts and biases (every tensor of
    fewer than 2 dimensions) exempt from weight decay."""
    if not exempt_bn_and_bias:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    decayed = [p for p in model.parameters() if p.ndim >= 2]
    exempt = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]


def optimizer_for(model: torch.nn.Module, train: TrainParams) -> torch.optim.SGD:
    """The recipe's SGD: lr, momentum and weight decay of the train section (the benchmarks use it too)."""
    return torch.optim.SGD(parameter_groups(model, train.weight_decay, train.no_weight_decay_on_bn_and_bias),
                           lr=train.lr, momentum=train.momentum)


class _NotLogged:
    """The MLflow run of the ranks other than 0: they log nothing (and never checkpoint)."""

    def __enter__(self) -> "_NotLogged":
        return self

    def __exit__(self, *exception) -> None:
        return None

    def log_metrics(self, metrics: dict, step: int) -> None:
        pass


def train_variant(params: Params, layout: Layout, variant: str, seed: int) -> dict | None:
    """Train one net; the summary that train.json holds, or None on ranks other than 0."""
    processes = Processes.from_environment()
    device = processes.device(resolve_device(params.train.device))
    processes.start(device)
    try:
        return _train_variant(params, layout, variant, seed, processes, device)
    finally:
        processes.stop()


def _train_variant(params: Params, layout: Layout, variant: str, seed: int, processes: Processes,
                   device: torch.device) -> dict | None:
    model_dir, metrics_dir = layout.model_dir(variant, seed), layout.metrics_dir(variant, seed)
    train = params.train
    dtype = autocast_dtype(train.precision, device)
    configure_determinism(train.deterministic, train.cudnn_benchmark)
    spec = models.spec(variant)
    stats = load_stats(layout.prepared_dir / "stats.json")
    class_names = json.loads((layout.prepared_dir / "meta.json").read_text())["class_names"]
    mean_image = mean_image_tensor(stats, size=augmentation_from(params, layout).crop_size).to(device)

    seed_everything(seed)
    memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
    model = models.build(variant, num_classes=len(class_names)).to(device, memory_format=memory_format)
    optimizer = optimizer_for(model, train)
    schedule = schedule_for(params.train, spec.depth)
    # Each process takes its share of every global batch of train.batch_size.
    train_loader = make_split_loader(params, layout, "train", train=True, batch_size=processes.share_of(train.batch_size),
                                     mean_image=mean_image, device=device, seed=seed, rank=processes.rank,
                                     num_replicas=processes.world_size)
    # The curves' held-out error (rank 0's): the test split where there is one (CIFAR), else an image
    # folder's val/.
    measure_test_error = None
    if processes.is_main:
        curve_split = "test" if "test" in split_names(layout) else "val"
        test_loader = make_split_loader(params, layout, curve_split, train=False,
                                        batch_size=params.evaluate.batch_size, mean_image=mean_image, device=device)

        def measure_test_error() -> float:
            return top_k_errors(model, test_loader, device=device, dtype=dtype)["top1_error"]

    # A plateau schedule follows the validation error (never the test error): the val split, measured by
    # rank 0 and sent to the others, whose schedules must take the same decisions.
    measure_validation_error = None
    if train.schedule == "plateau":
        if "val" not in split_names(layout):
            raise ConfigError("params.yaml: train.schedule = 'plateau' needs a validation split: set "
                              "data.val_size > 0")
        if processes.is_main:
            val_loader = make_split_loader(params, layout, "val", train=False,
                                           batch_size=params.evaluate.batch_size, mean_image=mean_image, device=device)

        def measure_validation_error() -> float:
            error = top_k_errors(model, val_loader, device=device, dtype=dtype)["top1_error"] if processes.is_main \
                else math.nan
            return processes.from_main(error)

    # A checkpoint is resumed only if the same configuration and code wrote it and it is unfinished:
    # a finished one means DVC re-runs the stage because something changed (or was forced).
    run_fingerprint = fingerprint(params.train.model_dump(), params.augment.model_dump(), variant, seed,
                                  stats["channel_mean"].tolist(), source_digest())
    checkpoint_path = layout.checkpoint_path(variant, seed)
    resume = load_checkpoint(checkpoint_path)
    if resume is not None and (resume["fingerprint"] != run_fingerprint or resume["complete"]):
        if processes.is_main:
            why = "is finished" if resume["complete"] else "was written by another configuration or code"
            print(f"{checkpoint_path} {why}: training from scratch", flush=True)
        resume = None

    # The net is logged as params too (model.variant, model.family, model.depth): MLflow's compare view
    # plots params and metrics, not tags, and the study asks how test error goes with depth in each family.
    net = {"variant": variant, "family": spec.family, "depth": spec.depth}
    tags = {**net, "shortcut": spec.shortcut, "seed": seed, "dataset": params.data.dataset,
            "git_commit": git_commit(layout.root), "data_version": layout.data_version(), "study": params.study.name,
            "device": device.type, "precision": str(dtype).removeprefix("torch.") if dtype else "float32",
            "processes": processes.world_size}
    run_context = _NotLogged()
    if processes.is_main:
        run_context = TrainingRun.start(
            resolve_tracking_uri(layout.root, params.mlflow.tracking_uri), params.mlflow.experiment,
            run_name=f"{variant} seed {seed}", params={"model": net, **params.model_dump()}, tags=tags,
            resume_run_id=resume["mlflow_run_id"] if resume else None)
    with run_context as run:
        def checkpoint(state: dict) -> None:  # called on rank 0 only
            run.flush()  # metrics up to this iteration reach MLflow before the checkpoint that covers them
            complete = state["iteration"] == params.train.iterations
            save_checkpoint(checkpoint_path, {**state, "fingerprint": run_fingerprint, "complete": complete,
                                              "mlflow_run_id": run.run_id})

        settings = LoopSettings(iterations=params.train.iterations, log_every=params.train.log_every,
                                checkpoint_every=params.train.checkpoint_every,
                                checkpoint_seconds=params.train.checkpoint_seconds, eval_every=params.train.eval_every,
                                device=device, dtype=dtype, channels_last=train.channels_last,
                                compile=resolve_compile(train.compile, device))
        result = fit(model, optimizer, schedule, train_loader, settings, resume=resume,
                     save_checkpoint=checkpoint, log_metrics=run.log_metrics, measure_test_error=measure_test_error,
                     measure_validation_error=measure_validation_error, processes=processes)
        if not processes.is_main:
            return None

        save_trained(model_dir, model, mean_image, {
            "arch": variant, "num_classes": len(class_names), "class_names": class_names,
            "input_size": mean_image.shape[-1], "dataset": params.data.dataset, "seed": seed,
            "options": {"family": spec.family, "depth": spec.depth, "shortcut": spec.shortcut},
        })
        write_tsv(metrics_dir / "curve.tsv", result.curves.steps, STEP_COLUMNS)
        write_tsv(metrics_dir / "errors.tsv", result.curves.errors, ERROR_COLUMNS)
        summary = {
            "variant": variant, "seed": seed, "iterations": params.train.iterations,
            "final_loss": result.final_loss, "final_train_error": result.final_train_error,
            "final_test_error": result.final_test_error, "train_seconds": result.seconds,
            "images_per_second": result.images_per_second,
            "parameters": sum(p.numel() for p in model.parameters()), "mlflow_run_id": run.run_id,
        }
        write_json(metrics_dir / "train.json", summary)
        run.log_metrics({"train_seconds": result.seconds, "mean_images_per_second": result.images_per_second},
                        params.train.iterations)
    return summary
