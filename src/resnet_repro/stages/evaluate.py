"""The evaluate@<variant> stage: top-1/top-5 error of the final net on the test (and val) split, and
the std of its layer responses (Figure 7).

Evaluation runs in float32, so the figure equals what anyone gets from the registered model, whatever
precision it trained in. Every split is evaluated on one view of each image (CIFAR: the 32x32 image,
the paper's protocol; image folders: the centre crop). For image folders, evaluate.views may add the
paper's ImageNet testing on val/: `val_ten_crop_*` and `val_multi_scale_*` errors (evaluate.multiview).
"""

import contextlib
import json
from pathlib import Path

import torch

from resnet_repro.artifacts import TrainedModel, load_trained
from resnet_repro.config import Params
from resnet_repro.data.imagefolder import read_list
from resnet_repro.data.loading import make_split_loader, split_names
from resnet_repro.device import resolve_device
from resnet_repro.evaluate.accuracy import top_k_errors
from resnet_repro.evaluate.multiview import errors_of, multi_scale_scores, ten_crop_scores
from resnet_repro.evaluate.responses import LayerResponses
from resnet_repro.io import write_json
from resnet_repro.layout import EVALUATION, RESPONSES, TRAIN_SUMMARY, TRAINING_RUN, Layout
from resnet_repro.tracking.runs import TrainingRun, resolve_tracking_uri


def evaluate_variant(params: Params, layout: Layout, variant: str, seed: int) -> dict:
    device = resolve_device(params.train.device)
    trained = load_net(layout, variant, seed, device)
    metrics, responses = {}, None
    for split in ("test", "val"):
        if split not in split_names(layout):
            continue  # no validation split when data.val_size is 0; image folders have no test split
        loader = make_split_loader(params, layout, split, train=False, batch_size=params.evaluate.batch_size,
                                   mean_image=trained.mean_image, device=device)
        # Figure 7 is on the test set (an image folder's val/ where there is none), read in the errors' pass.
        recorder = LayerResponses(trained.module) if responses is None else contextlib.nullcontext()
        with recorder:
            errors = top_k_errors(trained.module, loader, device=device)
        metrics.update({f"{split}_top1_error": errors["top1_error"], f"{split}_top5_error": errors["top5_error"],
                        f"{split}_images": errors["num_images"]})
        if isinstance(recorder, LayerResponses):
            responses = recorder.stds()
    metrics.update(_paper_imagenet_testing(params, layout, trained, device))

    train_summary = json.loads((layout.metrics_dir(variant, seed) / TRAIN_SUMMARY).read_text())
    training_run = json.loads((layout.metrics_dir(variant, seed) / TRAINING_RUN).read_text())
    with TrainingRun.start(resolve_tracking_uri(layout.root, params.mlflow.tracking_uri), params.mlflow.experiment,
                           run_name=f"{variant} seed {seed}", params={}, tags={},
                           resume_run_id=training_run["mlflow_run_id"]) as run:
        run.log_metrics({k: v for k, v in metrics.items() if k.endswith("_error")}, train_summary["iterations"])
    write_json(layout.metrics_dir(variant, seed) / RESPONSES, responses)
    write_json(layout.metrics_dir(variant, seed) / EVALUATION, metrics)
    return metrics


def load_net(layout: Layout, variant: str, seed: int, device: torch.device) -> TrainedModel:
    """The trained net as saved (not the one a training left in memory), in channels_last."""
    trained = load_trained(layout.model_dir(variant, seed), device)
    trained.module.to(memory_format=torch.channels_last)
    return trained


def _paper_imagenet_testing(params: Params, layout: Layout, trained, device: torch.device) -> dict:
    """10-crop and multi-scale errors on an image folder's val/, for the views evaluate.views names."""
    views = params.evaluate.views[1:]  # center is the loader evaluation above
    if not views:
        return {}
    assert params.data.root is not None  # DataParams requires it for an image folder
    samples = read_list(layout.prepared_dir, "val", Path(params.data.root))
    common = {"mean_image": trained.mean_image, "device": device, "num_workers": params.loader.num_workers}
    metrics = {}
    for view in views:
        if view == "ten_crop":
            scores = ten_crop_scores(trained.module, samples, crop_size=params.augment.crop_size,
                                     resize=params.augment.eval_resize, batch_size=params.evaluate.batch_size, **common)
        else:
            scores = multi_scale_scores(trained.module, samples, scales=params.augment.test_scales, **common)
        errors = errors_of(scores)
        metrics.update({f"val_{view}_top1_error": errors["top1_error"], f"val_{view}_top5_error": errors["top5_error"]})
        print(f"val {view.replace('_', '-')}: top-1 error {errors['top1_error']:.4f}, "
              f"top-5 error {errors['top5_error']:.4f} ({errors['num_images']} images)", flush=True)
    return metrics
