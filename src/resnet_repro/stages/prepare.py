"""The prepare and ffcv stages, for CIFAR-10 and for image folders.

prepare: CIFAR-10 archive -> data/prepared/cifar10/{train,val,test}.npz, meta.json, stats.json
         image folder     -> data/prepared/imagefolder/{train,val}.tsv, meta.json, stats.json, skipped.json
ffcv:    data/prepared/<dataset>/ -> data/ffcv/<dataset>/<split>.beton

Each stage fills a hidden temporary directory and swaps it in whole at the end, so an interrupted
stage never leaves a directory that looks complete.
"""

import functools
import multiprocessing
from pathlib import Path

import numpy as np
from tqdm import tqdm

from resnet_repro.config import Params
from resnet_repro.data import cifar10, imagefolder
from resnet_repro.data.errors import DataError
from resnet_repro.data.ffcv_io import write_beton, write_folder_beton
from resnet_repro.data.loading import split_names
from resnet_repro.data.prepared import read_split, write_split
from resnet_repro.data.stats import StatsAccumulator, image_stats, save_stats
from resnet_repro.io import staged_directory, write_json
from resnet_repro.layout import META, SKIPPED, STATS, Layout, beton
from resnet_repro.tracking.runs import TrainingRun, resolve_tracking_uri

# Statistics of an image folder are taken on each image's centre view at the paper's test geometry
# (shorter side 256, centre 224): the per-pixel mean then has the shape of a training crop.
STATS_CROP, STATS_RESIZE = 224, 256
# Files decoded per round of the worker pool: bounds memory whatever the size of the folder.
_CHUNK = 256
_REPORT_EXAMPLES = 20


def prepare(params: Params, layout: Layout) -> dict:
    """The prepare stage for params.data.dataset."""
    if params.data.dataset == "cifar10":
        return prepare_cifar10(params, layout)
    return prepare_imagefolder(params, layout)


def prepare_cifar10(params: Params, layout: Layout) -> dict:
    assert params.data.archive is not None  # DataParams requires it for CIFAR-10
    archive = cifar10.fetch_archive(params.data.archive, layout.raw_dir)
    print(f"Reading {archive}", flush=True)
    arrays = cifar10.load_archive(archive)
    train_idx, val_idx = cifar10.split_indices(arrays.train_labels, subset=params.data.subset,
                                               val_size=params.data.val_size, seed=params.data.split_seed)
    splits = {
        "train": (arrays.train_images[train_idx], arrays.train_labels[train_idx]),
        "val": (arrays.train_images[val_idx], arrays.train_labels[val_idx]),
        "test": (arrays.test_images, arrays.test_labels),
    }
    if not len(val_idx):
        del splits["val"]
    with staged_directory(layout.prepared_dir) as directory:
        for split, (images, labels) in splits.items():
            write_split(directory, split, images, labels)
        # Statistics come from the training split only: nothing about val or test leaks into training.
        stats = image_stats(splits["train"][0])
        save_stats(directory / STATS, stats)
        meta = {"dataset": params.data.dataset, "class_names": arrays.class_names, "archive": str(archive),
                "sizes": {split: len(labels) for split, (_, labels) in splits.items()}}
        write_json(directory / META, meta)
    return meta


def prepare_imagefolder(params: Params, layout: Layout) -> dict:
    """Walk the folder, decode every file once (skipping and listing unreadable ones), stream the
    training statistics, and write the lists of readable images."""
    assert params.data.root is not None  # DataParams requires it for an image folder
    folder = imagefolder.scan(Path(params.data.root))
    candidates = dict(folder.samples)
    if params.data.subset is not None:
        candidates["train"] = _stratified_subset(candidates["train"], params.data.subset, params.data.split_seed)

    accumulator = StatsAccumulator()
    readable: dict[str, list[imagefolder.Sample]] = {}
    skipped = list(folder.strays)
    for split, samples in candidates.items():
        readable[split] = []
        for sample, view, reason in _decode_all(samples, split, params.loader.num_workers):
            if reason is not None:
                skipped.append(imagefolder.Skipped(sample.path, reason))
                continue
            readable[split].append(sample)
            if split == "train":
                accumulator.add(view[None])
    report = _skip_report(folder, candidates, skipped)
    _check_skips(report, params.data.max_bad_fraction, folder.root)
    _check_every_class_readable(readable["train"], folder)

    with staged_directory(layout.prepared_dir) as directory:
        for split, samples in readable.items():
            imagefolder.write_list(directory, split, folder.root, samples)
        save_stats(directory / STATS, accumulator.result())
        write_json(directory / SKIPPED, report)
        meta = {"dataset": params.data.dataset, "class_names": folder.class_names, "root": str(folder.root),
                "sizes": {split: len(samples) for split, samples in readable.items()},
                "skipped": report["count"]}
        write_json(directory / META, meta)
    _log_skip_report(params, layout, report)
    print(f"Prepared {meta['sizes']} images of {len(folder.class_names)} classes; skipped {report['count']} "
          f"file(s), listed in {layout.prepared_dir / SKIPPED}", flush=True)
    return meta


def _stratified_subset(samples: list[imagefolder.Sample], subset: int, seed: int) -> list[imagefolder.Sample]:
    labels = np.array([sample.label for sample in samples])
    if subset > len(samples):
        raise DataError(f"data.subset = {subset}: the train folder has only {len(samples)} files")
    keep, _ = cifar10.split_indices(labels, subset=subset, val_size=0, seed=seed)
    return [samples[index] for index in keep]


def _decode_all(samples: list[imagefolder.Sample], split: str, workers: int):
    """Yield (sample, view, reason) for every sample in order, decoding in `workers` processes."""
    inspect = functools.partial(imagefolder.inspect, crop_size=STATS_CROP, resize=STATS_RESIZE)
    # spawn, not fork: forking a process that already runs torch and numba threads can deadlock.
    with multiprocessing.get_context("spawn").Pool(workers) as pool, \
            tqdm(total=len(samples), unit="img", desc=f"prepare {split}", mininterval=1.0) as progress:
        for start in range(0, len(samples), _CHUNK):
            chunk = samples[start:start + _CHUNK]
            for sample, (view, reason) in zip(chunk, pool.map(inspect, chunk)):
                yield sample, view, reason
            progress.update(len(chunk))


def _skip_report(folder: imagefolder.ImageFolder, candidates: dict, skipped: list[imagefolder.Skipped]) -> dict:
    files = sum(len(samples) for samples in candidates.values()) + len(folder.strays)
    return {"count": len(skipped), "files": files, "fraction": len(skipped) / files if files else 0.0,
            "skipped": [{"path": str(s.path.relative_to(folder.root)), "reason": s.reason} for s in skipped]}


def _check_skips(report: dict, max_bad_fraction: float, root: Path) -> None:
    if report["fraction"] <= max_bad_fraction:
        return
    examples = "; ".join(f"{s['path']}: {s['reason']}" for s in report["skipped"][:_REPORT_EXAMPLES])
    raise DataError(f"{root}: {report['count']} of {report['files']} files ({report['fraction']:.1%}) are "
                    f"unreadable, more than data.max_bad_fraction = {max_bad_fraction}. First ones: {examples}")


def _check_every_class_readable(train: list[imagefolder.Sample], folder: imagefolder.ImageFolder) -> None:
    counts = np.bincount([sample.label for sample in train], minlength=len(folder.class_names))
    empty = [folder.class_names[label] for label in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"{folder.root / 'train'}: class folder(s) {empty} have no readable image")


def _log_skip_report(params: Params, layout: Layout, report: dict) -> None:
    """The skip report as an MLflow run of its own, so that it sits beside the trainings it fed."""
    tracking_uri = resolve_tracking_uri(layout.root, params.mlflow.tracking_uri)
    with TrainingRun.start(tracking_uri, params.mlflow.experiment, run_name=f"prepare {params.data.dataset}",
                           params={"data": params.data.model_dump()}, tags={"stage": "prepare"}) as run:
        run.log_metrics({"skipped_files": report["count"], "skipped_fraction": report["fraction"]}, 0)
        run.log_artifact(layout.prepared_dir / SKIPPED)


def write_ffcv(params: Params, layout: Layout) -> list[str]:
    written = split_names(layout)
    with staged_directory(layout.ffcv_dir) as directory:
        for split in written:
            beton_path = directory / beton(split)
            if params.data.dataset == "cifar10":
                images, labels = read_split(layout.prepared_dir, split)
                write_beton(beton_path, images, labels)
            else:
                assert params.data.root is not None  # DataParams requires it for an image folder
                samples = imagefolder.read_list(layout.prepared_dir, split, Path(params.data.root))
                write_folder_beton(beton_path, samples, max_resolution=params.data.max_resolution,
                                   jpeg_quality=params.data.jpeg_quality,
                                   compress_probability=params.data.compress_probability,
                                   num_workers=params.loader.num_workers)
    return written
