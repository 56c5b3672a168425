"""The prepare and ffcv stages for CIFAR-10.

prepare: archive (local path or URL) -> data/prepared/cifar10/{train,val,test}.npz, meta.json, stats.json
ffcv:    data/prepared/cifar10/ -> data/ffcv/cifar10/{train,val,test}.beton

Each stage fills a hidden temporary directory and swaps it in whole at the end, so an interrupted
stage never leaves a directory that looks complete.
"""

from resnet_repro.config import Layout, Params
from resnet_repro.data import cifar10
from resnet_repro.data.ffcv_io import write_beton
from resnet_repro.data.prepared import read_split, write_json_atomic, write_split
from resnet_repro.data.stats import image_stats, save_stats
from resnet_repro.io import staged_directory

SPLITS = ("train", "val", "test")


def prepare_cifar10(params: Params, layout: Layout) -> dict:
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
        save_stats(directory / "stats.json", stats)
        meta = {"dataset": params.data.dataset, "class_names": arrays.class_names, "archive": str(archive),
                "sizes": {split: len(labels) for split, (_, labels) in splits.items()}}
        write_json_atomic(directory / "meta.json", meta)
    return meta


def write_ffcv(params: Params, layout: Layout) -> list[str]:
    written = []
    with staged_directory(layout.ffcv_dir) as directory:
        for split in SPLITS:
            if split == "val" and not (layout.prepared_dir / "val.npz").exists():
                continue
            images, labels = read_split(layout.prepared_dir, split)
            write_beton(directory / f"{split}.beton", images, labels, num_workers=params.loader.num_workers)
            written.append(split)
    return written
