"""The train@<variant> stage: one net, one seed, the train section of params.yaml, one tracking run.

Run by torchrun (train.distributed), each process calls `train_variant`; rank 0 alone logs and writes.

Outputs (paths from layout.Layout): the resumable checkpoint, the final weights (safetensors), the
normalisation the net was trained with, a model.json that says how to rebuild it, train.json and the
curves that dvc.yaml declares as plots.
"""

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

import torch

from resnet_repro import models
from resnet_repro.artifacts import save_trained
from resnet_repro.config import ConfigError, Params, TrainParams
from resnet_repro.data.loading import Loader, augmentation_from, make_split_loader, split_names
from resnet_repro.data.stats import load_stats, mean_image_tensor
from resnet_repro.device import autocast_dtype, configure_determinism, resolve_device
from resnet_repro.evaluate.accuracy import top_k_errors
from resnet_repro.gitinfo import git_commit
from resnet_repro.io import write_json, write_tsv
from resnet_repro.layout import ERROR_CURVE, META, STATS, STEP_CURVE, TRAIN_SUMMARY, TRAINING_RUN, Layout
from resnet_repro.tracking.runs import TrainingRun, resolve_tracking_uri
from resnet_repro.train.distributed import Processes
from resnet_repro.train.loop import FitResult, Hooks, TrainingStep, fit
from resnet_repro.train.optimizer import optimizer_for
from resnet_repro.train.recipe import PaperSchedule
from resnet_repro.train.state import Curves, TrainingState, fingerprint, resume_or_start, seed_everything


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
    train = params.train
    ready = set_up(params, layout, variant, seed, processes, device)
    # Resumed only if the same configuration, data and code wrote it, and unfinished: a finished one
    # means DVC re-runs the stage because something changed (or was forced).
    checkpoint_path = layout.checkpoint_path(variant, seed)
    state = resume_or_start(checkpoint_path, fingerprint(train.model_dump(), params.augment.model_dump(), variant,
                                                         seed, ready.stats["channel_mean"].tolist()),
                            quiet=not processes.is_main)

    with start_run(params, layout, variant, seed, device, processes, resume_run_id=state.run_id) as run:
        state.run_id = run.run_id

        def save_checkpoint(state: TrainingState) -> None:  # called on rank 0 only
            assert isinstance(run, TrainingRun)
            run.flush()  # the metrics up to this iteration reach the store before the checkpoint that covers them
            state.save(checkpoint_path)

        result = fit(ready.step, PaperSchedule(train, models.spec(variant).depth), ready.loader, train, state=state,
                     hooks=Hooks(on_log=run.log_metrics, on_evaluate=ready.evaluate, on_checkpoint=save_checkpoint))
        if not processes.is_main:
            return None
        assert isinstance(run, TrainingRun)  # rank 0's
        save_net(layout, variant, seed, ready.model, ready.mean_image, ready.class_names, params)
        summary = write_metrics(layout, variant, seed, result, ready.model, train, run.run_id)
        run.log_metrics({"train_seconds": result.seconds, "mean_images_per_second": result.images_per_second},
                        train.iterations)
    return summary


@dataclass(frozen=True)
class SetUp:
    """What a training builds before its first step. `bench startup` times `set_up` in a fresh process."""

    stats: dict  # the training split's (data.stats)
    class_names: list[str]
    mean_image: torch.Tensor
    model: torch.nn.Module
    step: TrainingStep
    loader: Loader  # the training batches
    evaluate: Callable[[], dict[str, float]]  # the loop's on_evaluate


def set_up(params: Params, layout: Layout, variant: str, seed: int, processes: Processes,
           device: torch.device) -> SetUp:
    """The net of `variant` initialised from `seed`, its SGD step, the training loader and the evaluation,
    from the prepared data of `layout`; nothing is read from or written to a checkpoint or a run yet."""
    train = params.train
    configure_determinism(train.deterministic, train.cudnn_benchmark)
    stats = load_stats(layout.prepared_dir / STATS)
    class_names = json.loads((layout.prepared_dir / META).read_text())["class_names"]
    mean_image = mean_image_tensor(stats, size=augmentation_from(params, layout).crop_size).to(device)
    model = build_net(variant, len(class_names), seed, train, device)
    loader = training_loader(params, layout, mean_image, device, seed, processes)
    evaluate = evaluation(params, layout, model, mean_image, device, processes)
    return SetUp(stats, class_names, mean_image, model, TrainingStep(model, optimizer_for(model, train), train, device,
                                                                      processes), loader, evaluate)


def build_net(variant: str, num_classes: int, seed: int, train: TrainParams, device: torch.device) -> torch.nn.Module:
    """The net, initialised from `seed` (He et al.'s initialisation, in models), in train.channels_last."""
    seed_everything(seed)
    memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
    # Module.to takes memory_format beside a device; torch's overloads of it do not say so.
    return models.build(variant, num_classes=num_classes).to(device, memory_format=memory_format)  # type: ignore[call-overload]


def training_loader(params: Params, layout: Layout, mean_image: torch.Tensor, device: torch.device, seed: int,
                    processes: Processes) -> Loader:
    """The train split, augmented, in the order of `seed`; each process takes its share of every global
    batch of train.batch_size."""
    return make_split_loader(params, layout, "train", train=True, batch_size=processes.share_of(params.train.batch_size),
                             mean_image=mean_image, device=device, seed=seed, rank=processes.rank,
                             num_replicas=processes.world_size)


def evaluation(params: Params, layout: Layout, model: torch.nn.Module, mean_image: torch.Tensor,
               device: torch.device, processes: Processes) -> Callable[[], dict[str, float]]:
    """The loop's on_evaluate: `test_error`, which draws the curves, on the test split where there is
    one (CIFAR), else an image folder's val/; and, for a plateau schedule, `val_error` on the val split
    (a schedule never follows the test error). Rank 0 measures, once per split; the other processes get
    its val_error, since their schedules must take the same decisions."""
    splits = split_names(layout)
    curve_split = "test" if "test" in splits else "val"
    plateau = params.train.schedule == "plateau"
    if plateau and "val" not in splits:
        raise ConfigError("params.yaml: train.schedule = 'plateau' needs a validation split: set data.val_size > 0")
    dtype = autocast_dtype(params.train.precision, device)
    measured_splits = dict.fromkeys([curve_split, "val"] if plateau else [curve_split]) if processes.is_main else {}
    loaders = {split: make_split_loader(params, layout, split, train=False, batch_size=params.evaluate.batch_size,
                                        mean_image=mean_image, device=device) for split in measured_splits}

    def evaluate() -> dict[str, float]:
        errors = {split: top_k_errors(model, loader, device=device, dtype=dtype)["top1_error"]
                  for split, loader in loaders.items()}
        measured = {"test_error": errors[curve_split]} if processes.is_main else {}
        if plateau:
            measured["val_error"] = processes.from_main(errors.get("val", math.nan))
        return measured

    return evaluate


class _NotLogged:
    """The tracking run of the processes other than rank 0: they log nothing (and never checkpoint)."""

    run_id = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exception) -> None:
        return None

    def log_metrics(self, metrics: dict, step: int) -> None:
        pass


def start_run(params: Params, layout: Layout, variant: str, seed: int, device: torch.device,
              processes: Processes, resume_run_id: str | None) -> TrainingRun | _NotLogged:
    """Rank 0's MLflow run: `resume_run_id` (a resumed training's), else a new one. Leaving it ends the
    run as the training ended (tracking.runs)."""
    if not processes.is_main:
        return _NotLogged()
    spec = models.spec(variant)
    # The net is logged as params too (model.variant, model.family, model.depth): MLflow's compare view
    # plots params and metrics, not tags, and the study asks how test error goes with depth in each family.
    net = {"variant": variant, "family": spec.family, "depth": spec.depth}
    dtype = autocast_dtype(params.train.precision, device)
    tags = {**net, "shortcut": spec.shortcut, "seed": seed, "dataset": params.data.dataset,
            "git_commit": git_commit(layout.root), "data_version": layout.data_version(), "study": params.study.name,
            "device": device.type, "precision": str(dtype).removeprefix("torch.") if dtype else "float32",
            "processes": processes.world_size}
    return TrainingRun.start(resolve_tracking_uri(layout.root, params.mlflow.tracking_uri), params.mlflow.experiment,
                             run_name=f"{variant} seed {seed}", params={"model": net, **params.model_dump()},
                             tags=tags, resume_run_id=resume_run_id)


def save_net(layout: Layout, variant: str, seed: int, model: torch.nn.Module, mean_image: torch.Tensor,
             class_names: list[str], params: Params) -> None:
    """The trained-model directory (artifacts): weights, normalisation, and how to rebuild the net."""
    spec = models.spec(variant)
    save_trained(layout.model_dir(variant, seed), model, mean_image, {
        "arch": variant, "num_classes": len(class_names), "class_names": class_names,
        "input_size": mean_image.shape[-1], "dataset": params.data.dataset, "seed": seed,
        "options": {"family": spec.family, "depth": spec.depth, "shortcut": spec.shortcut},
    })


def write_metrics(layout: Layout, variant: str, seed: int, result: FitResult, model: torch.nn.Module,
                  train: TrainParams, run_id: str) -> dict:
    """The curves (DVC plots), train.json (a DVC metric: numbers only) and run.json (which net, which
    MLflow run: what the evaluate and register stages continue); returns both merged."""
    metrics_dir = layout.metrics_dir(variant, seed)
    write_tsv(metrics_dir / STEP_CURVE, result.curves.steps, Curves.STEP_COLUMNS)
    write_tsv(metrics_dir / ERROR_CURVE, result.curves.errors, Curves.ERROR_COLUMNS)
    summary = {
        "iterations": train.iterations, "final_loss": result.final_loss,
        "final_train_error": result.final_train_error, "final_test_error": result.final_test_error,
        "train_seconds": result.seconds, "images_per_second": result.images_per_second,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    identity = {"variant": variant, "seed": seed, "mlflow_run_id": run_id}
    write_json(metrics_dir / TRAINING_RUN, identity)
    write_json(metrics_dir / TRAIN_SUMMARY, summary)
    return {**identity, **summary}
